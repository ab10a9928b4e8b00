"""Model FLOPs per image, counted on the model itself (lbbench/worker/roofline.py has the convention):
forward hooks on every convolution and linear layer record multiply-adds for one image."""

from __future__ import annotations

import torch


@torch.no_grad()
def forward_gflop_per_image(model: torch.nn.Module, image_size: int, device: torch.device | str = "cpu") -> float:
    macs = 0

    def conv(m: torch.nn.Conv2d, inp, out):
        nonlocal macs
        kh, kw = m.kernel_size
        macs += out[0].numel() * (m.in_channels // m.groups) * kh * kw

    def linear(m: torch.nn.Linear, inp, out):
        nonlocal macs
        macs += out[0].numel() * m.in_features

    hooks = [m.register_forward_hook(conv) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks += [m.register_forward_hook(linear) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    was_training = model.training
    model.eval()  # BN running statistics untouched
    try:
        p = next(model.parameters())
        model(torch.zeros(1, 3, image_size, image_size, device=device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return 2 * macs / 1e9
