"""lbbench's ResNet-50 v1.5: torchvision's parameter count and the v1.5 stride placement."""

import pytest

torch = pytest.importorskip("torch")
from lbbench.backends.torch.model import Bottleneck, SpanBatchNorm2d, build_model  # noqa: E402


def test_resnet50_parameter_count_matches_torchvision():
    m = build_model("resnet50", 1000)
    assert sum(p.numel() for p in m.parameters()) == 25_557_032


def test_v15_stride_on_the_3x3_conv_and_zero_init_last_bn():
    m = build_model("resnet50", 1000)
    blocks = [b for b in m.modules() if isinstance(b, Bottleneck)]
    assert len(blocks) == 16
    firsts = [stage[0] for stage in m.stages]
    for i, b in enumerate(firsts):
        assert b.conv1.stride == (1, 1)
        assert b.conv2.stride == ((1, 1) if i == 0 else (2, 2))  # v1.5: stride on the 3x3
        assert b.downsample[0].stride == b.conv2.stride
    assert all(float(b.bn3.weight.detach().abs().sum()) == 0 for b in blocks)
    assert m(torch.randn(2, 3, 224, 224)).shape == (2, 1000)


def test_bn_span_equals_separate_batches():
    torch.manual_seed(0)
    bn_span, bn_full = SpanBatchNorm2d(3, span=4), SpanBatchNorm2d(3)
    x = torch.randn(8, 3, 5, 5)
    y = bn_span(x)
    ref = torch.cat([bn_full(x[:4]), bn_full(x[4:])])
    assert torch.allclose(y, ref, atol=1e-5)
    assert torch.allclose(
        bn_span.running_mean,
        bn_full.running_mean * 0 + (0.1 * x[:4].mean((0, 2, 3)) + 0.1 * x[4:].mean((0, 2, 3))) / 2,
        atol=1e-6,
    )


def test_span_bn_statistics_are_float32_under_bf16():
    """bf16 activations (AMP) are normalised with float32 statistics, as PyTorch's own BN does."""
    torch.manual_seed(0)
    x = torch.randn(8, 4, 5, 5) * 3 + 1
    low = x.bfloat16()
    a, b = SpanBatchNorm2d(4, span=4), SpanBatchNorm2d(4, span=4)
    y = a(low)
    b(low.float())  # the same values, computed in float32 throughout
    assert y.dtype == torch.bfloat16
    assert torch.equal(a.running_mean, b.running_mean) and torch.equal(a.running_var, b.running_var)
    assert a.running_mean.dtype == torch.float32
