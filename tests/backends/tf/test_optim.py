"""The TensorFlow update rules against the same NumPy formulas as the PyTorch ones
(tests/reference_numpy.py, written from docs/methods.md), in float64, case for case
(tests/optim_cases.py): TF is held to the formulas, not only to PyTorch, which could share a bug."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lbbench.methods import resolve_hparams

from helpers import ROOT
from optim_cases import LRS, case, variant_ids
from reference_numpy import REFERENCES, cblr, kwargs_for

RUN = r"""
import json, sys
import numpy as np
import lbbench.backends.tf  # noqa: F401
import tensorflow as tf
from lbbench.backends.tf.optim import Optimizer
from lbbench.methods import resolve_hparams
from optim_cases import LRS, case, variant_ids

out = {}
for i, (method, variant) in enumerate(variant_ids()):
    params, grads = case()
    hp = resolve_hparams(method, variant)
    vs = [tf.Variable(w, dtype=tf.float64, name="bias" if excl else "kernel") for w, excl in params]
    opt = Optimizer(method, hp, vs, LRS[0])
    for lr, g in zip(LRS, grads):
        opt.lr = lr
        opt.step([tf.constant(gi, tf.float64) for gi in g])
    out[f"{method}-{i}"] = [v.numpy().tolist() for v in vs]
# CBLR with a fixed curvature estimate (running average of two refreshes, one all-zero tensor)
params, grads = case(1)
rng = np.random.default_rng(5)
h1 = [rng.normal(size=w.shape) * 2 for w, _ in params]
h2 = [rng.normal(size=w.shape) * 2 for w, _ in params]
h1[2] = h2[2] = np.zeros(params[2][0].shape)
hp = resolve_hparams("cblr", {"curvature_floor": 0.5, "curvature_ema": 0.25})
vs = [tf.Variable(w, dtype=tf.float64, name="bias" if excl else "kernel") for w, excl in params]
opt = Optimizer("cblr", hp, vs, LRS[0])
opt.set_curvature([tf.constant(h) for h in h1])
opt.set_curvature([tf.constant(h) for h in h2])
for lr, g in zip(LRS, grads):
    opt.lr = lr
    opt.step([tf.constant(gi, tf.float64) for gi in g])
out["cblr"] = [v.numpy().tolist() for v in vs]
out["cblr_h"] = [h.tolist() for h in h1 + h2]
# The compiled step (one tf.function over all variables) against the same rules run eagerly,
# in float32 where the graph could round differently: the same bits, for every variant (CBLR
# with a curvature estimate arriving after the first step, so its graph is traced anew).
same = {}
for i, (method, variant) in enumerate(variant_ids() + [("cblr", {"curvature_floor": 0.5})]):
    hp = resolve_hparams(method, variant)
    finals = []
    for compiled in (True, False):
        params, grads = case()
        vs = [tf.Variable(w, dtype=tf.float32, name="bias" if excl else "kernel") for w, excl in params]
        opt = Optimizer(method, hp, vs, LRS[0], compiled=compiled)
        for k, (lr, g) in enumerate(zip(LRS, grads)):
            if method == "cblr" and k == 1:
                opt.set_curvature([tf.constant(h1[j], tf.float32) for j in range(len(vs))])
            opt.lr = lr
            opt.step([tf.constant(gi, tf.float32) for gi in g])
        finals.append(b"".join(v.numpy().tobytes() for v in vs) + b"".join(
            x.numpy().tobytes() for st in opt.state for x in st.values()))
    same[f"{method}-{i}"] = finals[0] == finals[1]
out["compiled_equals_eager"] = same
json.dump(out, sys.stdout)
"""


@pytest.fixture(scope="module")
def tf_results():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    p = subprocess.run([sys.executable, "-c", RUN], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("index", range(len(variant_ids())), ids=[f"{m}-{i}" for i, (m, _) in enumerate(variant_ids())])
def test_tf_rule_matches_numpy_formula(index, tf_results):
    method, variant = variant_ids()[index]
    hp = resolve_hparams(method, variant)
    params, grads = case()
    ref, state = REFERENCES[method][0], {}
    for lr, g in zip(LRS, grads):
        ref(params, g, lr, state, **kwargs_for(method, hp))
    for got, (w, _) in zip(tf_results[f"{method}-{index}"], params):
        np.testing.assert_allclose(np.array(got), w, rtol=1e-10, atol=1e-12)


def test_the_compiled_step_equals_the_eager_rules_bit_for_bit(tf_results):
    same = tf_results["compiled_equals_eager"]
    assert len(same) == len(variant_ids()) + 1 and all(same.values()), same


def test_tf_cblr_matches_numpy_formula(tf_results):
    params, grads = case(1)
    h = [np.array(x) for x in tf_results["cblr_h"]]
    n = len(params)
    expected_h = [0.75 * a + 0.25 * b for a, b in zip(h[:n], h[n:])]
    state = {}
    for lr, g in zip(LRS, grads):
        cblr(params, g, lr, state, expected_h, mu=0.9, wd=1e-4, floor=0.5)
    for got, (w, _) in zip(tf_results["cblr"], params):
        np.testing.assert_allclose(np.array(got), w, rtol=1e-10, atol=1e-12)
