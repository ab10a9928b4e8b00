"""`lbbench export-mlperf`: a result set as an MLPerf Training submission package, checked by
MLPerf's own tools (docs/mlperf.md, "Packages").

    OUT/results/<system>/resnet/result_{0..4}.txt   the mllog.txt of five seeds of one cell
    OUT/systems/<system>.json                       the system description
    OUT/rcps/custom_rcps_resnet.json                above MLPerf's largest RCP batch: MLPerf's
                                                    RCPs plus lbbench's own for the cell

One system per exported cell (method, global batch, framework, np), so several cells can share
one package. The checkers run as subprocesses in OUT (they write their logs into the working
directory) and their verdicts are parsed from their output: they do not set an exit status.
Framework-free: reads only the files a run leaves.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from lbbench.mlperf.rcps import RULESET, largest_rcp_batch, rcp_records
from lbbench.spec import steps_per_epoch
from lbbench.store.files import iter_run_dirs, write_json
from lbbench.store.summary import RunSummary, summary_or_damage

RESULTS_PER_CELL = 5  # mlperf_logging.benchmark_meta: resnet needs exactly 5 result files
AVAILABILITY = "Research, Development, or Internal (RDI)"


class ExportError(Exception):
    pass


@dataclass
class Cell:
    label: str
    global_batch: int
    framework: str
    np: int
    runs: list[tuple[Path, RunSummary]] = field(default_factory=list)  # (run dir, summary), by seed

    @property
    def name(self) -> str:
        return f"{self.label}:{self.global_batch}:{self.framework}:{self.np}"

    @property
    def system(self) -> str:
        if _published(self):  # exported under the name it was published with
            from lbbench.mlperf.importer import provenance

            return str(provenance(self.runs[0][0])["system"])
        return re.sub(
            r"[^A-Za-z0-9_.-]", "_", f"lbbench_{self.label}_b{self.global_batch}_{self.framework}_np{self.np}"
        )


@dataclass
class CheckerVerdict:
    tool: str
    passed: bool
    log: Path
    message: str


def _published(c: Cell) -> bool:
    from lbbench.mlperf.importer import is_published

    return bool(c.runs) and is_published(c.runs[0][0])


def find_cells(results: Path) -> list[Cell]:
    """Finished runs with a log, grouped by cell."""
    groups: dict[tuple[str, int, str, int], Cell] = {}
    for rdir in iter_run_dirs(results):
        s, _ = summary_or_damage(rdir)
        if s is None or not s.done or not (rdir / "mllog.txt").exists():
            continue
        key = (s.label, s.global_batch, s.framework, s.np)
        groups.setdefault(key, Cell(*key)).runs.append((rdir, s))
    for c in groups.values():
        c.runs.sort(key=lambda r: r[1].seed)
    return sorted(groups.values(), key=lambda c: (c.label, c.global_batch, c.framework, c.np))


def select_cells(cells: list[Cell], wanted: list[str]) -> list[Cell]:
    """``METHOD:BATCH[:FRAMEWORK[:NP]]`` patterns; none: every cell with enough seeds."""
    if not wanted:
        return [c for c in cells if len(c.runs) >= RESULTS_PER_CELL]
    out = []
    for w in wanted:
        parts = w.split(":")
        if len(parts) < 2 or len(parts) > 4 or not parts[1].isdigit():
            raise ExportError(f"--cell {w!r}: expected METHOD:BATCH[:FRAMEWORK[:NP]], e.g. lars:3264:torch")
        hits = [
            c
            for c in cells
            if c.label == parts[0]
            and c.global_batch == int(parts[1])
            and (len(parts) < 3 or c.framework == parts[2])
            and (len(parts) < 4 or str(c.np) == parts[3])
        ]
        if not hits:
            known = ", ".join(c.name for c in cells) or "none"
            raise ExportError(f"--cell {w!r} matches no finished cell; cells with logs: {known}")
        out += [c for c in hits if c not in out]
    return out


def export(
    results: Path, out: Path, wanted: list[str] | None = None, submitter: str = "lbbench", custom_rcps: str = "auto"
) -> dict[str, Any]:
    """Writes the package and runs the checkers; returns what was written and the verdicts."""
    cells = select_cells(find_cells(results), wanted or [])
    if not cells:
        raise ExportError(
            f"no cell under {results} has {RESULTS_PER_CELL} finished runs with logs "
            "(MLPerf scores the olympic mean of 5 seeds)"
        )
    short = [c for c in cells if len(c.runs) < RESULTS_PER_CELL]
    if short:
        raise ExportError("MLPerf needs 5 runs per cell; " + "; ".join(f"{c.name} has {len(c.runs)}" for c in short))
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not empty; choose a new directory (nothing was overwritten)")
    limit = largest_rcp_batch()
    descs = {c.name: system_description(c, submitter) for c in cells}  # refuses before writing anything
    rcp_cells = [
        c
        for c in cells
        if not _published(c) and (custom_rcps == "always" or (custom_rcps == "auto" and c.global_batch > limit))
    ]
    for c in cells:
        bench = out / "results" / c.system / "resnet"
        bench.mkdir(parents=True)
        for i, (rdir, _) in enumerate(c.runs[:RESULTS_PER_CELL]):
            shutil.copyfile(rdir / "mllog.txt", bench / f"result_{i}.txt")
        write_json(out / "systems" / f"{c.system}.json", descs[c.name])
    rcp_file = out / "rcps" / "custom_rcps_resnet.json"
    if rcp_cells:
        write_json(rcp_file, custom_rcp_records(rcp_cells))
    verdicts = [package_checker(out, bypass_rcp=bool(rcp_cells)), result_summarizer(out)]
    for c in rcp_cells:
        verdicts.append(
            rcp_checker(out / "results" / c.system / "resnet", rcp_file, out / f"rcp_checker_{c.system}.log")
        )
    return dict(
        cells=[c.name for c in cells],
        systems=[c.system for c in cells],
        package=out,
        custom_rcps=rcp_file if rcp_cells else None,
        verdicts=verdicts,
    )


def system_description(c: Cell, submitter: str) -> dict[str, Any]:
    """The system description, from the runs' own records: a published run's is the one it was
    imported with; an lbbench run's is built from what its summary recorded (accelerator type
    and count, nodes, framework) with every field the 4.0.0 checker requires. Runs without such
    a record (from before lbbench recorded it) are refused: the exporting host is not the
    machine the runs used."""
    from lbbench.mlperf.importer import is_published, provenance

    rdir, s = c.runs[0]
    if is_published(rdir):
        desc = provenance(rdir).get("system_description")
        if not desc:
            raise ExportError(f"{c.name}: the imported runs came without a systems/*.json; nothing to export")
        return dict(desc)
    missing = [str(d) for d, r in c.runs if not r.accelerator or not r.accelerators]
    if missing:
        raise ExportError(
            f"{c.name}: runs without a record of their accelerators (trained before lbbench recorded "
            f"them): {', '.join(missing[:3])}; re-run them, or export other cells"
        )
    nodes = s.nodes or 1
    divisions = {r.division for _, r in c.runs}
    return {
        "submitter": submitter,
        "division": "closed" if divisions == {"closed"} else "open",
        "status": AVAILABILITY,
        "system_name": c.system,
        "number_of_nodes": str(nodes),
        "host_processors_per_node": "1",
        "host_processor_model_name": s.host_cpu or "not recorded",
        "host_processor_core_count": "",
        "host_processor_vcpu_count": str(s.host_cpus or ""),
        "host_processor_frequency": "",
        "host_processor_caches": "",
        "host_processor_interconnect": "",
        "host_memory_capacity": "",
        "host_storage_type": "",
        "host_storage_capacity": "",
        "host_networking": "",
        "host_networking_topology": "",
        "host_memory_configuration": "",
        "accelerators_per_node": str(max(1, (s.accelerators or 1) // nodes)),
        "accelerator_model_name": s.accelerator,
        "accelerator_host_interconnect": "",
        "accelerator_frequency": "",
        "accelerator_on-chip_memories": "",
        "accelerator_memory_configuration": "",
        "accelerator_memory_capacity": "",
        "accelerator_interconnect": "",
        "accelerator_interconnect_topology": "",
        "cooling": "",
        "hw_notes": f"from the runs' records: {s.accelerators} Horovod worker(s) on {nodes} node(s)",
        "framework": f"{c.framework} (lbbench {_version('lbbench')}, horovod {_version('horovod')})",
        "other_software_stack": f"python {platform.python_version()}, nvidia-dali {_version('nvidia-dali-cuda120')}",
        "operating_system": platform.system(),
        "sw_notes": f"lbbench method {c.label}, global batch {c.global_batch}",
    }


def custom_rcp_records(cells: list[Cell]) -> dict[str, Any]:
    """MLPerf's own RCPs plus one record per cell in the same schema, from every converged seed
    of the cell (not only the five exported): usable with ``--custom_rcps``."""
    records = dict(rcp_records())
    for c in cells:
        epochs = [s.epochs_to_target for _, s in c.runs if s.status == "success"]
        if len(epochs) < 3:
            raise ExportError(f"{c.name}: an RCP needs at least 3 converged runs (olympic mean), has {len(epochs)}")
        spec = yaml.safe_load((c.runs[0][0] / "run.yaml").read_text())
        lr, hp = spec["lr"], spec["hparams"]
        steps = steps_per_epoch(spec["data"]["train_samples"], c.global_batch)
        records[f"resnet_lbbench_{c.label}_{c.global_batch}"] = {
            "Benchmark": "resnet",
            "Creator": "lbbench",
            "When": "lbbench export-mlperf",
            "Platform": c.system,
            "BS": c.global_batch,
            "Hyperparams": {
                "optimizer": spec["method"],
                "opt_base_learning_rate": lr["peak_lr"],
                "opt_learning_rate_warmup_epochs": lr["warmup_epochs"],
                "opt_momentum": hp.get("momentum"),
                "opt_weight_decay": hp.get("weight_decay"),
                "opt_learning_rate_decay_steps": round((lr["train_epochs"] - lr["warmup_epochs"]) * steps) + 1,
                "model_bn_span": spec["bn_span"],
            },
            "Epochs to converge": sorted(epochs),
        }
    return records


def _run_tool(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def package_checker(pkg: Path, bypass_rcp: bool) -> CheckerVerdict:
    """MLPerf's package checker; with custom RCPs written, its built-in RCP test (which has no
    record above the largest batch) is bypassed and rcp_checker runs on lbbench's records."""
    log = pkg / "package_checker.log"
    p = _run_tool(
        "mlperf_logging.package_checker",
        [str(pkg.resolve()), "training", RULESET, "--log_output", str(log.resolve())]
        + (["--rcp-bypass"] if bypass_rcp else []),
        pkg,
    )
    text = p.stdout + p.stderr
    ok = p.returncode == 0 and "PACKAGE CHECKER FOUND NO ERRORS" in text
    errors = [ln for ln in text.splitlines() if ln.startswith("ERROR")]
    return CheckerVerdict("package_checker", ok, log, "no errors" if ok else "; ".join(errors[:5]) or text[-500:])


def result_summarizer(pkg: Path) -> CheckerVerdict:
    csv = pkg / "summary.csv"
    p = _run_tool(
        "mlperf_logging.result_summarizer", [str(pkg.resolve()), "training", RULESET, "--csv", str(csv.resolve())], pkg
    )
    log = pkg / "result_summarizer.log"
    log.write_text(p.stdout + p.stderr)
    ok = p.returncode == 0 and csv.exists()
    return CheckerVerdict("result_summarizer", ok, log, f"wrote {csv.name}" if ok else (p.stderr or p.stdout)[-500:])


def rcp_checker(bench_dir: Path, rcp_file: Path, log: Path) -> CheckerVerdict:
    p = _run_tool(
        "mlperf_logging.rcp_checker",
        [
            str(bench_dir.resolve()),
            "--rcp_usage",
            "training",
            "--rcp_version",
            RULESET,
            "--custom_rcps",
            str(rcp_file.resolve()),
            "--log_output",
            str(log.resolve()),
        ],
        log.parent,
    )
    text = p.stdout + p.stderr
    ok = p.returncode == 0 and "RCP test PASSED" in text
    line = next((ln for ln in text.splitlines() if "RCP test" in ln), text[-300:])
    return CheckerVerdict(f"rcp_checker ({bench_dir.parent.name})", ok, log, line.strip())


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"
