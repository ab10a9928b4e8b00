"""Independent NumPy implementations of docs/methods.md's formulas, used only by the tests.

Written from the formulas on that page (section numbers below), not from lbbench's code: one
function per method, state in plain dicts, float64 throughout. ``params`` is a list of
(array, excluded) pairs, updated in place; ``grads`` the global-batch gradients of one step.
Both backends' update rules are held to these (tests/methods/test_exact_formulas.py,
tests/backends/tf/test_optim.py).
"""

from __future__ import annotations

import numpy as np


def _norm(x: np.ndarray) -> float:
    return float(np.sqrt(np.sum(np.asarray(x, dtype=np.float64) ** 2)))


def _plain_momentum(
    state: dict, key, w: np.ndarray, g: np.ndarray, lr: float, mu: float, nesterov: bool = False
) -> None:
    """Section 0: an excluded tensor of a layer-wise method: v <- mu v + lr g; w <- w - v
    (Nesterov, as the MLPerf LARS code applies it to every tensor: w <- w - (mu v + lr g))."""
    v = mu * state.get(key, 0.0) + lr * g
    state[key] = v
    w -= mu * v + lr * g if nesterov else v


def sgd(params, grads, lr, state, mu=0.9, wd=1e-4, nesterov=False, inside=False):
    """Section 1: u = g + beta w; LR outside: b <- mu b + u, w <- w - lr (u + mu b | b);
    LR inside: v <- mu v + lr u, w <- w - (mu v + lr u | v)."""
    for i, ((w, excl), g) in enumerate(zip(params, grads)):
        u = g + (0.0 if excl else wd) * w
        if inside:
            v = state[i] = mu * state.get(i, 0.0) + lr * u
            w -= mu * v + lr * u if nesterov else v
        else:
            b = state[i] = mu * state.get(i, 0.0) + u
            w -= lr * (u + mu * b if nesterov else b)


def lars(params, grads, lr, state, mu=0.9, wd=1e-4, eta=0.001, eps=0.0, nesterov=False):
    """Section 2: lambda = eta ||w|| / (||g|| + beta ||w|| + eps), 1 if a norm is 0;
    v <- mu v + lr lambda (g + beta w); w <- w - v (Nesterov: w <- w - (mu v + lr lambda (g + beta w)))."""
    for i, ((w, excl), g) in enumerate(zip(params, grads)):
        if excl:
            _plain_momentum(state, i, w, g, lr, mu, nesterov)
            continue
        wn, gn = _norm(w), _norm(g)
        lam = eta * wn / (gn + wd * wn + eps) if wn > 0 and gn > 0 else 1.0
        step = lr * lam * (g + wd * w)
        v = state[i] = mu * state.get(i, 0.0) + step
        w -= mu * v + step if nesterov else v


def lamb(params, grads, lr, state, b1=0.9, b2=0.999, eps=1e-6, wd=0.01, clamp=0.0, bias_correction=True):
    """Section 3: Adam moments with bias correction, r = m^ / (sqrt(v^) + eps), u = r + beta w,
    w <- w - lr phi(||w||) / ||u|| u (ratio 1 if a norm is 0); excluded: beta 0, ratio 1."""
    t = state["t"] = state.get("t", 0) + 1
    for i, ((w, excl), g) in enumerate(zip(params, grads)):
        m = state[("m", i)] = b1 * state.get(("m", i), 0.0) + (1 - b1) * g
        v = state[("v", i)] = b2 * state.get(("v", i), 0.0) + (1 - b2) * g * g
        if bias_correction:
            m, v = m / (1 - b1**t), v / (1 - b2**t)
        r = m / (np.sqrt(v) + eps)
        if excl:
            w -= lr * r
            continue
        u = r + wd * w
        phi = min(_norm(w), clamp) if clamp > 0 else _norm(w)
        un = _norm(u)
        w -= lr * (phi / un if phi > 0 and un > 0 else 1.0) * u


def mclr(params, grads, lr, state, mu=0.9, wd=1e-4):
    """Section 6: eta_l = lr |median|w| / (median|g| + beta median|w|)| (1 if a median is 0),
    momentum with the LR inside; excluded tensors plain momentum SGD."""
    for i, ((w, excl), g) in enumerate(zip(params, grads)):
        if excl:
            _plain_momentum(state, i, w, g, lr, mu)
            continue
        mw, mg = float(np.median(np.abs(w))), float(np.median(np.abs(g)))
        ratio = abs(mw / (mg + wd * mw)) if mw > 0 and mg > 0 else 1.0
        v = state[i] = mu * state.get(i, 0.0) + lr * ratio * (g + wd * w)
        w -= v


def percentdelta(params, grads, lr, state, mu=0.0, wd=0.0):
    """Section 6: eta_l = lr / (mean_i |g_i / w'_i| + 1e-5), w'_i = w_i + sign(w_i) 1e-6 with
    sign(0) = +; v <- mu v + eta_l (g + beta w); w <- w - v. Excluded tensors: plain momentum SGD
    (section 0) - a zero-initialised BN shift must move at the LR, not at lr / 1e6."""
    for i, ((w, excl), g) in enumerate(zip(params, grads)):
        if excl:
            _plain_momentum(state, i, w, g, lr, mu)
            continue
        w_shifted = w + np.where(w >= 0, 1e-6, -1e-6)
        eta = lr / (np.mean(np.abs(g / w_shifted)) + 1e-5)
        v = state[i] = mu * state.get(i, 0.0) + eta * (g + wd * w)
        w -= v


def adam(params, grads, lr, state, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, decoupled=False):
    """Section 8, Adam (Kingma & Ba, Algorithm 1, with eps outside the bias-corrected root, as
    torch.optim documents): m^ = m / (1 - b1^t), v^ = v / (1 - b2^t), w <- w - lr m^ / (sqrt(v^) + eps).
    Adam: L2 added to g; AdamW (Loshchilov & Hutter): w <- w (1 - lr beta) first."""
    t = state["t"] = state.get("t", 0) + 1
    for i, ((w, excl), g) in enumerate(zip(params, grads)):
        beta = 0.0 if excl else wd
        if decoupled:
            w *= 1 - lr * beta
        else:
            g = g + beta * w
        m = state[("m", i)] = b1 * state.get(("m", i), 0.0) + (1 - b1) * g
        v = state[("v", i)] = b2 * state.get(("v", i), 0.0) + (1 - b2) * g * g
        w -= lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)


def adagrad(params, grads, lr, state, eps=1e-10, init=0.0, wd=0.0):
    """Section 8, AdaGrad (Duchi et al.): s <- s + g^2 (s starts at init), w <- w - lr g / (sqrt(s) + eps)."""
    for i, ((w, excl), g) in enumerate(zip(params, grads)):
        g = g + (0.0 if excl else wd) * w
        s = state[i] = state.get(i, init) + g * g
        w -= lr * g / (np.sqrt(s) + eps)


def rmsprop(params, grads, lr, state, alpha=0.99, eps=1e-8, mu=0.0, wd=0.0):
    """Section 8, RMSprop (Hinton's lecture 6e, with optional momentum on the scaled step):
    s <- alpha s + (1 - alpha) g^2; d = g / (sqrt(s) + eps); b <- mu b + d; w <- w - lr (b | d)."""
    for i, ((w, excl), g) in enumerate(zip(params, grads)):
        g = g + (0.0 if excl else wd) * w
        s = state[("s", i)] = alpha * state.get(("s", i), 0.0) + (1 - alpha) * g * g
        d = g / (np.sqrt(s) + eps)
        if mu:
            d = state[("b", i)] = mu * state.get(("b", i), 0.0) + d
        w -= lr * d


def cblr(params, grads, lr, state, hdiag, mu=0.9, wd=1e-4, floor=0.1):
    """Section 6: eta_i = lr R_i, R_i = (1 + g_i^2)^(3/2) / max(|H_ii|, floor x mean_j |H_jj|)
    (the floor relative to the tensor's mean curvature); a tensor whose curvature estimate is all
    zero takes plain momentum SGD, as excluded tensors do; v <- mu v + eta (g + beta w); w <- w - v."""
    for i, ((w, excl), g) in enumerate(zip(params, grads)):
        h = np.abs(hdiag[i])
        if excl or h.mean() == 0:
            _plain_momentum(state, i, w, g, lr, mu)
            continue
        radius = (1 + g**2) ** 1.5 / np.maximum(h, floor * h.mean())
        v = state[i] = mu * state.get(i, 0.0) + lr * radius * (g + wd * w)
        w -= v


# method -> (reference, {reference kwarg: hparam name}) for the registry-wide tests
REFERENCES = {
    "sgd": (sgd, dict(mu="momentum", wd="weight_decay", nesterov="nesterov", inside=("lr_convention", "inside"))),
    "lars": (lars, dict(mu="momentum", wd="weight_decay", eta="eta", eps="eps", nesterov="nesterov")),
    "lamb": (
        lamb,
        dict(b1="beta1", b2="beta2", eps="eps", wd="weight_decay", clamp="clamp", bias_correction="bias_correction"),
    ),
    "mclr": (mclr, dict(mu="momentum", wd="weight_decay")),
    "percentdelta": (percentdelta, dict(mu="momentum", wd="weight_decay")),
    "adam": (adam, dict(b1="beta1", b2="beta2", eps="eps", wd="weight_decay")),
    "adamw": (
        lambda *a, **k: adam(*a, decoupled=True, **k),
        dict(b1="beta1", b2="beta2", eps="eps", wd="weight_decay"),
    ),
    "adagrad": (adagrad, dict(eps="eps", init="initial_accumulator", wd="weight_decay")),
    "rmsprop": (rmsprop, dict(alpha="alpha", eps="eps", mu="momentum", wd="weight_decay")),
}


def kwargs_for(method: str, hp: dict) -> dict:
    out = {}
    for k, name in REFERENCES[method][1].items():
        out[k] = (hp[name[0]] == name[1]) if isinstance(name, tuple) else hp[name]
    return out
