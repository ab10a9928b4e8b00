"""`lbbench bench`: benchmarks whose results go to JSON under results/bench/, never into tests.

core.py has the framework-free parts (the benchmark's RunSpec, the timed loop, statistics);
each backend's bench.py runs them on its own model and loop.
"""
