"""lbbench's own ResNets for PyTorch (torchvision cannot be imported beside the CPU torch).

ResNet-50 v1.5 as in MLPerf and NVIDIA's reference: the stride-2 of a downsampling
bottleneck sits on the 3x3 conv (v1.5), not the first 1x1 (v1). 25,557,032 parameters with
1000 classes, the same as torchvision's resnet50. Initialisation: Kaiming-normal (fan_out)
convs, BN gamma 1 / beta 0, and the last BN gamma of every residual block zero (Goyal et al.).

Small CPU variants keep the same blocks with a 3x3 stride-1 stem and no max-pool, for
images of 8-32 pixels.

BatchNorm computes its statistics over groups of ``bn_span`` samples ("ghost" BN): MLPerf's
model_bn_span, part of a run's identity in lbbench.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpanBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics span ``span`` samples (None: the whole batch).

    The running statistics are updated with the mean of the per-span statistics, which is
    what averaging the buffers of ``N/span`` independent BN replicas would give.
    """

    def __init__(self, num_features: int, span: int | None = None, **kw):
        super().__init__(num_features, **kw)
        self.span = span

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if not self.training or self.span is None or self.span >= n:
            return super().forward(x)
        if n % self.span:
            raise ValueError(f"batch {n} is not a multiple of bn_span {self.span}")
        g = n // self.span
        # statistics in float32 at least (bf16/fp16 activations under AMP), as PyTorch's own
        # batch_norm computes them; float32 and float64 inputs are unchanged
        xs = x.reshape(g, self.span, *x.shape[1:]).to(torch.promote_types(x.dtype, torch.float32))
        mean = xs.mean(dim=(1, 3, 4), keepdim=True)
        var = xs.var(dim=(1, 3, 4), unbiased=False, keepdim=True)
        y = ((xs - mean) / torch.sqrt(var + self.eps)).reshape_as(x)
        assert self.running_mean is not None and self.running_var is not None and self.momentum is not None
        assert self.num_batches_tracked is not None  # GhostBN always tracks running statistics
        with torch.no_grad():
            m = self.momentum
            count = self.span * x.shape[2] * x.shape[3]
            self.running_mean.mul_(1 - m).add_(m * mean.mean(dim=0).flatten())
            self.running_var.mul_(1 - m).add_(m * var.mean(dim=0).flatten() * count / max(count - 1, 1))
            self.num_batches_tracked.add_(1)
        return (y * self.weight[None, :, None, None] + self.bias[None, :, None, None]).to(x.dtype)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, bn):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = bn(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = bn(width)
        self.last_bn = self.bn2
        self.downsample = _shortcut(cin, width, stride, bn)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, bn):
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = bn(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)  # v1.5: stride here
        self.bn2 = bn(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = bn(out)
        self.last_bn = self.bn3
        self.downsample = _shortcut(cin, out, stride, bn)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


def _shortcut(cin: int, cout: int, stride: int, bn):
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))


class ResNet(nn.Module):
    def __init__(self, block, layers, widths, classes: int, small_stem: bool, bn_span: int | None = None):
        super().__init__()
        bn = lambda c: SpanBatchNorm2d(c, span=bn_span)
        stem = widths[0]
        if small_stem:
            self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, 1, 1, bias=False), bn(stem), nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(3, stem, 7, 2, 3, bias=False), bn(stem), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
            )
        stages, cin = [], stem
        for i, (n, w) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, w, 2 if (j == 0 and i > 0) else 1, bn))
                cin = w * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                nn.init.zeros_(m.last_bn.weight)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# name -> (block, blocks per stage, widths, small stem)
ARCHS = {
    "resnet50": (Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), False),
    "resnet18": (BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512), False),
    "resnet20": (BasicBlock, (3, 3, 3), (16, 32, 64), True),  # CIFAR-style, 32x32
    "resnet_tiny": (BasicBlock, (1, 1, 1), (16, 32, 64), True),  # digits, 8x8
}


def build_model(name: str, classes: int, bn_span: int | None = None) -> ResNet:
    if name not in ARCHS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(ARCHS)}")
    block, layers, widths, small = ARCHS[name]
    return ResNet(block, layers, widths, classes, small, bn_span)


def _ordered(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]


def to_canonical(model: nn.Module) -> list:
    """Weights as NumPy arrays in a framework-neutral order and layout (modules() order; conv
    OIHW, linear (out, in); BN gamma, beta, running mean, running var): the TensorFlow backend
    reads and writes the same list (lbbench/backends/tf/model.py), so models can be compared
    across frameworks."""
    out = []
    for m in _ordered(model):
        names = (
            ("weight", "bias", "running_mean", "running_var")
            if isinstance(m, nn.BatchNorm2d)
            else ("weight", "bias")
            if isinstance(m, nn.Linear)
            else ("weight",)
        )
        out += [getattr(m, n).detach().cpu().numpy().copy() for n in names]
    return out


@torch.no_grad()
def load_canonical(model: nn.Module, arrays: list) -> None:
    it = iter(arrays)
    for m in _ordered(model):
        names = (
            ("weight", "bias", "running_mean", "running_var")
            if isinstance(m, nn.BatchNorm2d)
            else ("weight", "bias")
            if isinstance(m, nn.Linear)
            else ("weight",)
        )
        for n in names:
            getattr(m, n).copy_(torch.from_numpy(next(it)))
