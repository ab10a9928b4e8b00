"""The `lbbench` command (typer): thin — parse, call, turn known errors into exit status 2."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="lbbench: large-batch training benchmarks (ResNet-50 / ImageNet) through Horovod.")
data_app = typer.Typer(no_args_is_help=True, help="Write the bundled data sets in the ImageNet layout.")
app.add_typer(data_app, name="data")
console = Console()
err = Console(stderr=True)


def _load(path: Path, check_data: bool, np: Optional[int] = None):
    from lbbench.suite import expand, load_suite
    from lbbench.yamlpos import SuiteError
    try:
        suite = load_suite(path)
        if np is not None:
            suite.cfg.matrix.workers = [np]
        runs, warnings = expand(suite, check_data=check_data)
    except SuiteError as e:
        err.print(f"[red]error:[/red] {e}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    for w in warnings:
        err.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)
    return suite, runs


@app.command()
def plan(suite: Path = typer.Argument(..., help="suite YAML"),
         only: Optional[str] = typer.Option(None, help="glob on run id or method label"),
         np: Optional[int] = typer.Option(None, "--np", help="override the workers axis")):
    """Print the runs a suite expands to."""
    from lbbench.runner import select
    s, runs = _load(suite, check_data=False, np=np)
    runs = select(runs, only)
    t = Table(title=f"{s.name}: {len(runs)} runs ({s.file})")
    for col in ("run id", "method", "global batch", "np x local x accum", "bn span", "framework", "seed", "peak lr", "division"):
        t.add_column(col)
    for r in runs:
        t.add_row(r.run_id, r.label, str(r.global_batch), f"{r.np} x {r.local_batch} x {r.accum}", str(r.bn_span),
                  r.framework, str(r.seed), f"{r.lr.peak_lr:g}", r.division)
    Console(width=max(console.width, 160)).print(t)


@app.command()
def run(suite: Path = typer.Argument(..., help="suite YAML"),
        only: Optional[str] = typer.Option(None, help="glob on run id or method label"),
        np: Optional[int] = typer.Option(None, "--np", help="override the workers axis"),
        launcher: str = typer.Option("local", help="local (horovodrun --gloo) | mpirun"),
        results: Path = typer.Option(Path("results"), help="results root"),
        timeout: Optional[float] = typer.Option(None, help="per-run time limit in seconds")):
    """Run every cell of a suite (completed runs are skipped)."""
    from lbbench.launch import LAUNCHERS
    from lbbench.runner import run_all, select
    if launcher not in LAUNCHERS:
        err.print(f"error: unknown launcher {launcher!r}; known: {', '.join(LAUNCHERS)}")
        raise typer.Exit(2)
    s, runs = _load(suite, check_data=True, np=np)
    runs = select(runs, only)
    if not runs:
        err.print(f"error: no run of {suite} matches --only {only!r}")
        raise typer.Exit(2)
    not_impl = sorted({r.framework for r in runs} - _frameworks())
    if not_impl:
        err.print(f"error: framework(s) {', '.join(not_impl)} have no backend yet; use --only to select torch runs")
        raise typer.Exit(2)
    summaries = run_all(runs, results, launcher, console, timeout)
    _print_report(results / s.name)
    bad = [x for x in summaries if x and x["status"] in ("failed", "timeout")]
    raise typer.Exit(1 if bad else 0)


def _frameworks() -> set[str]:
    import lbbench.backends
    here = Path(lbbench.backends.__file__).parent
    return {fw for fw in ("torch", "tf") if (here / fw / "train.py").exists()}


@app.command()
def status(suite: Path = typer.Argument(..., help="suite YAML"),
           results: Path = typer.Option(Path("results"), help="results root")):
    """Which runs of a suite are done, running, failed, resumable or not started."""
    from lbbench.runner import run_state
    from lbbench.store import read_summary, run_dir
    s, runs = _load(suite, check_data=False)
    t = Table(title=f"{s.name}: {len(runs)} runs in {results / s.name}")
    for col in ("run id", "state", "status", "epochs", "best top-1", "note"):
        t.add_column(col)
    counts: dict[str, int] = {}
    for r in runs:
        rdir = run_dir(results, s.name, r.run_id)
        state = run_state(rdir, r)
        counts[state] = counts.get(state, 0) + 1
        summ = read_summary(rdir) or {}
        best = summ.get("best_top1")
        note = summ.get("reason", "") if state == "failed" else (
            f"{summ.get('preemptions')} preemption(s)" if summ.get("preemptions") else "")
        t.add_row(r.run_id, state, summ.get("status", "-"), str(summ.get("epochs_run", "-")),
                  "-" if best is None else f"{best:.4f}", note)
    Console(width=max(console.width, 140)).print(t)
    console.print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())))


@app.command()
def report(results_dir: Path = typer.Argument(..., help="a suite's results directory (or any tree of runs)")):
    """Write report.md and report.csv into RESULTS_DIR and print the table."""
    if not results_dir.is_dir():
        err.print(f"error: {results_dir} is not a directory")
        raise typer.Exit(2)
    _print_report(results_dir)


def _print_report(results_dir: Path) -> None:
    from lbbench.report.tables import collect, markdown, rows, to_csv
    from lbbench.store import atomic_write_text
    table = rows(collect(results_dir))
    md = markdown(table)
    atomic_write_text(results_dir / "report.md", f"# lbbench report: {results_dir}\n\n" + md)
    atomic_write_text(results_dir / "report.csv", to_csv(table))
    console.print(md, highlight=False, soft_wrap=True)
    console.print(f"written: {results_dir / 'report.md'}, {results_dir / 'report.csv'}")


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks; results go to JSON files, never into tests.")
app.add_typer(bench_app, name="bench")


@bench_app.command("optim")
def bench_optim(model: str = typer.Option("resnet50", help="model name (lbbench/backends/torch/model.py)"),
                batch: int = typer.Option(16, help="images per step per worker"),
                steps: int = typer.Option(3, help="timed steps per method (at least one period of periodic work)"),
                methods: Optional[str] = typer.Option(None, help="comma-separated methods (default: all)"),
                out: Optional[Path] = typer.Option(None, help="result JSON (default: results/bench/optim-MODEL-bBATCH.json)")):
    """Full training-step time of every method relative to SGD (PyTorch, this machine's device)."""
    import subprocess
    out = out or Path("results") / "bench" / f"optim-{model}-b{batch}.json"
    cmd = [sys.executable, "-m", "lbbench.backends.torch.bench", "optim", "--model", model, "--batch", str(batch),
           "--steps", str(steps), "--out", str(out)] + (["--methods", methods] if methods else [])
    rc = subprocess.call(cmd)
    if rc == 0:
        import json
        res = json.loads(out.read_text())
        t = Table(title=f"step time vs SGD: {model}, batch {batch}/worker ({out})")
        for col in ("method", "s/step", "x SGD"):
            t.add_column(col)
        for name, r in res["methods"].items():
            t.add_row(name, f"{r['step_s']:.3f}", f"{r['relative_to_sgd']:.2f}")
        console.print(t)
    raise typer.Exit(rc)


@data_app.command("digits")
def data_digits(out: Path = typer.Option(Path("data/digits"), help="output directory")):
    """scikit-learn's bundled UCI digits in the ImageNet folder layout (1,536 train / 261 val)."""
    from lbbench.digits import write_digits
    n_train, n_val = write_digits(out)
    console.print(f"{out}: {n_train} training and {n_val} validation images")


def main() -> None:
    app(prog_name="lbbench")


if __name__ == "__main__":
    sys.exit(main())
