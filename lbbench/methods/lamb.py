"""LAMB (You et al., ICLR 2020, Algorithm 2 with bias correction; docs/methods.md section 3).

m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2; r = m^/(sqrt(v^) + eps); u = r + beta w;
w <- w - lr phi(||w||)/||u|| u, phi = identity or min(., clamp); ratio 1 if a norm is 0.
Excluded tensors: beta = 0 and ratio 1. No gradient clipping.
"""

from lbbench.methods.registry import HParam, MethodInfo, open_keys, register

LAMB = register(
    MethodInfo(
        name="lamb",
        doc=__doc__,
        opt_name="lamb",
        mllog_keys=open_keys("lamb_opt"),
        hparams={
            "beta1": HParam(0.9, float, "first-moment decay"),
            "beta2": HParam(0.999, float, "second-moment decay"),
            "eps": HParam(1e-6, float, "denominator epsilon"),
            "weight_decay": HParam(0.01, float, "beta, added to the update (untuned default)"),
            "clamp": HParam(0.0, float, "phi(||w||) = min(||w||, clamp) when > 0; 0 = identity"),
            "bias_correction": HParam(True, bool, "Adam bias correction (torch-optimizer has none)"),
            "exclude_bn_bias": HParam(True, bool, "no weight decay and ratio 1 on BN and biases"),
        },
    )
)
