"""Independent NumPy implementations of the METHODS.md formulas, used only by the tests.

Written from the formulas, not from lbbench's code: one function per method, state in plain
dicts, float64 throughout. ``params`` is a list of (array, excluded) pairs, updated in place.
"""
from __future__ import annotations

import numpy as np


def _norm(x):
    return float(np.sqrt(np.sum(x.astype(np.float64) ** 2)))


def sgd(params, grads, lr, state, mu=0.9, wd=1e-4, nesterov=False, inside=False):
    for i, ((w, excl), g) in enumerate(zip(params, grads)):
        u = g + (0.0 if excl else wd) * w
        b = state.get(i, np.zeros_like(w))
        if inside:
            b = mu * b + lr * u
            w -= (mu * b + lr * u) if nesterov else b
        else:
            b = mu * b + u
            w -= lr * ((u + mu * b) if nesterov else b)
        state[i] = b


def lars(params, grads, lr, state, mu=0.9, wd=1e-4, eta=0.001, eps=0.0, nesterov=False):
    for i, ((w, excl), g) in enumerate(zip(params, grads)):
        if excl:
            step = lr * g
        else:
            wn, gn = _norm(w), _norm(g)
            trust = eta * wn / (gn + wd * wn + eps) if wn > 0 and gn > 0 else 1.0
            step = lr * trust * (g + wd * w)
        v = mu * state.get(i, np.zeros_like(w)) + step
        w -= (mu * v + step) if nesterov else v
        state[i] = v


def lamb(params, grads, lr, state, b1=0.9, b2=0.999, eps=1e-6, wd=0.01, clamp=0.0, bias_correction=True):
    t = state["t"] = state.get("t", 0) + 1
    for i, ((w, excl), g) in enumerate(zip(params, grads)):
        m = b1 * state.get(("m", i), 0) + (1 - b1) * g
        v = b2 * state.get(("v", i), 0) + (1 - b2) * g * g
        state[("m", i)], state[("v", i)] = m, v
        mh, vh = (m / (1 - b1 ** t), v / (1 - b2 ** t)) if bias_correction else (m, v)
        r = mh / (np.sqrt(vh) + eps)
        if excl:
            w -= lr * r
            continue
        u = r + wd * w
        wn = _norm(w) if clamp <= 0 else min(_norm(w), clamp)
        un = _norm(u)
        ratio = wn / un if wn > 0 and un > 0 else 1.0
        w -= lr * ratio * u


def mclr(params, grads, lr, state, mu=0.9, wd=1e-4):
    for i, ((w, excl), g) in enumerate(zip(params, grads)):
        if excl:
            step = lr * g
        else:
            mw, mg = float(np.median(np.abs(w))), float(np.median(np.abs(g)))
            ratio = abs(mw / (mg + wd * mw)) if mw > 0 and mg > 0 else 1.0
            step = lr * ratio * (g + wd * w)
        v = mu * state.get(i, np.zeros_like(w)) + step
        w -= v
        state[i] = v


def percentdelta(params, grads, lr, state, mu=0.0, wd=0.0):
    for i, ((w, excl), g) in enumerate(zip(params, grads)):
        shifted = w + np.where(w >= 0, 1e-6, -1e-6)
        eta = lr / (np.mean(np.abs(g / shifted)) + 1e-5)
        v = mu * state.get(i, np.zeros_like(w)) + eta * (g + (0.0 if excl else wd) * w)
        w -= v
        state[i] = v


def adam(params, grads, lr, state, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, decoupled=False):
    t = state["t"] = state.get("t", 0) + 1
    for i, ((w, excl), g) in enumerate(zip(params, grads)):
        d = 0.0 if excl else wd
        if decoupled:
            w *= 1 - lr * d
        else:
            g = g + d * w
        m = state[("m", i)] = b1 * state.get(("m", i), 0) + (1 - b1) * g
        v = state[("v", i)] = b2 * state.get(("v", i), 0) + (1 - b2) * g * g
        w -= lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)


def adagrad(params, grads, lr, state, eps=1e-10, init=0.0, wd=0.0):
    for i, ((w, excl), g) in enumerate(zip(params, grads)):
        g = g + (0.0 if excl else wd) * w
        s = state[i] = state.get(i, init) + g * g
        w -= lr * g / (np.sqrt(s) + eps)


def rmsprop(params, grads, lr, state, alpha=0.99, eps=1e-8, mu=0.0, wd=0.0):
    for i, ((w, excl), g) in enumerate(zip(params, grads)):
        g = g + (0.0 if excl else wd) * w
        s = state[("s", i)] = alpha * state.get(("s", i), 0) + (1 - alpha) * g * g
        step = g / (np.sqrt(s) + eps)
        if mu:
            step = state[("b", i)] = mu * state.get(("b", i), 0) + step
        w -= lr * step


def cblr(params, grads, lr, state, hdiag, mu=0.9, wd=1e-4, floor=1.0):
    for i, ((w, excl), g) in enumerate(zip(params, grads)):
        if excl:
            step = lr * g
        else:
            radius = np.abs((1 + g ** 2) ** 1.5 / np.maximum(np.abs(hdiag[i]), floor))
            step = lr * radius * (g + wd * w)
        v = mu * state.get(i, np.zeros_like(w)) + step
        w -= v
        state[i] = v


# method -> (reference, {reference kwarg: hparam name}) for the registry-wide test
REFERENCES = {
    "sgd": (sgd, dict(mu="momentum", wd="weight_decay", nesterov="nesterov", inside=("lr_convention", "inside"))),
    "lars": (lars, dict(mu="momentum", wd="weight_decay", eta="eta", eps="eps", nesterov="nesterov")),
    "lamb": (lamb, dict(b1="beta1", b2="beta2", eps="eps", wd="weight_decay", clamp="clamp",
                        bias_correction="bias_correction")),
    "mclr": (mclr, dict(mu="momentum", wd="weight_decay")),
    "percentdelta": (percentdelta, dict(mu="momentum", wd="weight_decay")),
    "adam": (adam, dict(b1="beta1", b2="beta2", eps="eps", wd="weight_decay")),
    "adamw": (lambda *a, **k: adam(*a, decoupled=True, **k), dict(b1="beta1", b2="beta2", eps="eps", wd="weight_decay")),
    "adagrad": (adagrad, dict(eps="eps", init="initial_accumulator", wd="weight_decay")),
    "rmsprop": (rmsprop, dict(alpha="alpha", eps="eps", mu="momentum", wd="weight_decay")),
}


def kwargs_for(method: str, hp: dict) -> dict:
    out = {}
    for k, name in REFERENCES[method][1].items():
        out[k] = (hp[name[0]] == name[1]) if isinstance(name, tuple) else hp[name]
    return out
