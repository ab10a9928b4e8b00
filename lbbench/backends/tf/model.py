"""lbbench's ResNets in Keras layers (tf-keras), the same networks as the PyTorch backend's
(lbbench/backends/torch/model.py): ResNet-50 v1.5 with 25,557,032 parameters, the small CPU
variants, the same initialisation (Kaiming-normal fan_out convs, BN gamma 1 / beta 0, the last
BN gamma of every residual block 0, PyTorch's default Linear init) and ghost BatchNorm over
``bn_span`` samples.

Tensors are NHWC (TensorFlow's CPU convolutions support no other layout). Padding is explicit
and symmetric, as PyTorch's: Keras' "same" pads stride-2 convolutions asymmetrically, which
would be a different network. ``model.ordered`` lists the conv/BN/dense layers in PyTorch's
``modules()`` order, so weights can be copied across (equivalence tests).
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras


class SpanBatchNorm(keras.layers.Layer):
    """BatchNorm over groups of ``span`` samples, PyTorch's semantics: normalise with the
    biased variance, update the running variance with the unbiased one (momentum 0.1, eps 1e-5),
    running statistics from the mean of the per-span statistics."""

    def __init__(self, span: int | None = None, momentum: float = 0.1, eps: float = 1e-5, **kw):
        # Under a mixed-precision policy the layer computes in float32 (its input is cast up, its
        # output is float32 and the next convolution casts it down): statistics in bf16 lose the
        # variance, and Keras' own BatchNormalization does the same
        if keras.mixed_precision.global_policy().name.startswith("mixed"):
            kw.setdefault("dtype", "float32")
        super().__init__(**kw)
        self.span, self.momentum, self.eps = span, momentum, eps

    def build(self, shape):
        c = shape[-1]
        self.gamma = self.add_weight(name="gamma", shape=(c,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(c,), initializer="zeros")
        self.moving_mean = self.add_weight(name="moving_mean", shape=(c,), initializer="zeros", trainable=False)
        self.moving_var = self.add_weight(name="moving_variance", shape=(c,), initializer="ones", trainable=False)

    def call(self, x, training=False):
        if not training:
            return (x - self.moving_mean) * tf.math.rsqrt(self.moving_var + self.eps) * self.gamma + self.beta
        n = tf.shape(x)[0]
        span = self.span or n
        xs = tf.reshape(x, tf.concat([[n // span, span], tf.shape(x)[1:]], 0))
        # Not tf.nn.moments: it stops the gradient through the mean inside the variance, which
        # leaves first derivatives exact but drops terms of second ones (CBLR's Hessian probes).
        mean = tf.reduce_mean(xs, axis=[1, 2, 3], keepdims=True)
        var = tf.reduce_mean(tf.square(xs - mean), axis=[1, 2, 3], keepdims=True)
        y = tf.reshape((xs - mean) * tf.math.rsqrt(var + self.eps), tf.shape(x))
        count = tf.cast(span * tf.shape(x)[1] * tf.shape(x)[2], x.dtype)
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * (1 - m) + m * tf.reshape(tf.reduce_mean(mean, 0), [-1]))
        unbiased = tf.reshape(tf.reduce_mean(var, 0), [-1]) * count / tf.maximum(count - 1, 1.0)
        self.moving_var.assign(self.moving_var * (1 - m) + m * unbiased)
        return y * self.gamma + self.beta


def _conv(filters: int, k: int, stride: int = 1):
    init = keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")
    return keras.layers.Conv2D(filters, k, stride, padding="valid", use_bias=False, kernel_initializer=init)


class ConvBN(keras.layers.Layer):
    """Symmetric zero padding + conv + span BN (the unit every ResNet here is made of)."""

    def __init__(self, filters, k, stride, span, **kw):
        super().__init__(**kw)
        self.pad = keras.layers.ZeroPadding2D(k // 2) if k > 1 else None
        self.conv = _conv(filters, k, stride)
        self.bn = SpanBatchNorm(span)

    def call(self, x, training=False):
        if self.pad is not None:
            x = self.pad(x)
        return self.bn(self.conv(x), training=training)


class Block(keras.layers.Layer):
    def __init__(self, cin, width, stride, span, bottleneck, **kw):
        super().__init__(**kw)
        out = width * (4 if bottleneck else 1)
        if bottleneck:  # v1.5: the stride on the 3x3
            self.units = [ConvBN(width, 1, 1, span), ConvBN(width, 3, stride, span), ConvBN(out, 1, 1, span)]
        else:
            self.units = [ConvBN(width, 3, stride, span), ConvBN(width, 3, 1, span)]
        self.shortcut = None if stride == 1 and cin == out else ConvBN(out, 1, stride, span)

    def call(self, x, training=False):
        y = x
        for i, u in enumerate(self.units):
            y = u(y, training=training)
            if i < len(self.units) - 1:
                y = tf.nn.relu(y)
        s = self.shortcut(x, training=training) if self.shortcut is not None else x
        return tf.nn.relu(y + tf.cast(s, y.dtype))  # under mixed precision: BN's float32 + the bf16 input


class ResNet(keras.Model):
    def __init__(self, bottleneck, layers, widths, classes, small_stem, bn_span=None, **kw):
        super().__init__(**kw)
        self.small_stem = small_stem
        self.stem = ConvBN(widths[0], 3 if small_stem else 7, 1 if small_stem else 2, bn_span)
        self.pool_pad = None if small_stem else keras.layers.ZeroPadding2D(1)
        self.blocks, cin = [], widths[0]
        for i, (n, w) in enumerate(zip(layers, widths)):
            for j in range(n):
                self.blocks.append(Block(cin, w, 2 if (j == 0 and i > 0) else 1, bn_span, bottleneck))
                cin = w * (4 if bottleneck else 1)
        bound = 1 / math.sqrt(cin)
        self.fc = keras.layers.Dense(
            classes,
            kernel_initializer=keras.initializers.VarianceScaling(1 / 3, mode="fan_in", distribution="uniform"),
            bias_initializer=keras.initializers.RandomUniform(-bound, bound),
        )

    def call(self, x, training=False):
        x = tf.nn.relu(self.stem(x, training=training))
        if self.pool_pad is not None:  # after a ReLU, zero padding = PyTorch's -inf padding for the max
            x = tf.nn.max_pool2d(self.pool_pad(x), 3, 2, "VALID")
        for b in self.blocks:
            x = b(x, training=training)
        return self.fc(tf.reduce_mean(x, axis=[1, 2]))

    @property
    def ordered(self) -> list:
        """Conv, BN and Dense layers in the order PyTorch's modules() visits them."""
        units = [self.stem]
        for b in self.blocks:
            units += b.units + ([b.shortcut] if b.shortcut is not None else [])
        out = [layer for u in units for layer in (u.conv, u.bn)]
        return out + [self.fc]


ARCHS = {
    "resnet50": (True, (3, 4, 6, 3), (64, 128, 256, 512), False),
    "resnet18": (False, (2, 2, 2, 2), (64, 128, 256, 512), False),
    "resnet20": (False, (3, 3, 3), (16, 32, 64), True),
    "resnet_tiny": (False, (1, 1, 1), (16, 32, 64), True),
}


def build_model(name: str, classes: int, image_size: int, bn_span: int | None = None) -> ResNet:
    if name not in ARCHS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(ARCHS)}")
    bottleneck, layers, widths, small = ARCHS[name]
    model = ResNet(bottleneck, layers, widths, classes, small, bn_span)
    model(tf.zeros([1, image_size, image_size, 3]), training=False)  # create the variables
    for b in model.blocks:  # Goyal et al.: zero last gamma
        b.units[-1].bn.gamma.assign(tf.zeros_like(b.units[-1].bn.gamma))
    return model


def is_excluded(var) -> bool:
    """BN scale/shift and every bias: no weight decay, no trust ratio (docs/methods.md section 0)."""
    name = var.name
    return "gamma" in name or "beta" in name or "bias" in name


def torch_layout(shape) -> tuple:
    """A Keras kernel's shape in PyTorch's layout: HWIO -> OIHW, (in, out) -> (out, in)."""
    shape = tuple(shape)
    return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1] if len(shape) == 2 else shape


def from_torch_layout(a):
    """An array in PyTorch's layout, back to Keras': OIHW -> HWIO, (out, in) -> (in, out)."""
    return a.transpose(2, 3, 1, 0) if a.ndim == 4 else a.T if a.ndim == 2 else a


def to_canonical(model: ResNet) -> list:
    """The PyTorch backend's framework-neutral weight list (lbbench/backends/torch/model.py):
    conv kernels HWIO -> OIHW, dense (in, out) -> (out, in)."""
    out = []
    for layer in model.ordered:
        if isinstance(layer, SpanBatchNorm):
            out += [w.numpy() for w in (layer.gamma, layer.beta, layer.moving_mean, layer.moving_var)]
        elif isinstance(layer, keras.layers.Dense):
            out += [layer.kernel.numpy().T.copy(), layer.bias.numpy()]
        else:
            out.append(layer.kernel.numpy().transpose(3, 2, 0, 1).copy())
    return out


def load_canonical(model: ResNet, arrays: list) -> None:
    it = iter(arrays)
    for layer in model.ordered:
        if isinstance(layer, SpanBatchNorm):
            for w in (layer.gamma, layer.beta, layer.moving_mean, layer.moving_var):
                w.assign(next(it))
        elif isinstance(layer, keras.layers.Dense):
            layer.kernel.assign(next(it).T)
            layer.bias.assign(next(it))
        else:
            layer.kernel.assign(next(it).transpose(2, 3, 1, 0))
