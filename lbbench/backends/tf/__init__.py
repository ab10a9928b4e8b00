"""The TensorFlow backend (tensorflow-cpu 2.18 with tf-keras, horovod.tensorflow, DALI).

Keras 3 (TensorFlow 2.18's default) is not what Horovod 0.28's Keras integration expects, so
the backend runs on tf-keras: TF_USE_LEGACY_KERAS=1 is set before TensorFlow is imported.
"""

import os

from lbbench.backends import require

require("tensorflow", "TensorFlow")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
