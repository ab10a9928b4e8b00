"""Roofline arithmetic for a run: model FLOPs per image, achieved FLOP/s, model FLOP
utilisation (MFU). Framework-free; the FLOPs are counted by the backend on its own model.

Convention (docs/mlperf.md, and the usual one for ResNet-50): a multiply-add is 2 FLOPs, only
convolutions and fully connected layers count, and a training step costs 3 x the forward
pass (forward, and the backward's two products: gradients of activations and of weights).
ResNet-50 v1.5 at 224 x 224: 8.18 GFLOP forward, about 24.5 GFLOP per training image.
"""

from __future__ import annotations

TRAIN_FACTOR = 3.0

# Dense peak TFLOP/s of one device by device-name substring (first match wins, so the specific
# parts come before the family) and precision (vendor data sheets, dense, no sparsity). fp32 on
# Ampere/Hopper means TF32 tensor cores, which PyTorch uses for convolutions by default.
PEAK_TFLOPS: dict[str, dict[str, float | None]] = {
    "H200": {"fp32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "H100 PCIe": {"fp32": 378.0, "bf16": 756.0, "fp16": 756.0},
    "H100 NVL": {"fp32": 417.5, "bf16": 835.0, "fp16": 835.0},
    "H100": {"fp32": 494.7, "bf16": 989.4, "fp16": 989.4},  # SXM ("NVIDIA H100 80GB HBM3")
    "A100": {"fp32": 156.0, "bf16": 312.0, "fp16": 312.0},
    "V100": {"fp32": 15.7, "bf16": None, "fp16": 125.0},
}


def peak_tflops(device_name: str, amp: str, override: float | None = None) -> float | None:
    """The device's dense peak for the run's precision; None when unknown (CPUs: give
    ``run.perf.peak_tflops`` in the suite to get an MFU)."""
    if override:
        return override
    precision = "fp32" if amp == "none" else amp
    for key, peaks in PEAK_TFLOPS.items():
        if key in device_name:
            return peaks[precision]
    return None


def utilisation(
    train_gflop_per_image: float, images_per_s: float, peak: float | None, devices: int = 1
) -> dict[str, float | None]:
    """Achieved TFLOP/s of ``images_per_s`` (all devices together) and the MFU against
    ``devices`` x one device's ``peak``."""
    achieved = train_gflop_per_image * images_per_s / 1e3  # TFLOP/s
    return dict(achieved_tflops=achieved, peak_tflops=peak, mfu=achieved / (peak * devices) if peak else None)


def peak_note(device_name: str, amp: str, override: float | None) -> str | None:
    """Why a GPU run has no MFU: its device is not in the table (give run.perf.peak_tflops)."""
    if peak_tflops(device_name, amp, override) is not None or device_name.lower().startswith("cpu"):
        return None
    return f"no dense peak known for {device_name!r} at {amp}: no MFU (set run.perf.peak_tflops, per device)"
