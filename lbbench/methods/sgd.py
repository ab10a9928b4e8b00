"""SGD with momentum, the Goyal et al. (2017) baseline (docs/methods.md section 1)."""

from typing import Any

from lbbench.methods.registry import MOMENTUM, HParam, MethodInfo, is_power_of_two_multiple, register


def _keys(hp: dict[str, Any], sched: dict[str, Any]) -> dict[str, Any]:
    return {
        "sgd_opt_base_learning_rate": sched["base_lr"],
        "sgd_opt_end_learning_rate": sched["end_lr"],
        "sgd_opt_learning_rate_decay_poly_power": sched["poly_power"],
        "sgd_opt_learning_rate_decay_steps": sched["decay_steps"],
        "sgd_opt_weight_decay": hp["weight_decay"],
        "sgd_opt_momentum": hp["momentum"],
        "opt_learning_rate_warmup_epochs": sched["warmup_epochs"],
        "sgd_opt_nesterov": hp["nesterov"],
        "sgd_opt_lr_convention": hp["lr_convention"],
        "sgd_opt_exclude_bn_bias": hp["exclude_bn_bias"],
    }


def _closed(hp: dict[str, Any], sched: dict[str, Any]) -> str | None:
    """MLPerf closed_resnet_sgd.yaml: poly decay to 1e-4, base LR a multiple of 0.001,
    weight decay 1e-4 * 2^k; lbbench also requires the plain (non-Nesterov) update."""
    base = sched["base_lr"]
    if sched["schedule"] != "poly":
        return f"schedule {sched['schedule']!r} (closed sgd needs poly)"
    if sched["end_lr"] != 1e-4:
        return "end LR must be 1e-4"
    if sched["warmup_start_lr"] != 0:
        return f"warmup from LR {sched['warmup_start_lr']} (MLPerf's warms up from 0)"
    if abs(base / 0.001 - round(base / 0.001)) > 1e-6:
        return f"base LR {base} is not a multiple of 0.001"
    if not is_power_of_two_multiple(hp["weight_decay"], 1e-4):
        return f"weight decay {hp['weight_decay']} is not 1e-4 * 2^k"
    if hp["nesterov"]:
        return "Nesterov momentum"
    return None


SGD = register(
    MethodInfo(
        name="sgd",
        doc=__doc__,
        hparams={
            **MOMENTUM,
            "lr_convention": HParam(
                "outside",
                str,
                "'outside': b <- mu b + u, w <- w - lr b (torch.optim.SGD); 'inside': v <- mu v + lr u, w <- w - v",
                choices=("outside", "inside"),
            ),
        },
        opt_name="sgd",
        mllog_keys=_keys,
        closed_division=_closed,
    )
)
