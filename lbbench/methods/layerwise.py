"""Per-tensor learning rates from the Gao & Zhong seed and Abu-El-Haija 2017 (docs/methods.md section 6).

mclr: eta_l = lr |median|w| / (median|g| + beta median|w|)| (1 if either median is 0, as LARS);
      then v <- mu v + eta_l (g + beta w), w <- w - v; excluded tensors plain momentum SGD.
      [lbbench] medians of absolute values: a repair of the seed, which writes medians of the
      signed values (near 0 for any roughly symmetric tensor, so the rate would be noise); the
      momentum form (LR inside, as LARS) is ours: the seed only says "momentum SGD with eta_l".
percentdelta: eta_l = lr / (mean_i |g_i / w'_i| + 1e-5), w'_i = w_i + sign(w_i) 1e-6 (sign(0) = +);
      v <- mu v + eta_l (g + beta w), w <- w - v (mu = 0: the reference's plain gradient descent), so
      lr is the target mean relative change per step. Excluded tensors (BN, biases) take plain
      momentum SGD at lr, as for every layer-wise method: a relative rule would freeze a
      zero-initialised BN shift or residual gamma (eta = lr / (|g| 1e6)) and keep residual
      branches switched off. [lbbench] optional momentum and weight decay.
"""

from lbbench.methods.registry import MOMENTUM, HParam, MethodInfo, open_keys, register

MCLR = register(
    MethodInfo(
        name="mclr",
        doc=__doc__,
        opt_name="mclr",
        mllog_keys=open_keys("mclr_opt"),
        hparams={k: v for k, v in MOMENTUM.items() if k != "nesterov"},
        lbbench_choices=("medians of absolute values (the seed: signed medians)", "momentum with LR inside, as LARS"),
    )
)
PERCENTDELTA = register(
    MethodInfo(
        name="percentdelta",
        doc=__doc__,
        opt_name="percentdelta",
        mllog_keys=open_keys("percentdelta_opt"),
        hparams={
            "momentum": HParam(0.0, float, "momentum (0: plain, as the reference)"),
            "weight_decay": HParam(0.0, float, "L2 added to the gradient"),
            "exclude_bn_bias": HParam(True, bool, "no weight decay on BN and biases"),
        },
        lbbench_choices=("optional momentum and weight decay", "excluded tensors: plain momentum SGD"),
    )
)
