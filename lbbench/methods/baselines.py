"""Plain optimizers the matrix must accept (docs/methods.md section 8): the framework's own
implementations (torch.optim / tf.keras.optimizers) with lbbench's schedules and exclusions.
Weight decay: coupled L2 in the gradient for adam/adagrad/rmsprop (as torch.optim does),
decoupled for adamw; never on excluded tensors. Defaults are the frameworks' and untuned.
"""

from lbbench.methods.registry import HParam, MethodInfo, open_keys, register

EXCL = {"exclude_bn_bias": HParam(True, bool, "no weight decay on BN and biases")}

ADAM = register(
    MethodInfo(
        name="adam",
        doc=__doc__,
        opt_name="adam",
        mllog_keys=open_keys("adam_opt"),
        hparams={
            "beta1": HParam(0.9, float, "b1"),
            "beta2": HParam(0.999, float, "b2"),
            "eps": HParam(1e-8, float, "eps"),
            "weight_decay": HParam(0.0, float, "coupled L2"),
            **EXCL,
        },
    )
)
ADAMW = register(
    MethodInfo(
        name="adamw",
        doc=__doc__,
        opt_name="adamw",
        mllog_keys=open_keys("adamw_opt"),
        hparams={
            "beta1": HParam(0.9, float, "b1"),
            "beta2": HParam(0.999, float, "b2"),
            "eps": HParam(1e-8, float, "eps"),
            "weight_decay": HParam(0.01, float, "decoupled"),
            **EXCL,
        },
    )
)
ADAGRAD = register(
    MethodInfo(
        name="adagrad",
        doc=__doc__,
        opt_name="adagrad",
        mllog_keys=open_keys("adagrad_opt"),
        hparams={
            "eps": HParam(1e-10, float, "eps"),
            "initial_accumulator": HParam(0.0, float, "initial sum of squares"),
            "weight_decay": HParam(0.0, float, "coupled L2"),
            **EXCL,
        },
    )
)
RMSPROP = register(
    MethodInfo(
        name="rmsprop",
        doc=__doc__,
        opt_name="rmsprop",
        mllog_keys=open_keys("rmsprop_opt"),
        hparams={
            "alpha": HParam(0.99, float, "square-average decay"),
            "eps": HParam(1e-8, float, "eps"),
            "momentum": HParam(0.0, float, "momentum"),
            "weight_decay": HParam(0.0, float, "coupled L2"),
            **EXCL,
        },
    )
)
