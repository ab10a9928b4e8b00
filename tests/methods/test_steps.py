"""The step strategies through the real PyTorch Loop (a Horovod world of one, float64): every
method's first update with its documented defaults differs from plain SGD's (a method silently
turned into SGD fails here); EXTRAP-SGD's update is the extragradient formula derived by hand;
GradientMix's loss weights give the Dirichlet combination of the micro-batch gradients."""

from __future__ import annotations

import numpy as np
import pytest

from lbbench.methods import REGISTRY, resolve_hparams
from lbbench.methods.gradientmix import mix_weights
from lbbench.spec import DataSpec, LrSpec, PerfSpec, RunSpec
from lbbench.store.metrics import MetricsWriter

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")
hvd = pytest.importorskip("horovod.torch")


def _spec(method: str, hparams: dict, accum: int = 2, model: str = "resnet_tiny", lr: float = 0.05) -> RunSpec:
    return RunSpec(
        suite="t",
        method=method,
        label=method,
        hparams=resolve_hparams(method, hparams),
        division="open",
        division_reason="test",
        framework="torch",
        model=model,
        data=DataSpec(
            kind="synthetic", path=None, image_size=8, classes=10, train_samples=1024, eval_samples=16, augment="none"
        ),
        global_batch=16 * accum,
        np=1,
        local_batch=16,
        accum=accum,
        bn_span=16,
        seed=3,
        lr=LrSpec(
            schedule="constant",
            peak_lr=lr,
            warmup_epochs=0,
            warmup_start_lr=0,
            end_lr=0,
            poly_power=2,
            milestones=(),
            decay_factor=0.1,
            train_epochs=1,
        ),
        label_smoothing=0.0,
        target_top1=0.99,
        eval_every=1,
        max_epochs=1,
        stop_at_target=False,
        diag_every=0,
        eval_batch=16,
        perf=PerfSpec(precision="float64"),
    ).with_id()


def _batches(n: int, seed: int = 0, features: tuple[int, ...] = (3, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(16, *features, generator=g, dtype=torch.float64), torch.randint(0, 10, (16,), generator=g))
        for _ in range(n)
    ]


def _run(spec: RunSpec, model, batches, steps: int = 1):
    from lbbench.backends.torch.loop import Loop
    from lbbench.backends.torch.steps import build_method

    hvd.init()
    method = build_method(spec, model, 0, 1)
    loop = Loop(spec, model, method.optimizer, iter(batches), hvd, 0, MetricsWriter(None))
    loop.start_epoch(1, spec.global_batch, spec.accum)
    for t in range(1, steps + 1):
        for group in method.optimizer.param_groups:
            group["lr"] = spec.lr.peak_lr
        method.step(loop, t, 1)
    return method


def _first_update(method: str) -> dict[str, torch.Tensor]:
    from lbbench.backends.torch.model import build_model

    torch.manual_seed(0)
    model = build_model("resnet_tiny", 10).double()
    with torch.no_grad():  # non-zero residual gammas, so every layer has a gradient at step 1
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(1.0)
    w0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    hp = {"base": "sgd"} if method == "gradientmix" else {}
    _run(_spec(method, hp), model, _batches(2))
    return {k: v.detach() - w0[k] for k, v in model.named_parameters()}


@pytest.mark.parametrize("method", sorted(set(REGISTRY) - {"sgd"}))
def test_every_method_does_something_of_its_own(method):
    """With its documented defaults, each method's first update on a real network differs from
    plain momentum SGD's at the same LR by more than rounding."""
    sgd, mine = _first_update("sgd"), _first_update(method)
    diff = max(float((mine[k] - sgd[k]).abs().max() / (sgd[k].abs().max() + 1e-12)) for k in sgd)
    assert diff > 1e-3, f"{method}'s first update is momentum SGD's (max relative difference {diff:.1e})"


def test_extrap_sgd_is_the_extragradient_update_derived_by_hand():
    """Two steps on a linear softmax model (no BN): per virtual worker k, w~ = w - gx (mu u + g_k),
    h_k = grad at w~ on the same micro-batch; h = mean h_k; u <- mu u + (h + beta w);
    w <- w - lr (mu u + h + beta w). The second step has u != 0, so a missing mu u term or a sign
    error shows."""
    lr, mu, beta, scale = 0.1, 0.9, 1e-2, 0.7
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 10)).double()
    batches = _batches(4, features=(3, 2, 2))
    W, b = (p.detach().numpy().copy() for p in model.parameters())
    spec = _spec("extrap_sgd", {"momentum": mu, "weight_decay": beta, "extrap_scale": scale}, model="linear", lr=lr)
    _run(spec, model, batches, steps=2)

    def grad(W, b, x, y):  # mean softmax cross entropy of a linear model, by hand
        X = x.reshape(len(x), -1).numpy()
        z = X @ W.T + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        d = (p - np.eye(10)[y.numpy()]) / len(X)
        return d.T @ X, d.sum(0)

    u = [np.zeros_like(W), np.zeros_like(b)]
    for step in range(2):
        hs = []
        for x, y in batches[2 * step : 2 * step + 2]:
            gW, gb = grad(W, b, x, y)
            hs.append(grad(W - scale * lr * (mu * u[0] + gW), b - scale * lr * (mu * u[1] + gb), x, y))
        h = [np.mean([a[i] for a in hs], axis=0) for i in range(2)]
        d = [h[0] + beta * W, h[1]]  # weight decay on the weight, not on the bias (exclusions)
        u = [mu * u[i] + d[i] for i in range(2)]
        W, b = W - lr * (mu * u[0] + d[0]), b - lr * (mu * u[1] + d[1])
    got = [p.detach().numpy() for p in model.parameters()]
    np.testing.assert_allclose(got[0], W, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(got[1], b, rtol=1e-10, atol=1e-13)


def test_gradientmix_weights_the_micro_batch_gradients_by_dirichlet_draws():
    """Through the loss-scaling path (micro-batch k's loss x K c_k, Horovod's average): plain SGD
    with LR 1 and no momentum moves w by exactly -sum_k c_k g_k."""
    K = 3
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 10)).double()
    w0 = [p.detach().clone() for p in model.parameters()]
    batches = _batches(K, features=(3, 2, 2))
    hp = {"base": "sgd", "alpha": 0.7, "base_hparams": {"momentum": 0.0, "weight_decay": 0.0}}
    spec = _spec("gradientmix", hp, accum=K, model="linear", lr=1.0)
    _run(spec, model, batches)
    c = mix_weights(spec.seed, 1, K, 0.7)
    expected = [torch.zeros_like(w) for w in w0]
    for ck, (x, y) in zip(c, batches):
        ref = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 10)).double()
        with torch.no_grad():
            for p, w in zip(ref.parameters(), w0):
                p.copy_(w)
        torch.nn.functional.cross_entropy(ref(x), y).backward()
        for e, p in zip(expected, ref.parameters()):
            e -= ck * p.grad
    for p, w, e in zip(model.parameters(), w0, expected):
        torch.testing.assert_close(p.detach() - w, e, rtol=1e-10, atol=1e-13)
    assert not np.allclose(c, 1 / K)  # the draw is not the plain average
