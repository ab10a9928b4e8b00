"""Model FLOPs per image for the Keras models (lbbench/worker/roofline.py has the convention): the
Conv2D and MatMul operations of the traced forward graph for one image."""

from __future__ import annotations

import tensorflow as tf


def forward_gflop_per_image(model, image_size: int) -> float:
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, image_size, image_size, 3], model.trainable_variables[0].dtype)
    )
    macs = 0
    for op in fn.graph.get_operations():
        if op.type == "Conv2D":
            out, k = op.outputs[0].shape, op.inputs[1].shape
            macs += out[1] * out[2] * out[3] * k[0] * k[1] * k[2]
        elif op.type == "MatMul":
            a, b = op.inputs[0].shape, op.inputs[1].shape
            macs += a[0] * b[0] * b[1]
    return 2 * macs / 1e9
