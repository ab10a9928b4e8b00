"""The suite schema: typed, locked configuration (pydantic; unknown keys are errors everywhere).

Each class is one block of a suite file; ``lbbench/suite/expand.py`` validates across fields
and expands the matrix into RunSpecs. Defaults that depend on the workload (target, epochs,
eval cadence) are ``None`` here and filled from ``lbbench/workloads.py`` at expansion.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt

from lbbench.spec import PerfSpec


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataCfg(Strict):
    kind: Literal["folder", "synthetic"] = "folder"
    path: str | None = None  # may use ${VAR} or ${VAR:-default}
    train_samples: int | None = Field(None, gt=0)
    eval_samples: int | None = Field(None, gt=0)


class WorkloadCfg(Strict):
    name: str
    data: DataCfg
    model: str | None = None
    image_size: int | None = Field(None, gt=0)
    classes: int | None = Field(None, gt=1)
    target_top1: float | None = Field(None, gt=0, le=1)
    eval_every: int | None = Field(None, gt=0)
    eval_offset: int | None = Field(None, ge=0)  # MLPerf allows 0-3 with eval_every 4
    max_epochs: int | None = Field(None, gt=0)
    augment: Literal["imagenet", "none"] | None = None
    label_smoothing: float | None = Field(None, ge=0, lt=1)


class LrCfg(Strict):
    rule: Literal["linear", "sqrt", "constant", "table"] = "linear"
    base_lr: float | None = Field(None, gt=0)
    base_batch: int = Field(256, gt=0)
    table: dict[int, float] | None = None  # global batch -> peak LR (rule: table)
    schedule: Literal["poly", "polynomial", "step", "cosine", "constant", "goyal"] = "poly"
    warmup_epochs: float = Field(0.0, ge=0)
    warmup_start_lr: float = Field(0.0, ge=0)
    end_lr: float = Field(1e-4, ge=0)
    # the end LR as a fraction of the peak (AlgoPerf's end_factor), so that a tuned peak keeps
    # its decay ratio; when set it replaces end_lr
    end_factor: float | None = Field(None, gt=0, le=1)
    poly_power: float = Field(2.0, gt=0)
    milestones: list[float] | None = None  # epochs (step schedule); goyal: 30/60/80 of 90
    decay_factor: float = Field(0.1, gt=0, le=1)
    train_epochs: float | None = Field(None, gt=0)  # schedule length; default max_epochs
    decay_start_epochs: float = Field(0.0, ge=0)  # polynomial: constant LR until this epoch


class DiscardCfg(Strict):
    fraction: float = Field(0.3, gt=0, lt=1)
    epochs: float | None = Field(None, gt=0)  # default: 30% of max_epochs
    scope: Literal["rank", "global"] = "rank"  # the quantile per virtual worker, or over the global batch


class BatchScheduleCfg(Strict):
    kind: Literal["small_first", "increase"]
    first_batch: int | None = Field(None, gt=0)
    first_lr: float | None = Field(None, gt=0)
    factor: float | None = Field(None, gt=1)  # increase: must be 1 / lr.decay_factor (the default)
    max_batch: int | None = Field(None, gt=0)


class Distribution(Strict):
    """One searched hyperparameter: exactly one of these, a [low, high] range or a list."""

    log_uniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    int_uniform: tuple[int, int] | None = None
    one_minus_log_uniform: tuple[float, float] | None = None  # 1 - x log-uniform: momenta, betas
    choice: list[Any] | None = Field(None, min_length=1)


class TuningCfg(Strict):
    """A tuning study per cell (method x global batch x framework x np): quasi-random trials
    over a declared search space, the same budget for every method unless a method says
    otherwise (AlgoPerf's external tuning; Shallue et al.). Trials are ordinary runs."""

    space: dict[str, Distribution] = Field(min_length=1)  # "lr.base_lr", "hparams.momentum", ...
    trials: int = Field(8, gt=0)  # per cell and study
    studies: int = Field(1, gt=0)  # independent studies (AlgoPerf: the median over them)
    # halton: quasi-random trials known at plan time; tpe: Optuna's TPE, each trial chosen from the
    # finished ones (lbbench/suite/adaptive.py), the study kept in the results directory
    sampler: Literal["halton", "tpe"] = "halton"
    seed: int = Field(0, ge=0)
    # new seeds the winner of each study is re-run with once every trial of the cell has finished;
    # the cell's row is then their olympic mean (lbbench/suite/finals.py)
    final_seeds: int = Field(0, ge=0)


class MethodCfg(Strict):
    name: str
    label: str | None = None
    hparams: dict[str, Any] = {}
    lr: dict[str, Any] = {}  # overrides of the suite's lr block for this method
    label_smoothing: float | None = Field(None, ge=0, lt=1)  # this method's; default the workload's
    # Training-loop features usable with any method (docs/methods.md section 6); open division.
    discard_small_loss: DiscardCfg | None = None
    batch_schedule: BatchScheduleCfg | None = None
    # Per-batch hyperparameters from lbbench/recipes.py; explicit hparams still win.
    recipe: Literal["mlperf_lars", "spngd"] | None = None
    # This method's study (replaces the suite's tuning block); `tuning: null` = not tuned
    tuning: TuningCfg | None = None


class MatrixCfg(Strict):
    methods: list[MethodCfg] = Field(min_length=1)
    global_batch: list[PositiveInt] = Field(min_length=1)
    frameworks: list[Literal["torch", "tf"]] = Field(["torch"], min_length=1)
    seeds: list[NonNegativeInt] = Field([0], min_length=1)
    workers: list[PositiveInt] = Field([1], min_length=1)  # np, Horovod processes
    local_batch: int | None = Field(None, gt=0)  # per-worker micro-batch; accum derived
    accum: int | None = Field(None, gt=0)  # micro-batches per worker; local derived
    bn_span: int | None = Field(None, gt=0)  # samples per BN statistic; default local


class RunCfg(Strict):
    stop_at_target: bool = True
    diag_every: int = Field(0, ge=0)  # 0: no per-tensor diagnostics
    eval_batch: int = Field(256, gt=0)
    checkpoint_every: int = Field(1, ge=0)  # epochs; 0 = never
    keep_checkpoints: int = Field(2, ge=1)  # newest verified checkpoints kept (a damaged newest falls back)
    perf: PerfSpec = PerfSpec()  # speed options: amp, channels_last, dali_device, ...


class SlurmCfg(Strict):
    """sbatch resources for `lbbench run --launcher slurm --submit` (CLI options override)."""

    nodes: int | None = Field(None, gt=0)
    ntasks_per_node: int | None = Field(None, gt=0)
    gpus_per_node: int | None = Field(None, ge=0)
    cpus_per_task: int | None = Field(None, gt=0)
    time: str | None = None
    account: str | None = None
    partition: str | None = None
    extra: list[str] = []  # further "#SBATCH" options, verbatim
    setup: list[str] = []  # shell lines run before lbbench (module load, source ...)
    mpi: str = "pmix"  # srun --mpi=


class Cell(Strict):
    """An include/exclude entry: any subset of the matrix axes."""

    method: str | None = None  # a method label
    global_batch: PositiveInt | None = None
    framework: Literal["torch", "tf"] | None = None
    seed: NonNegativeInt | None = None
    np: PositiveInt | None = None


class SuiteCfg(Strict):
    name: str | None = None
    description: str = ""
    workload: WorkloadCfg
    lr: LrCfg = LrCfg()
    matrix: MatrixCfg
    run: RunCfg = RunCfg()
    slurm: SlurmCfg = SlurmCfg()
    include: list[Cell] = []
    exclude: list[Cell] = []
    tuning: TuningCfg | None = None  # the study of every method (a method's own block wins)
