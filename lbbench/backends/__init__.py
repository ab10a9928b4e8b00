"""Framework backends. Only code under here imports torch, tensorflow or horovod.

Each backend has the same shape (model, data, optim/<method>, train) and the same worker
contract: ``python -m lbbench.backends.<fw>.train RUN_DIR`` reads RUN_DIR/run.yaml and writes
the results files next to it.
"""
