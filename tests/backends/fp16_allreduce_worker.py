"""Two ranks each hold 40,000 (fp16's largest finite value is 65,504): the average through
lbbench's fp16-compressed allreduce must be 40,000, not the inf of an fp16 sum (run by
tests/backends/test_gpu_readiness.py under lbbench's Gloo launcher, one framework per process)."""

from __future__ import annotations

import sys

from lbbench.spec import PerfSpec

framework = sys.argv[1]
perf = PerfSpec(compression="fp16")
if framework == "torch":
    import horovod.torch as hvd
    import torch

    from lbbench.backends.torch.perf import average_args

    hvd.init()
    (out,) = hvd.grouped_allreduce([torch.full((4,), 40000.0)], **average_args(hvd, perf))
    naive = hvd.allreduce(torch.full((4,), 40000.0), op=hvd.Average, compression=hvd.Compression.fp16)
    values = out.tolist(), naive.tolist()
else:
    import horovod.tensorflow as hvd
    import tensorflow as tf

    import lbbench.backends.tf  # noqa: F401 - TF_USE_LEGACY_KERAS before TensorFlow loads
    from lbbench.backends.tf.perf import average_args

    hvd.init()
    (out,) = hvd.grouped_allreduce([tf.fill([4], 40000.0)], **average_args(hvd, perf))
    naive = hvd.allreduce(tf.fill([4], 40000.0), op=hvd.Average, compression=hvd.Compression.fp16)
    values = out.numpy().tolist(), naive.numpy().tolist()
if hvd.rank() == 0:
    print("RESULT", values[0], values[1], flush=True)
