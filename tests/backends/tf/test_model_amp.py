"""TensorFlow's span BatchNorm under bf16 mixed precision computes in float32 (its own process:
the mixed-precision policy is global)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import lbbench.backends.tf  # noqa: F401
import tensorflow as tf
import tf_keras as keras
keras.mixed_precision.set_global_policy("mixed_bfloat16")
from lbbench.backends.tf.model import SpanBatchNorm
bn = SpanBatchNorm(span=4)
x = tf.random.normal([8, 5, 5, 4], seed=0)
y = bn(tf.cast(x, tf.bfloat16), training=True)
from lbbench.backends.tf.model import build_model
model = build_model("resnet_tiny", 10, 8)  # every block's adds meet float32 BN outputs
logits = model(tf.random.normal([4, 8, 8, 3]), training=True)
print(bool(tf.reduce_all(tf.math.is_finite(tf.cast(logits, tf.float32)))))
print(bn.compute_dtype, y.dtype.name, bn.moving_mean.dtype.name)
"""


def test_span_bn_computes_in_float32_under_mixed_bf16():
    p = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split()[-4:] == ["True", "float32", "float32", "float32"], p.stdout
