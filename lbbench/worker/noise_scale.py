"""The gradient-noise scale (McCandlish et al. 2018, appendix A) from the virtual workers'
micro-batch gradients (docs/methods.md section 9). Framework-free: it takes squared norms.

With micro-batches of size b (the K virtual workers) and the global batch B = K b:
  |G|^2   ~ (B |G_B|^2 - b |G_b|^2) / (B - b)
  tr(S)   ~ (|G_b|^2 - |G_B|^2) / (1/b - 1/B)
  B_simple = tr(S) / |G|^2, the critical-batch estimate,
where |G_b|^2 is the mean over micro-batches of their squared gradient norms and |G_B|^2 is
the squared norm of their average. Both estimates are unbiased; their ratio is not, so
average them over steps before dividing (the report does).
"""

from __future__ import annotations


def noise_scale_parts(micro_sq: float, global_sq: float, b: int, B: int) -> tuple[float, float] | None:
    """(|G|^2 estimate, tr(S) estimate), or None when K = 1 (no spread to measure)."""
    if B <= b:
        return None
    g2 = (B * global_sq - b * micro_sq) / (B - b)
    trace = (micro_sq - global_sq) / (1.0 / b - 1.0 / B)
    return g2, trace
