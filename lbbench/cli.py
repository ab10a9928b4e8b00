"""The `lbbench` command (typer): thin — parse, call, turn known errors into exit status 2."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from lbbench.launch.commands import LaunchOptions
    from lbbench.spec import RunSpec
    from lbbench.suite.expand import Suite

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="lbbench: large-batch training benchmarks (ResNet-50 / ImageNet) through Horovod.",
)
data_app = typer.Typer(no_args_is_help=True, help="Write the bundled data sets in the ImageNet layout.")
app.add_typer(data_app, name="data")
console = Console()
err = Console(stderr=True)


def _load(path: Path, check_data: bool, np: int | None = None) -> tuple[Suite, list[RunSpec]]:
    from lbbench.suite.expand import expand, load_suite
    from lbbench.suite.yamlpos import SuiteError

    try:
        suite = load_suite(path)
        if np is not None:
            suite.cfg.matrix.workers = [np]
        runs, warnings = expand(suite, check_data=check_data)
    except SuiteError as e:
        err.print(f"[red]error:[/red] {e}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    for w in warnings:
        err.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)
    return suite, runs


def _check_images(container: str, runs: list[RunSpec]) -> None:
    """Exit 2 before anything starts when --container is malformed or names no image for a
    framework some selected run needs."""
    from lbbench.launch.commands import container_images

    try:
        images = container_images(container)
    except ValueError as e:
        err.print(f"error: {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    missing = sorted({r.framework for r in runs} - set(images))
    if missing:
        n = sum(r.framework in missing for r in runs)
        err.print(
            f"error: --container names no image for {', '.join(missing)}, which {n} selected run(s) use: "
            f"add {','.join(f'{fw}=IMAGE' for fw in missing)} (one GPU image per framework, docs/gpu.md) "
            "or select runs with --only",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)


@app.command()
def plan(
    suite: Path = typer.Argument(..., help="suite YAML"),
    only: str | None = typer.Option(None, help="glob on run id or method label"),
    np: int | None = typer.Option(None, "--np", min=1, help="override the workers axis"),
    format: str = typer.Option("table", "--format", help="table | json (every run's resolved RunSpec) | csv"),
    cost: bool = typer.Option(False, "--cost", help="per cell: steps, samples, hours and accelerator-hours"),
    images_per_s: float = typer.Option(
        3000.0, min=1e-9, help="--cost: images/s per accelerator (e.g. from `lbbench bench throughput`)"
    ),
    accelerators: int | None = typer.Option(
        None, min=1, help="--cost: price every run on this many accelerators (default: each run's np)"
    ),
    results: Path = typer.Option(Path("results"), help="results root (final-seed runs of finished studies)"),
) -> None:
    """Print the runs a suite expands to (tuning trials and known final seeds included), or what they cost."""
    from lbbench.launch.runner import select
    from lbbench.suite.adaptive import known_trials, planned_count, stand_ins
    from lbbench.suite.finals import final_runs, planned_finals
    from lbbench.suite.plan_output import as_csv, as_json

    if format not in ("table", "json", "csv"):
        err.print(f"error: --format {format!r}: expected table, json or csv")
        raise typer.Exit(2)
    s, planned = _load(suite, check_data=False, np=np)
    if cost:  # every adaptive trial and final-seed run counted, known or not, at its cell's cost
        every = planned + stand_ins(s)
        _print_cost(s.name, select(every + planned_finals(s, every), only), images_per_s, accelerators, format)
        return
    asked = known_trials(s, results)
    known = final_runs(s, planned + asked, results)
    pending = len(planned_finals(s, planned + stand_ins(s))) - len(known)
    adaptive_left = planned_count(s) - len(asked)
    runs = select(planned + asked + known, only)
    if format != "table":  # plain text on stdout, for scripts: no colour, no wrapping
        sys.stdout.write(as_json(runs) if format == "json" else as_csv(runs))
        return
    t = Table(title=f"{s.name}: {len(runs)} runs ({s.file})")
    for col in (
        "run id",
        "method",
        "global batch",
        "np x local x accum",
        "bn span",
        "framework",
        "seed",
        "trial",
        "peak lr",
        "division",
    ):
        t.add_column(col)
    for r in runs:
        t.add_row(
            r.run_id,
            r.label,
            str(r.global_batch),
            f"{r.np} x {r.local_batch} x {r.accum}",
            str(r.bn_span),
            r.framework,
            str(r.seed),
            f"final of {r.final_of}" if r.final_of else "-" if r.trial is None else f"{r.study}.{r.trial}",
            f"{r.lr.peak_lr:g}",
            r.division,
        )
    Console(width=max(console.width, 160)).print(t)
    if adaptive_left:
        console.print(f"+ {adaptive_left} adaptive trial(s) (Optuna TPE), each chosen as earlier ones finish")
    if pending:
        console.print(f"+ {pending} final-seed run(s) of tuning winners, planned once their cells' trials finish")


def _print_cost(name: str, runs: list[RunSpec], images_per_s: float, accelerators: int | None, fmt: str) -> None:
    from lbbench.suite.plan_output import cost_rows, rows_csv, rows_json

    rows = cost_rows(runs, images_per_s, accelerators)
    if fmt != "table":  # the cost rows themselves, for scripts
        sys.stdout.write(rows_json(rows) if fmt == "json" else rows_csv(rows))
        return
    where = f"{accelerators:,} accelerators" if accelerators else "each run's np accelerators"
    t = Table(title=f"{name}: cost at the epoch budget on {where}, {images_per_s:,.0f} images/s per accelerator")
    for col in ("method", "global batch", "framework", "accel", "runs", "steps", "samples", "hours", "accel-hours"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r["method"],
            str(r["global_batch"]),
            r["framework"],
            str(r["accelerators"]) + (" (!)" if r["images_per_accelerator_step"] < 1 else ""),
            str(r["runs"]),
            f"{r['steps']:,}",
            f"{r['samples']:,}",
            f"{r['wall_hours']:,.2f}",
            f"{r['accelerator_hours']:,.1f}",
        )
    Console(width=max(console.width, 160)).print(t)
    hours = sum(r["wall_hours"] for r in rows)
    accel = sum(r["accelerator_hours"] for r in rows)
    console.print(f"total: {len(runs)} runs, {hours:,.1f} hours one after another, {accel:,.0f} accelerator-hours")
    if any(r["images_per_accelerator_step"] < 1 for r in rows):
        console.print("(!) fewer images per step than accelerators: that cell cannot use them all")
    if any(r.final_of for r in runs):
        console.print("(final-seed runs included, each costed as its cell's trial)")


@app.command()
def run(
    suite: Path = typer.Argument(..., help="suite YAML"),
    only: str | None = typer.Option(None, help="glob on run id or method label"),
    np: int | None = typer.Option(None, "--np", min=1, help="override the workers axis"),
    launcher: str = typer.Option("local", help="local (Horovod Gloo, one node) | horovodrun | mpirun | slurm"),
    results: Path = typer.Option(Path("results"), help="results root"),
    timeout: float | None = typer.Option(None, help="per-run time limit in seconds"),
    warm: bool = typer.Option(
        True, "--warm/--cold", help="cells with the same np and framework share one launch of workers (warm)"
    ),
    container: str | None = typer.Option(
        None,
        help="run the workers in this Apptainer/Singularity image (exec --nv), or one image per framework: "
        "torch=IMAGE,tf=IMAGE (a GPU image holds one framework)",
    ),
    container_runtime: str | None = typer.Option(
        None, help="apptainer | singularity (default: whichever is installed)"
    ),
    submit: bool = typer.Option(False, help="slurm: write one sbatch script per run and submit it"),
    dry_run: bool = typer.Option(False, help="slurm --submit: print the scripts, submit nothing"),
    wait: bool = typer.Option(False, help="slurm --submit: wait for the jobs, then report"),
    srun_mpi: str | None = typer.Option(None, help="slurm: srun --mpi= plugin (default: the suite's, pmix)"),
    nodes: int | None = typer.Option(None, help="slurm --submit: nodes per run"),
    gpus_per_node: int | None = typer.Option(None, help="slurm --submit: GPUs per node (one worker each)"),
    ntasks_per_node: int | None = typer.Option(None, help="slurm --submit: workers per node"),
    time_limit: str | None = typer.Option(None, "--time", help="slurm --submit: job time limit (Slurm format)"),
    account: str | None = typer.Option(None, help="slurm --submit: account"),
    partition: str | None = typer.Option(None, help="slurm --submit: partition"),
    cells_per_job: int = typer.Option(
        1, min=1, help="slurm --submit: cells (same np and framework) trained by one job, in one warm launch"
    ),
) -> None:
    """Run every cell of a suite (completed runs are skipped; interrupted ones resume)."""
    from lbbench.launch.commands import LAUNCHERS, LaunchOptions, local_gpu_present
    from lbbench.launch.runner import Stopped, run_all, select

    if launcher not in LAUNCHERS:
        err.print(f"error: unknown launcher {launcher!r}; known: {', '.join(LAUNCHERS)}")
        raise typer.Exit(2)
    if (submit or dry_run or wait) and launcher != "slurm":
        err.print("error: --submit, --dry-run and --wait belong to --launcher slurm")
        raise typer.Exit(2)
    if launcher == "slurm" and not submit and not dry_run and not os.environ.get("SLURM_JOB_ID"):
        err.print(
            "error: --launcher slurm starts workers with srun inside a Slurm allocation and SLURM_JOB_ID is "
            "not set: add --submit (or --dry-run) to write sbatch jobs, or run inside salloc/sbatch"
        )
        raise typer.Exit(2)
    from lbbench.suite.adaptive import adaptive_cells, known_trials
    from lbbench.suite.finals import final_runs

    s, planned = _load(suite, check_data=True, np=np)
    asked = known_trials(s, results)  # adaptive studies' trials so far
    runs = select(planned + asked + final_runs(s, planned + asked, results), only)  # + final seeds
    if not runs and not adaptive_cells(s):
        err.print(f"error: no run of {suite} matches --only {only!r}")
        raise typer.Exit(2)
    gpu_runs = [r for r in runs if r.perf.gpu_only()]
    if gpu_runs and launcher == "local" and not container and not local_gpu_present():
        gpu_opts = sorted({o for r in gpu_runs for o in r.perf.gpu_only()})
        err.print(
            f"error: {suite}: run.perf {', '.join(gpu_opts)} need a CUDA GPU and this machine has none "
            f"(no nvidia-smi); {len(gpu_runs)} run(s) affected. Remove the option(s) or run on GPU nodes.",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    if container:
        _check_images(container, runs)
    binds = [str(results.resolve()), str(Path.cwd())] + [r.data.path for r in runs if r.data.path]
    opts = LaunchOptions(
        container=container,
        container_runtime=container_runtime,
        srun_mpi=srun_mpi or s.cfg.slurm.mpi,
        binds=tuple(binds) if container else (),
    )
    if submit or dry_run:
        raise typer.Exit(
            _submit(
                s,
                runs,
                results,
                opts,
                dry_run,
                wait,
                cells_per_job,
                dict(
                    nodes=nodes,
                    gpus_per_node=gpus_per_node,
                    ntasks_per_node=ntasks_per_node,
                    time=time_limit,
                    account=account,
                    partition=partition,
                ),
            )
        )
    try:
        summaries = run_all(runs, results, launcher, console, timeout, opts, warm)
        summaries += _adaptive_trials(s, results, only, launcher, timeout, opts, warm)
        known = {r.run_id for r in runs}
        asked = known_trials(s, results)
        finals = [f for f in select(final_runs(s, planned + asked, results), only) if f.run_id not in known]
        if finals:  # studies this invocation finished: their winners with the final seeds
            console.print(f"{len(finals)} final-seed run(s) of the tuning winners")
            summaries += run_all(finals, results, launcher, console, timeout, opts, warm)
    except Stopped as e:
        err.print(f"lbbench run: {e}; the current run is left resumable (run the same command to go on)")
        raise typer.Exit(128 + e.signum) from None
    _print_report(results / s.name)
    bad = [x for x in summaries if x.status in ("failed", "timeout")]
    raise typer.Exit(1 if bad else 0)


def _adaptive_trials(
    s: Suite,
    results: Path,
    only: str | None,
    launcher: str,
    timeout: float | None,
    opts: Any,
    warm: bool,
) -> list[Any]:
    """Adaptive studies (``sampler: tpe``): a trial per study at a time, each chosen from the
    finished ones, until every budget is spent; trials another process is training are left to
    it (several `lbbench run` may share a study)."""
    from lbbench.launch.runner import run_all, run_state, select
    from lbbench.store.files import run_dir
    from lbbench.suite.adaptive import next_trials

    def busy(spec: RunSpec) -> bool:
        return run_state(run_dir(results, s.name, spec.run_id), spec) == "running"

    out: list[Any] = []
    last: list[str] = []
    while True:
        batch = select(next_trials(s, results, busy), only)
        ids = [r.run_id for r in batch]
        if not batch or ids == last:  # budgets spent, or nothing this process can advance
            return out
        last = ids
        console.print(f"adaptive tuning (Optuna TPE): {len(batch)} new trial(s)")
        out += run_all(batch, results, launcher, console, timeout, opts, warm)


def _submit(
    s: Suite,
    runs: list[RunSpec],
    results: Path,
    opts: LaunchOptions,
    dry_run: bool,
    wait: bool,
    cells_per_job: int,
    overrides: dict[str, Any],
) -> int:
    from lbbench.launch.slurm import JobResources, SlurmError, submit_runs
    from lbbench.suite.adaptive import adaptive_cells

    if adaptive_cells(s):
        err.print(
            "note: adaptive studies (sampler: tpe) choose each trial when the previous ones finish, so "
            "their trials cannot be submitted ahead: run `lbbench run SUITE --launcher slurm` inside "
            "sbatch jobs instead (several jobs share each study through RESULTS/SUITE/tuning.journal)",
            highlight=False,
            soft_wrap=True,
        )
    cfg = s.cfg.slurm
    res = JobResources(
        **{
            **{
                k: getattr(cfg, k)
                for k in ("nodes", "ntasks_per_node", "gpus_per_node", "cpus_per_task", "time", "account", "partition")
            },
            **{k: v for k, v in overrides.items() if v is not None},
        },
        extra=tuple(cfg.extra),
        setup=tuple(cfg.setup),
    )
    try:
        if wait and not dry_run:
            console.print("submitting; waiting for the jobs ...")
        out = submit_runs(runs, s.name, s.file, results, res, opts, dry_run, wait, cells_per_job)
    except SlurmError as e:
        err.print(f"error: {e}", highlight=False, soft_wrap=True)
        return 2
    for rid in out.skipped:
        console.print(f"{rid}: done before, not submitted", highlight=False)
    if dry_run:
        for _, path, script in out.scripts:
            console.print(f"# {path}\n{script}", highlight=False, markup=False, soft_wrap=True)
    for rid, job in out.queued:
        console.print(f"{rid}: already queued or running as job {job}, not submitted again", highlight=False)
    for rid, job in out.jobs:
        console.print(f"{rid}: submitted as job {job}", highlight=False)
    if wait and (out.jobs or out.queued):
        _print_report(results / s.name)
        if out.unfinished:
            err.print(
                f"error: {len(out.unfinished)} run(s) did not finish: {', '.join(out.unfinished)} "
                "(see slurm-*.out in their run dirs)"
            )
            return 1
    return 0


@app.command()
def status(
    suite: Path = typer.Argument(..., help="suite YAML"),
    results: Path = typer.Option(Path("results"), help="results root"),
) -> None:
    """Which runs of a suite are done, running, failed, damaged, resumable or not started, and what
    `lbbench run` will do with each that is not done."""
    from lbbench.launch.runner import describe, run_state, training_elsewhere
    from lbbench.store.files import run_dir
    from lbbench.store.summary import summary_or_damage

    s, runs = _load(suite, check_data=False)
    t = Table(title=f"{s.name}: {len(runs)} runs in {results / s.name}")
    for col in ("run id", "state", "status", "epochs", "best top-1", "note"):
        t.add_column(col)
    counts: dict[str, int] = {}
    for r in runs:
        rdir = run_dir(results, s.name, r.run_id)
        state = run_state(rdir, r)
        counts[state] = counts.get(state, 0) + 1
        summ, damage = summary_or_damage(rdir)
        best = summ.best_top1 if summ else None
        if state == "running":
            note = training_elsewhere(rdir) or "another lbbench run holds it"
        elif state == "done":
            note = f"{summ.preemptions} preemption(s)" if summ and summ.preemptions else ""
        else:
            why = damage or (summ.reason if summ and state == "failed" else None)
            note = "; ".join(x for x in (why, describe(rdir, r)) if x)
        t.add_row(
            r.run_id,
            state,
            summ.status if summ else "-",
            str(summ.epochs_run) if summ and summ.epochs_run is not None else "-",
            "-" if best is None else f"{best:.4f}",
            note,
        )
    Console(width=max(console.width, 140)).print(t)
    console.print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())))


@app.command()
def report(
    results_dir: Path = typer.Argument(..., help="a suite's results directory (or any tree of runs)"),
    format: str = typer.Option("md,csv,html", "--format", help="comma-separated: md, csv, html"),
) -> None:
    """Tables, figures and a text per method into RESULTS_DIR (report.md/.csv/.html, figures/)."""
    if not results_dir.is_dir():
        err.print(f"error: {results_dir} is not a directory")
        raise typer.Exit(2)
    formats = tuple(f.strip() for f in format.split(",") if f.strip())
    bad = set(formats) - {"md", "csv", "html"}
    if bad:
        err.print(f"error: unknown report format(s) {', '.join(sorted(bad))}; known: md, csv, html")
        raise typer.Exit(2)
    _print_report(results_dir, formats)


def _print_report(results_dir: Path, formats: tuple[str, ...] = ("md", "csv", "html")) -> None:
    from lbbench.report.build import build
    from lbbench.report.scaling import markdown as scaling_markdown
    from lbbench.report.scaling import steps_markdown
    from lbbench.report.tables import markdown

    out = build(results_dir, formats)
    console.print(markdown(out["table"]), highlight=False, soft_wrap=True)
    if any(len(sc.steps) > 1 for sc in out["scaling"]):  # a batch sweep: its answer
        console.print("best steps to target:\n" + steps_markdown(out["scaling"]), highlight=False, soft_wrap=True)
        console.print(scaling_markdown(out["scaling"]), highlight=False, soft_wrap=True)
    for method, text in out["texts"].items():
        console.print(f"{method}: {text}", highlight=False, soft_wrap=True)
    for d in out["damaged"]:
        err.print(f"[yellow]damaged:[/yellow] {d}", highlight=False, soft_wrap=True)
    console.print("written: " + ", ".join(str(p) for p in out["written"]), highlight=False, soft_wrap=True)


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks; results go to JSON files, never into tests.")
app.add_typer(bench_app, name="bench")


@bench_app.command("optim")
def bench_optim(
    model: str = typer.Option("resnet50", help="model name (lbbench/backends/torch/model.py)"),
    batch: int = typer.Option(16, help="images per step per worker"),
    steps: int = typer.Option(3, help="timed steps per method (at least one period of periodic work)"),
    methods: str | None = typer.Option(None, help="comma-separated methods (default: all)"),
    out: Path | None = typer.Option(None, help="result JSON (default: results/bench/optim-MODEL-bBATCH.json)"),
) -> None:
    """Full training-step time of every method relative to SGD (PyTorch, this machine's device)."""
    from lbbench.bench.optim import run as bench_run

    out = out or Path("results") / "bench" / f"optim-{model}-b{batch}.json"
    rc, res = bench_run(model, batch, steps, methods, out)
    if res is not None:
        t = Table(title=f"step time vs SGD: {model}, batch {batch}/worker ({out})")
        for col in ("method", "s/step", "x SGD"):
            t.add_column(col)
        for name, r in res["methods"].items():
            t.add_row(name, f"{r['step_s']:.3f}", f"{r['relative_to_sgd']:.2f}")
        console.print(t)
    raise typer.Exit(rc)


@bench_app.command("input")
def bench_input(
    data_dir: Path = typer.Argument(Path("data/digits"), help="ImageNet-layout folder (its train/ split is read)"),
    batch: int = typer.Option(64, min=1, help="images per batch (one worker's micro-batch)"),
    size: int = typer.Option(224, min=8, help="output image side"),
    threads: str = typer.Option("1,2", help="DALI thread counts, comma-separated (the first is the reference)"),
    augment: str = typer.Option("imagenet", help="imagenet (random crop, region-of-interest decode) | none"),
    batches: int = typer.Option(10, min=1, help="timed batches per round and thread count"),
    rounds: int = typer.Option(3, min=1, help="rounds; thread counts alternate within each"),
    decode: str = typer.Option(
        "roi",
        help="roi (the crop only, DALI's file reader over the epoch's list) | full (whole image, then crop) | "
        "roi-fed (roi, the paths fed through external_source) | first-epoch (roi-fed as a file's first use runs "
        "it: each file also checked in Python once) | reference (DALI's reference pipeline: its C++ file "
        "reader over the folder, then roi) | reference-same (that reference reading the files roi reads, in its "
        "order, with its crops: the same images); comma-separated",
    ),
    out: Path | None = typer.Option(None, help="result JSON (default: results/bench/input-DIR-bBATCH.json)"),
) -> None:
    """Images/s of the training input pipeline alone, per DALI thread count (CPU decoding)."""
    from lbbench.backends.dali_bench import run as bench_run
    from lbbench.store.files import write_json

    try:
        counts = [int(n) for n in threads.split(",")]
        assert counts and min(counts) >= 1
    except (ValueError, AssertionError):
        err.print(f"error: --threads {threads!r}: expected positive integers, comma-separated")
        raise typer.Exit(2) from None
    decodes = tuple(decode.split(","))
    known = ("roi", "full", "roi-fed", "first-epoch", "reference", "reference-same")
    if not set(decodes) <= set(known):
        err.print(f"error: --decode {decode!r}: expected some of {', '.join(known)}")
        raise typer.Exit(2)
    if augment not in ("imagenet", "none"):
        err.print(f"error: --augment {augment!r}: expected imagenet or none")
        raise typer.Exit(2)
    if not (data_dir / "train").is_dir():
        err.print(
            f"error: {data_dir}/train does not exist (an ImageNet-layout folder; `lbbench data digits` writes one)"
        )
        raise typer.Exit(2)
    out = out or Path("results") / "bench" / f"input-{data_dir.name}-b{batch}.json"
    res = bench_run(data_dir, batch, size, counts, augment, batches, rounds, decodes)
    write_json(out, res)
    t = Table(title=f"input pipeline: {data_dir}, batch {batch}, {size}x{size}, {augment} ({out})")
    for col in ("decode / DALI threads", "images/s", f"x {next(iter(res['results']))}"):
        t.add_column(col)
    for k, r in res["results"].items():
        t.add_row(k, f"{r['images_per_s']:,.0f}", f"{r['relative_to_first']:.2f}")
    console.print(t)


@bench_app.command("loop")
def bench_loop(
    framework: str = typer.Option("torch,tf", help="torch, tf or both, comma-separated"),
    model: str = typer.Option("resnet_tiny", help="model name"),
    batch: int = typer.Option(32, help="images per step"),
    rounds: int = typer.Option(3, min=1, help="rounds, each running both loops of every framework"),
    warmup: int = typer.Option(3, help="untimed warm-up steps"),
    iters: int = typer.Option(5, help="timed iterations"),
    batches_per_iter: int = typer.Option(4, help="steps per timed iteration"),
    out: Path | None = typer.Option(None, help="result JSON (default: results/bench/loop-MODEL-bBATCH.json)"),
) -> None:
    """lbbench's training loop (1 rank) against the plainest loop of the same framework on the same
    network, batch and threads, alternating in rounds: images/s of both and their ratio."""
    from lbbench.bench.loop import compare
    from lbbench.bench.throughput import BenchFailed
    from lbbench.store.files import write_json

    fws = framework.split(",")
    if not fws or any(f not in ("torch", "tf") for f in fws):
        err.print(f"error: --framework {framework}: expected torch, tf or torch,tf")
        raise typer.Exit(2)
    out = out or Path("results") / "bench" / f"loop-{model}-b{batch}.json"
    try:
        result = compare(fws, model, batch, rounds, warmup, iters, batches_per_iter)
    except BenchFailed as e:
        err.print(f"error: {e}")
        raise typer.Exit(1) from None
    write_json(out, result)
    t = Table(title=f"lbbench's loop vs a bare loop: {model}, batch {batch}, 1 rank ({out})")
    for col in ("framework", "bare img/s (per round)", "lbbench img/s (per round)", "ratio (median)"):
        t.add_column(col)
    for fw, r in result["frameworks"].items():
        t.add_row(
            fw,
            ", ".join(f"{x:,.0f}" for x in r["bare"]),
            ", ".join(f"{x:,.0f}" for x in r["lbbench"]),
            f"{r['median_ratio']:.2f} ({', '.join(f'{x:.2f}' for x in r['ratio'])})",
        )
    Console(width=max(console.width, 140)).print(t)


@bench_app.command("throughput")
def bench_throughput(
    model: str = typer.Option("resnet50", help="model name"),
    batch: int = typer.Option(32, help="images per step per worker"),
    np: str = typer.Option("1", "--np", help="worker counts, comma-separated (scaling efficiency vs the first)"),
    framework: str = typer.Option("torch", help="torch | tf"),
    data: str = typer.Option("synthetic", help="synthetic | dali"),
    data_dir: Path = typer.Option(Path("data/digits"), help="ImageNet-layout folder for --data dali"),
    amp: str = typer.Option("none", help="none | bf16 | fp16 (GPU only)"),
    channels_last: bool = typer.Option(False, help="NHWC tensors (GPU only)"),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model"),
    dali_device: str = typer.Option("cpu", help="cpu | gpu (DALI mixed decoding, GPU only)"),
    overlap_allreduce: bool = typer.Option(
        True, help="start the gradient allreduce during the backward pass (PyTorch, np > 1)"
    ),
    fusion_threshold_mb: int | None = typer.Option(
        None, min=1, help="Horovod's fusion threshold and the overlap's bucket size (MB)"
    ),
    warmup: int = typer.Option(2, help="untimed warm-up steps"),
    iters: int = typer.Option(5, help="timed iterations (the 95% interval is over these)"),
    batches_per_iter: int = typer.Option(2, help="steps per timed iteration"),
    out: Path | None = typer.Option(None, help="result JSON (default: results/bench/throughput-...json)"),
) -> None:
    """Training images/s per worker and in total (mean, 95% interval), the step-time decomposition,
    model FLOP utilisation, and scaling efficiency across --np; synthetic or DALI-fed data."""
    from pydantic import ValidationError

    from lbbench.bench.throughput import BenchFailed, sweep
    from lbbench.launch.commands import local_gpu_present
    from lbbench.spec import PerfSpec
    from lbbench.store.files import write_json

    if framework not in ("torch", "tf") or data not in ("synthetic", "dali"):
        err.print(f"error: --framework {framework} --data {data}: expected --framework torch|tf, --data synthetic|dali")
        raise typer.Exit(2)
    try:
        nps = [int(n) for n in np.split(",")]
        perf = PerfSpec(
            amp=amp,
            channels_last=channels_last,
            compile=compile,
            dali_device=dali_device,
            overlap_allreduce=overlap_allreduce,
            fusion_threshold_mb=fusion_threshold_mb,
        )
    except (ValueError, ValidationError) as e:
        err.print(f"error: {e}")
        raise typer.Exit(2) from None
    if perf.gpu_only() and not local_gpu_present():
        err.print(f"error: {', '.join(perf.gpu_only())} need a CUDA GPU and this machine has none (no nvidia-smi)")
        raise typer.Exit(2)
    if data == "dali" and not (data_dir / "train").is_dir():
        err.print(
            f"error: --data dali needs an ImageNet-layout folder; {data_dir}/train does not exist "
            "(`lbbench data digits` writes one)"
        )
        raise typer.Exit(2)
    out = out or Path("results") / "bench" / f"throughput-{framework}-{model}-b{batch}-{data}.json"
    try:
        result = sweep(
            framework, model, batch, nps, perf, data_dir if data == "dali" else None, warmup, iters, batches_per_iter
        )
    except BenchFailed as e:
        err.print(f"error: {e}")
        raise typer.Exit(1) from None
    write_json(out, result)
    runs = result["runs"]
    t = Table(title=f"training throughput: {model}, batch {batch}/worker, {data} data ({out})")
    for col in (
        "np",
        "img/s (images / time)",
        "per worker, per iteration",
        "total, per iteration",
        "scaling eff.",
        "s/step",
        "data",
        "compute",
        "allreduce (exposed / total)",
        "of exposed: slowest-rank wait",
        "optimizer",
        "TFLOP/s",
        "MFU",
    ):
        t.add_column(col)
    for r in runs:
        w, tot, d = r["images_per_s_per_worker"], r["images_per_s_total"], r["decomposition_s_per_step"]
        t.add_row(
            str(r["np"]),
            f"{r['images_per_s']:,.1f}",
            f"{w['mean']:,.1f} ± {w['ci95']:,.1f}",
            f"{tot['mean']:,.1f} ± {tot['ci95']:,.1f}",
            f"{r['scaling_efficiency']:.2f}",
            f"{r['step_s']:.3f}",
            f"{d.get('data', 0.0):.3f}",
            f"{d.get('compute', 0.0):.3f}",
            f"{d.get('allreduce', 0.0):.3f} / {r.get('allreduce_total_s_per_step', 0.0):.3f}",
            "-" if r.get("slowest_rank_wait_s_per_step") is None else f"{r['slowest_rank_wait_s_per_step']:.3f}",
            f"{d.get('optimizer', 0.0):.3f}",
            f"{r['achieved_tflops']:.3f}",
            "-" if r["mfu"] is None else f"{r['mfu']:.1%}",
        )
    Console(width=max(console.width, 160)).print(t)


@app.command()
def compare(
    new: Path = typer.Argument(..., help="results directory (or baseline JSON) to judge"),
    baseline: Path = typer.Argument(..., help="results directory or baseline JSON to compare with"),
    epochs_tolerance: float = typer.Option(0.25, help="relative rise of epochs to target allowed"),
    top1_tolerance: float = typer.Option(0.02, help="absolute fall of best top-1 allowed"),
    images_tolerance: float | None = typer.Option(
        None, help="relative fall of images/s allowed (default: not checked)"
    ),
    eval_every: int = typer.Option(1, help="epochs between evaluations of the suite"),
    match: str = typer.Option(
        "method,batch,framework", help="what makes two cells the same: method, batch and/or framework"
    ),
    time: bool = typer.Option(False, "--time", help="also show MLPerf's time to train and accelerator-hours"),
    time_tolerance: float | None = typer.Option(
        None, help="relative rise of MLPerf's time to train allowed (default: not judged)"
    ),
) -> None:
    """Exit 1 when a cell regressed beyond tolerance (CI gate), 2 when no cell is on both sides;
    prints what changed. Either side may hold runs imported with `lbbench import-mlperf`."""
    from lbbench.report.compare import NoMatch, Tolerance, cells_of
    from lbbench.report.compare import compare as do_compare

    for p in (new, baseline):
        if not p.exists():
            err.print(f"error: {p} does not exist")
            raise typer.Exit(2)
    keys = tuple(m.strip() for m in match.split(",") if m.strip())
    tol = Tolerance(epochs_tolerance, top1_tolerance, images_tolerance, eval_every, time_tolerance, time)
    try:
        rows, failed = do_compare(cells_of(new), cells_of(baseline), tol, keys)
    except (NoMatch, ValueError) as e:
        err.print(f"error: {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    t = Table(title=f"{new} vs {baseline}")
    for col in (f"cell ({'|'.join(keys)})", "verdict", "details"):
        t.add_column(col)
    for r in rows:
        style = "red" if r["verdict"] == "REGRESSED" else ("yellow" if r["verdict"].startswith("missing") else "")
        t.add_row(r["cell"], f"[{style}]{r['verdict']}[/{style}]" if style else r["verdict"], r["details"])
    Console(width=max(console.width, 160)).print(t)
    n_bad = sum(r["verdict"] == "REGRESSED" for r in rows)
    console.print(f"{n_bad} regressed cell(s)" if failed else "no regression")
    raise typer.Exit(1 if failed else 0)


@app.command("baseline")
def make_baseline(
    results_dir: Path = typer.Argument(..., help="a suite's results directory"),
    out: Path = typer.Option(..., help="baseline JSON to write (results/baselines/<suite>-<machine>.json)"),
    machine: str | None = typer.Option(None, help="machine class name (default: arch-Ncpu)"),
) -> None:
    """Write a compact baseline of a result set, for `lbbench compare` and the CI gate."""
    from lbbench.report.compare import baseline
    from lbbench.store.files import write_json

    write_json(out, baseline(results_dir, machine))
    console.print(f"written: {out}")


@app.command("export-mlperf")
def export_mlperf(
    results_dir: Path = typer.Argument(..., help="results directory (a suite's or any tree of runs)"),
    out: Path = typer.Argument(..., help="new directory for the MLPerf package"),
    cell: list[str] | None = typer.Option(
        None, help="METHOD:BATCH[:FRAMEWORK[:NP]] (repeatable; default: every cell with 5 seeds)"
    ),
    submitter: str = typer.Option("lbbench", help="submitter name in systems/*.json"),
    custom_rcps: str = typer.Option("auto", help="auto (above MLPerf's largest RCP batch) | always | never"),
) -> None:
    """MLPerf package (results/<system>/resnet/result_N.txt, systems/<system>.json), checked by
    mlperf_logging's package_checker and result_summarizer (ruleset 4.0.0)."""
    from lbbench.mlperf.export import ExportError, export

    if custom_rcps not in ("auto", "always", "never"):
        err.print(f"error: --custom-rcps {custom_rcps!r}: expected auto, always or never")
        raise typer.Exit(2)
    if not results_dir.is_dir():
        err.print(f"error: {results_dir} is not a directory")
        raise typer.Exit(2)
    try:
        res = export(results_dir, out, cell or [], submitter, custom_rcps)
    except ExportError as e:
        err.print(f"error: {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"package: {res['package']} ({', '.join(res['systems'])})", highlight=False, soft_wrap=True)
    if res["custom_rcps"]:
        console.print(f"custom RCPs: {res['custom_rcps']}", highlight=False, soft_wrap=True)
    for v in res["verdicts"]:
        mark = "[green]PASS[/green]" if v.passed else "[red]FAIL[/red]"
        console.print(f"{mark} {v.tool}: {v.message} (log: {v.log})", highlight=False, soft_wrap=True)
    raise typer.Exit(0 if all(v.passed for v in res["verdicts"]) else 1)


@app.command("import-mlperf")
def import_mlperf(
    paths: list[Path] = typer.Argument(..., help="MLPerf Training result files, system folders or whole submissions"),
    results: Path = typer.Option(Path("results"), help="results root (runs go to RESULTS/mlperf-v<round>/)"),
    ruleset: str | None = typer.Option(None, help="the round's ruleset, e.g. 4.0.0 (default: from the path)"),
) -> None:
    """Published MLPerf results as lbbench runs (checked by MLPerf's compliance checker,
    scored as MLPerf scores them), to report and compare beside your own."""
    from lbbench.mlperf.importer import ImportError_, import_paths

    try:
        systems = import_paths(paths, results, ruleset)
    except ImportError_ as e:
        err.print(f"error: {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    for s in systems:
        sc = s["score"]
        score = "no score" if sc.minutes is None else f"{sc.minutes:.{3 if sc.minutes >= 1 else 5}f} min"
        rcp = f", RCP factor {sc.rcp_factor:.4f} ({sc.rcp_verdict})" if s["division"] == "closed" else ""
        console.print(
            f"{s['system']} (ruleset {s['ruleset']}): {len(s['runs'])} runs, {sc.converged} converged; "
            f"MLPerf score {score}{rcp}" + (f"; {sc.note}" if sc.note else ""),
            highlight=False,
            soft_wrap=True,
        )
        for rdir in s["runs"]:
            console.print(f"  {rdir}", highlight=False, soft_wrap=True)


@data_app.command("digits")
def data_digits(out: Path = typer.Option(Path("data/digits"), help="output directory")) -> None:
    """scikit-learn's bundled UCI digits in the ImageNet folder layout (1,536 train / 261 val)."""
    from lbbench.data.digits import write_digits

    n_train, n_val = write_digits(out)
    console.print(f"{out}: {n_train} training and {n_val} validation images")


@data_app.command("synthetic-jpeg")
def data_synthetic_jpeg(
    out: Path = typer.Option(Path("data/synthetic-jpeg"), help="output directory (train/, and val/ when asked)"),
    classes: int = typer.Option(10, min=1),
    per_class: int = typer.Option(50, min=1),
    val_per_class: int = typer.Option(0, min=0, help="images per class in val/ (0: no val/ split)"),
    width: int = typer.Option(500, min=8),
    height: int = typer.Option(375, min=8),
) -> None:
    """Generated ImageNet-sized JPEGs in the ImageNet layout, for `lbbench bench input`."""
    from lbbench.data.synthetic_jpeg import write_synthetic_jpegs

    n = write_synthetic_jpegs(out, classes, per_class, width, height, val_per_class=val_per_class)
    console.print(f"{out}: {n} JPEGs of {width}x{height} in {classes} classes")


@data_app.command("check")
def data_check(
    directory: Path = typer.Argument(..., help="a data directory (train/ and val/) or any tree of images"),
    workers: int | None = typer.Option(None, min=1, help="decoding processes (default: every core)"),
) -> None:
    """Decode every image with Pillow, in parallel; name every file that does not decode (exit 1)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from lbbench.data.check import check_tree, image_files

    if not directory.is_dir():
        err.print(f"error: {directory} is not a directory")
        raise typer.Exit(2)
    total = len(image_files(directory))
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(f"decoding {directory}", total=total)
        n, bad = check_tree(directory, workers, progress=lambda k: bar.advance(task, k))
    for path, why in bad:
        console.print(f"{path}: {why}", highlight=False, soft_wrap=True)
    console.print(f"{n} images checked, {len(bad)} damaged", highlight=False)
    raise typer.Exit(1 if bad else 0)


def main() -> None:
    app(prog_name="lbbench")


if __name__ == "__main__":
    main()
