"""The layout's promises, checked: the core never imports a framework, the worker tier never
imports the suite front end, a worker imports only its own framework, and both backends have
the same rooms (docs/architecture.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import ROOT

BLOCK = r"""
import sys, pkgutil, importlib
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'tensorflow', 'horovod', 'nvidia', 'keras', 'tf_keras'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import lbbench
core = [m.name for m in pkgutil.walk_packages(lbbench.__path__, 'lbbench.')
        if not m.name.startswith('lbbench.backends.')]
for name in core:
    importlib.import_module(name)
from lbbench.suite import expand, load_suite
runs, _ = expand(load_suite('suites/imagenet.yaml'))
assert runs
print('ok', len(core), sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'horovod')))
"""


def test_core_imports_no_framework():
    """Every module outside lbbench/backends imports with torch, TensorFlow, Horovod and DALI blocked."""
    p = subprocess.run([sys.executable, "-c", BLOCK], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    word, count, loaded = p.stdout.split(maxsplit=2)
    assert word == "ok" and int(count) > 30 and loaded.strip() == "[]", p.stdout


WORKER_TIER = r"""
import sys, pkgutil, importlib
import lbbench.worker
for m in pkgutil.walk_packages(lbbench.worker.__path__, 'lbbench.worker.'):
    importlib.import_module(m.name)
print(sorted(m for m in sys.modules if m.startswith('lbbench.suite')))
"""


def test_the_worker_tier_never_imports_the_suite_front_end():
    p = subprocess.run([sys.executable, "-c", WORKER_TIER], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]", p.stdout


WORKER = r"""
import sys
import lbbench.backends.{fw}.train, lbbench.backends.{fw}.loop, lbbench.backends.{fw}.steps, lbbench.backends.{fw}.data
import lbbench.worker.driver
import horovod.{hvd}
print('other', [m for m in sys.modules if m.split('.')[0] == '{other}'][:3])
print('suite', [m for m in sys.modules if m.startswith('lbbench.suite')])
"""


@pytest.mark.slow
def test_a_worker_imports_only_its_own_framework():
    """No TensorFlow in a process that imports horovod.torch (the two would clash), no torch in
    the TensorFlow worker, and no suite front end in either."""
    for fw, hvd, other in (("torch", "torch", "tensorflow"), ("tf", "tensorflow", "torch")):
        p = subprocess.run(
            [sys.executable, "-c", WORKER.format(fw=fw, hvd=hvd, other=other)], cwd=ROOT, capture_output=True, text=True
        )
        assert p.returncode == 0, p.stderr[-2000:]
        assert p.stdout.strip().splitlines()[-2:] == ["other []", "suite []"], (fw, p.stdout)


def test_both_backends_have_the_same_rooms():
    def rooms(fw: str) -> set[str]:
        base = ROOT / "lbbench" / "backends" / fw
        return {str(p.relative_to(base)) for p in base.rglob("*.py")}

    assert rooms("torch") == rooms("tf")
    assert {
        "model.py",
        "data.py",
        "loop.py",
        "steps.py",
        "optim/__init__.py",
        "kfac.py",
        "perf.py",
        "diagnostics.py",
        "checkpoint.py",
        "bench.py",
        "flops.py",
        "train.py",
    } <= rooms("torch")
