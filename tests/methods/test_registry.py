"""The registry is the one dispatch path: every method's step kind and update rule exist in
both backends' tables, what depends on the kind of method is derived from the record, and a
plain first-order method is one record plus one update rule per backend - nothing else."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lbbench.methods import REGISTRY, resolve_hparams
from lbbench.methods.registry import STEP_KINDS, BadHParam, HParam, MethodInfo, open_keys, register

from helpers import ROOT

torch = pytest.importorskip("torch")


def _defaults(name: str) -> dict:
    return resolve_hparams(name, {})


def test_every_method_has_both_backends_implementations_torch():
    from lbbench.backends.torch.optim import RULES
    from lbbench.backends.torch.steps import STEPS

    assert set(STEPS) == set(STEP_KINDS)
    for name, info in REGISTRY.items():
        rule, _ = info.update_rule(_defaults(name))
        assert rule in RULES, (name, rule)


TF_CHECK = r"""
import lbbench.backends.tf  # noqa: F401
from lbbench.backends.tf.optim import RULES
from lbbench.backends.tf.steps import STEPS
from lbbench.methods import REGISTRY, resolve_hparams
from lbbench.methods.registry import STEP_KINDS
assert set(STEPS) == set(STEP_KINDS), sorted(STEPS)
missing = [n for n, m in REGISTRY.items() if m.update_rule(resolve_hparams(n, {}))[0] not in RULES]
print("missing", missing)
"""


def test_every_method_has_both_backends_implementations_tf():
    p = subprocess.run([sys.executable, "-c", TF_CHECK], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "missing []"


def test_derived_facts_come_from_the_record():
    """fp16 loss scaling, benchmark periods and what a wrapper may wrap follow the step kind."""
    custom = {n for n, m in REGISTRY.items() if m.step_kind.custom_update}
    assert custom == {"kfac", "cblr", "extrap_sgd"}
    assert {n: m.step_kind.period_hparam for n, m in REGISTRY.items() if m.step_kind.period_hparam} == {
        "kfac": "factor_every",
        "cblr": "curvature_every",
    }
    plain = {n for n, m in REGISTRY.items() if m.is_plain_optimizer}
    assert plain == set(REGISTRY) - {"kfac", "cblr", "extrap_sgd", "gradientmix"}
    for base in ("cblr", "kfac", "extrap_sgd", "gradientmix"):  # not an update rule of their own
        with pytest.raises(BadHParam, match="standard step"):
            resolve_hparams("gradientmix", {"base": base})


def test_an_unknown_step_kind_is_refused_when_registered():
    with pytest.raises(ValueError, match="unknown step kind"):
        MethodInfo(name="x", doc="", hparams={}, opt_name="x", mllog_keys=open_keys("x"), step="nope")


@pytest.fixture
def plain_method():
    """A throwaway plain first-order method - sign descent, w <- w - lr sign(g) - added the way
    a contributor would: one registry record and one update rule in each backend's table."""
    from lbbench.backends.torch.optim import RULES, rule

    info = register(
        MethodInfo(
            name="signsgd_test",
            doc="sign descent",
            opt_name="signsgd_test",
            mllog_keys=open_keys("signsgd_test"),
            hparams={"exclude_bn_bias": HParam(True, bool, "no-op here")},
        )
    )

    class SignSGD(torch.optim.Optimizer):
        def __init__(self, groups, lr):
            super().__init__(groups, dict(lr=lr))

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    p.sub_(p.grad.sign(), alpha=group["lr"])

    rule("signsgd_test")(lambda groups, hp, lr: SignSGD(groups, lr))
    yield info
    del REGISTRY["signsgd_test"], RULES["signsgd_test"]


def test_a_plain_method_needs_one_record_and_one_rule(plain_method, tmp_path):
    from lbbench.backends.torch.model import build_model
    from lbbench.backends.torch.steps import Standard, build_method
    from lbbench.spec import DataSpec, LrSpec, RunSpec

    spec = RunSpec(
        suite="t",
        method="signsgd_test",
        label="signsgd_test",
        hparams=resolve_hparams("signsgd_test", {}),
        division="open",
        division_reason="test",
        framework="torch",
        model="resnet_tiny",
        data=DataSpec(
            kind="synthetic", path=None, image_size=8, classes=10, train_samples=64, eval_samples=8, augment="none"
        ),
        global_batch=8,
        np=1,
        local_batch=8,
        accum=1,
        bn_span=8,
        seed=0,
        lr=LrSpec(
            schedule="constant",
            peak_lr=0.1,
            warmup_epochs=0,
            warmup_start_lr=0,
            end_lr=0,
            poly_power=2,
            milestones=(),
            decay_factor=0.1,
            train_epochs=1,
        ),
        label_smoothing=0.0,
        target_top1=0.9,
        eval_every=1,
        max_epochs=1,
        stop_at_target=True,
        diag_every=0,
        eval_batch=8,
    ).with_id()
    torch.manual_seed(0)
    model = build_model("resnet_tiny", 10)
    method = build_method(spec, model)
    assert type(method) is Standard and type(method.optimizer).__name__ == "SignSGD"
    w0 = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(8, 3, 8, 8)).logsumexp(1).mean().backward()
    method.optimizer.step()
    moved = [float((p.detach() - w).abs().max()) for p, w in zip(model.parameters(), w0)]
    assert max(moved) == pytest.approx(0.1)  # |sign(g)| = 1 times lr


TF_PLAIN = r"""
import lbbench.backends.tf  # noqa: F401
import tensorflow as tf
from lbbench.backends.tf.model import build_model
from lbbench.backends.tf.optim import rule
from lbbench.backends.tf.steps import Standard, build_method
from lbbench.methods.registry import HParam, MethodInfo, open_keys, register
from lbbench.spec import DataSpec, LrSpec, RunSpec

register(MethodInfo(name="signsgd_test", doc="", opt_name="signsgd_test", mllog_keys=open_keys("signsgd_test"),
                    hparams={"exclude_bn_bias": HParam(True, bool, "")}))

@rule("signsgd_test")  # no state; the step's numbers: the LR only (the defaults)
def signsgd(o, v, g, excl, st, sc):
    v.assign_sub(sc["lr"] * tf.sign(g))

spec = RunSpec(suite="t", method="signsgd_test", label="s", hparams={"exclude_bn_bias": True}, division="open",
               division_reason="t", framework="tf", model="resnet_tiny",
               data=DataSpec(kind="synthetic", path=None, image_size=8, classes=10, train_samples=64, eval_samples=8,
                             augment="none"), global_batch=8, np=1, local_batch=8, accum=1, bn_span=8, seed=0,
               lr=LrSpec(schedule="constant", peak_lr=0.1, warmup_epochs=0, warmup_start_lr=0, end_lr=0, poly_power=2,
                         milestones=(), decay_factor=0.1, train_epochs=1),
               label_smoothing=0.0, target_top1=0.9, eval_every=1, max_epochs=1, stop_at_target=True, diag_every=0,
               eval_batch=8)
model = build_model("resnet_tiny", 10, 8)
method = build_method(spec, model)
assert type(method) is Standard
w0 = [tf.identity(v) for v in model.trainable_variables]
with tf.GradientTape() as tape:
    loss = tf.reduce_mean(tf.reduce_logsumexp(model(tf.random.normal([8, 8, 8, 3]), training=True), axis=1))
method.optimizer.step(tape.gradient(loss, model.trainable_variables))
print(max(float(tf.reduce_max(tf.abs(v - w))) for v, w in zip(model.trainable_variables, w0)))
"""


def test_a_plain_method_needs_one_record_and_one_rule_tf():
    p = subprocess.run([sys.executable, "-c", TF_PLAIN], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert float(p.stdout.strip().splitlines()[-1]) == pytest.approx(0.1)
