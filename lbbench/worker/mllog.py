"""MLPerf logging shared by both backends (docs/mlperf.md), through ``mlperf_logging.mllog``.

Only rank 0 logs. The log goes to the run's mllog.txt (not stdout: the worker's stdout is
for people). Keys that the rules want EXACTLY_ONE are written once, from ``header``.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

from mlperf_logging.mllog import constants as C
from mlperf_logging.mllog.mllog import MLLogger

from lbbench.methods import get_method
from lbbench.spec import RunSpec

ORG = "lbbench"


class RunLog:
    def __init__(self, path: Path | None):
        self.enabled = path is not None
        if path is not None:
            logger = logging.getLogger(f"lbbench.worker.mllog.{path}")
            logger.propagate = False
            logger.setLevel(logging.INFO)
            logger.handlers[:] = [logging.FileHandler(path)]
            self._log = MLLogger(logger=logger, default_stack_offset=2)

    def event(self, key: str, value: Any = None, **metadata: Any) -> None:
        if self.enabled:
            self._log.event(key=key, value=value, metadata=metadata or None)

    def start(self, key: str, value: Any = None, **metadata: Any) -> None:
        if self.enabled:
            self._log.start(key=key, value=value, metadata=metadata or None)

    def end(self, key: str, value: Any = None, **metadata: Any) -> None:
        if self.enabled:
            self._log.end(key=key, value=value, metadata=metadata or None)

    def header(self, spec: RunSpec, steps_per_epoch: int, platform: str) -> None:
        """Everything between cache_clear/init_start and init_stop, in docs/mlperf.md's order."""
        from lbbench.worker.schedules import schedule_facts

        info = get_method(spec.method)
        self.event(C.CACHE_CLEAR, True)
        self.start(C.INIT_START)
        self.event(C.SUBMISSION_BENCHMARK, C.RESNET)
        self.event(C.SUBMISSION_ORG, ORG)
        self.event(C.SUBMISSION_DIVISION, spec.division)
        self.event(C.SUBMISSION_STATUS, C.RESEARCH)
        self.event(C.SUBMISSION_PLATFORM, platform or socket.gethostname())
        self.event(C.SEED, spec.seed)
        self.event(C.GLOBAL_BATCH_SIZE, spec.global_batch)
        self.event(C.GRADIENT_ACCUMULATION_STEPS, spec.accum)
        self.event(C.TRAIN_SAMPLES, spec.data.train_samples)
        self.event(C.EVAL_SAMPLES, spec.data.eval_samples)
        self.event(C.MODEL_BN_SPAN, spec.bn_span)
        self.event("eval_offset", spec.eval_offset)
        self.event(C.OPT_NAME, info.opt_name)
        for key, value in info.mllog_keys(spec.hparams, schedule_facts(spec.lr, steps_per_epoch)).items():
            self.event(key, value)
        if spec.division == "open":
            self.event("lbbench_division_reason", spec.division_reason)
        self.event("lbbench_run_id", spec.run_id)
        self.event("lbbench_virtual_workers", spec.virtual_workers)
        self.event("lbbench_lr_schedule", spec.lr.model_dump(mode="json"))
        self.event("lbbench_choices", list(info.lbbench_choices))
        if spec.recipe:
            self.event("lbbench_recipe", spec.recipe)
        if spec.recipe_not_reproduced:
            self.event("lbbench_not_reproduced", list(spec.recipe_not_reproduced))
        if spec.discard:
            self.event("lbbench_discard_small_loss", spec.discard.model_dump())
        if spec.batch_schedule:
            self.event("lbbench_batch_schedule", spec.batch_schedule.model_dump())
