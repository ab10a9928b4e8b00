"""LARS (You, Gitman, Ginsburg 2017) in MLPerf's form (docs/methods.md section 2).

Per non-excluded tensor: trust = eta ||w|| / (||g|| + beta ||w|| + eps), 1 if ||w|| or ||g|| is 0;
v <- mu v + lr trust (g + beta w); w <- w - v (LR inside; Nesterov: w <- w - (mu v + lr trust (g + beta w))).
Excluded tensors (BN, biases): v <- mu v + lr g; w <- w - v. eps defaults to 0 exactly (the MLPerf
TF2 code's silent 1e-7 is not copied).
"""

from typing import Any

from lbbench.methods.registry import MOMENTUM, HParam, MethodInfo, is_power_of_two_multiple, register


def _keys(hp: dict[str, Any], sched: dict[str, Any]) -> dict[str, Any]:
    return {
        "lars_epsilon": hp["eps"],
        "lars_opt_weight_decay": hp["weight_decay"],
        "lars_opt_base_learning_rate": sched["base_lr"],
        "lars_opt_learning_rate_warmup_epochs": sched["warmup_epochs"],
        "lars_opt_end_learning_rate": sched["end_lr"],
        "lars_opt_learning_rate_decay_steps": sched["decay_steps"],
        "lars_opt_learning_rate_decay_poly_power": sched["poly_power"],
        "lars_opt_momentum": hp["momentum"],
        "lars_opt_trust_coefficient": hp["eta"],
        "lars_opt_nesterov": hp["nesterov"],
        "lars_opt_exclude_bn_bias": hp["exclude_bn_bias"],
    }


def _closed(hp: dict[str, Any], sched: dict[str, Any]) -> str | None:
    """MLPerf closed_resnet_lars.yaml: poly-2 decay to 1e-4, eps 0, weight decay 1e-4 * 2^k."""
    if sched["schedule"] != "poly" or sched["poly_power"] != 2:
        return "closed LARS needs the poly-2 schedule"
    if sched["end_lr"] != 1e-4:
        return "end LR must be 1e-4"
    if sched["warmup_start_lr"] != 0:
        return f"warmup from LR {sched['warmup_start_lr']} (MLPerf's warms up from 0)"
    if hp["eps"] != 0.0:
        return "lars eps must be 0"
    if not is_power_of_two_multiple(hp["weight_decay"], 1e-4):
        return f"weight decay {hp['weight_decay']} is not 1e-4 * 2^k"
    if hp["nesterov"] or not hp["exclude_bn_bias"]:
        return "Nesterov or no exclusions is not MLPerf LARS"
    return None


LARS = register(
    MethodInfo(
        name="lars",
        doc=__doc__,
        opt_name="lars",
        mllog_keys=_keys,
        closed_division=_closed,
        hparams={
            **MOMENTUM,
            "eta": HParam(0.001, float, "trust coefficient"),
            "eps": HParam(0.0, float, "added to the trust-ratio denominator"),
        },
    )
)
