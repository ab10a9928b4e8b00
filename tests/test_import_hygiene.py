"""The suite/plan/report core never imports a framework (ARCHITECTURE.md example 1)."""
import subprocess
import sys

CODE = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'tensorflow', 'horovod', 'nvidia', 'keras', 'tf_keras'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import lbbench.cli, lbbench.suite, lbbench.spec, lbbench.store, lbbench.runner, lbbench.launch
import lbbench.report.tables, lbbench.methods, lbbench.schedules, lbbench.mllog, lbbench.sampling
import lbbench.driver, lbbench.worker_common, lbbench.checkpoint_files, lbbench.health, lbbench.roofline
import lbbench.throughput, lbbench.export_mlperf, lbbench.launch.slurm, lbbench.report.build
from lbbench.suite import load_suite, expand
runs, _ = expand(load_suite('suites/imagenet.yaml'))
assert runs
print('ok', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'horovod')))
"""


def test_core_imports_no_framework():
    from conftest import ROOT
    p = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "ok []"


WORKER = r"""
import sys, runpy
import lbbench.backends.{fw}.train, lbbench.backends.{fw}.loop, lbbench.backends.{fw}.data, lbbench.driver
import horovod.{hvd}
other = [m for m in sys.modules if m.split('.')[0] == '{other}']
print('other', other[:3])
"""


def test_a_worker_imports_only_its_own_framework():
    """No TensorFlow in a process that imports horovod.torch (PLATFORM.md), and no torch in the
    TensorFlow worker."""
    from conftest import ROOT
    for fw, hvd, other in (("torch", "torch", "tensorflow"), ("tf", "tensorflow", "torch")):
        p = subprocess.run([sys.executable, "-c", WORKER.format(fw=fw, hvd=hvd, other=other)], cwd=ROOT,
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-2000:]
        assert p.stdout.strip().splitlines()[-1] == "other []", (fw, p.stdout)
