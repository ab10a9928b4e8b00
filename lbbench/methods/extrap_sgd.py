"""EXTRAP-SGD (Lin, Kong, Stich, Jaggi, ICML 2020; METHODS.md section 5).

Per virtual worker k, with the shared momentum buffer u:
  g_k = grad f(w; xi_k) (local, not allreduced);  w~_k = w - gamma_x (mu u + g_k)
  h_k = grad f(w~_k; xi_k);  h = mean_k h_k (the only allreduce)
  u <- mu u + (h + beta w);  w <- w - gamma_t (mu u + h + beta w)     (Nesterov, original w)
gamma_x = extrap_scale * gamma_t (1 by default; 0 reduces to Nesterov SGD exactly). BN running
statistics update only in the second pass. Under accumulation every micro-batch extrapolates
from the same w (saved and restored). [lbbench] choices: weight decay beta added to h as in
SGD (not on excluded tensors); the second gradient uses the same micro-batch; the perturbation
may instead be noise (w~ = w + N(0, s^2) or U(-s, s)), the unified framework's SmoothOut-like
case.
"""
from lbbench.methods.registry import HParam, MethodInfo, open_keys, register

EXTRAP_SGD = register(MethodInfo(
    name="extrap_sgd", doc=__doc__, opt_name="extrap_sgd", mllog_keys=open_keys("extrap_sgd_opt"),
    needs_local_grads=True, passes_per_step=2,
    hparams={"momentum": HParam(0.9, float, "mu"),
             "weight_decay": HParam(1e-4, float, "beta, added to h"),
             "exclude_bn_bias": HParam(True, bool, "no weight decay on BN and biases"),
             "extrap_scale": HParam(1.0, float, "gamma_x / gamma_t"),
             "perturbation": HParam("extragradient", str, "how w~ is formed",
                                    choices=("extragradient", "gaussian", "uniform")),
             "noise_scale": HParam(0.0, float, "std (gaussian) or half-width (uniform) of the noise")},
    lbbench_choices=("weight decay added to h", "same micro-batch for both gradients"),
))
