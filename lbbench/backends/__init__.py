"""Framework backends. Only code under here imports torch, tensorflow or horovod.

Each backend has the same shape (model, data, optim/<method>, train) and the same worker
contract: ``python -m lbbench.backends.<fw>.train RUN_DIR`` reads RUN_DIR/run.yaml and writes
the results files next to it.
"""

import importlib.util
import sys


def require(module: str, framework: str) -> None:
    """Fail on import of a backend whose framework this environment lacks, saying why: a GPU
    environment (an image built with LBBENCH_GPU=torch or tf) holds one framework, as PyTorch's
    and TensorFlow's CUDA libraries collide; its workers cannot run the other framework's cells."""
    if importlib.util.find_spec(module) is None:
        raise ImportError(
            f"lbbench: {framework} is not installed in this environment ({sys.executable}). A GPU "
            "environment holds one framework (tools/bootstrap.sh LBBENCH_GPU=torch | tf): run this "
            f"cell's workers in the {framework} image (--container torch=IMAGE,tf=IMAGE) or environment"
        )
