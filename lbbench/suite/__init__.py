"""The YAML front end: suite files -> validated ``Suite`` -> [``RunSpec``] (framework-free).

    yamlpos.py   YAML loading that keeps line numbers (errors name file:line:field)
    config.py    the typed suite schema (pydantic; unknown keys are errors)
    expand.py    validation across fields and expansion of the matrix into RunSpecs
    recipes.py   per-batch recipes (MLPerf LARS RCPs, SP-NGD)

Nothing under ``lbbench/worker`` imports this package: a worker receives a resolved RunSpec.
"""

from lbbench.suite.expand import Suite, expand, load_suite
from lbbench.suite.yamlpos import SuiteError

__all__ = ["Suite", "SuiteError", "expand", "load_suite"]
