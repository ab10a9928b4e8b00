"""Check that a GPU environment's requirement set installs ONE CUDA: resolve it with pip (``pip
install --dry-run --report``, from PyPI, as the images install it; pip reads each wheel's
metadata, nothing large is downloaded) and fail, naming the packages, if the resolved set
spans two CUDA majors or holds two builds of one library (e.g. nvidia-cudnn-cu12 and
nvidia-cudnn-cu13: both install nvidia/cudnn/lib/libcudnn*.so.9, as both NCCL wheels install
nvidia/nccl/lib/libnccl.so.2, so whichever installs last replaces the other's).

    python tools/gpu_stack.py torch|tf          # a GPU environment of tools/bootstrap.sh
    python tools/gpu_stack.py --requirement 'torch==2.13.0' --requirement 'tensorflow[and-cuda]==2.18.1'

Exit 0: one CUDA; 1: the problems, one per line; 2: pip could not resolve the set.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parents[1]
INDEX = "https://pypi.org/simple"

# NVIDIA's CUDA 13 wheels dropped the -cu13 suffix (nvidia-cublas 13.1, nvidia-cuda-runtime
# 13.0): for these the version's major IS the CUDA major. (cufft, curand, cusolver, cusparse,
# cufile keep their own version numbers; cuda-toolkit, which pins them, carries the major.)
VERSION_IS_CUDA_MAJOR = {
    "cuda-toolkit",
    "cuda-bindings",
    "nvidia-cuda-runtime",
    "nvidia-cuda-nvrtc",
    "nvidia-cuda-cupti",
    "nvidia-cuda-nvcc",
    "nvidia-cublas",
    "nvidia-nvjitlink",
    "nvidia-nvtx",
}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def cuda_major(name: str, version: str) -> int | None:
    """The CUDA major a distribution is built for, or None when it names none."""
    name = canonical(name)
    if m := re.search(r"-cu(\d+)$", name):  # nvidia-cudnn-cu12
        return int(m.group(1))
    if m := re.search(r"-cuda(\d\d)\d$", name):  # nvidia-dali-cuda120, nvidia-dali-tf-plugin-cuda130
        return int(m.group(1))
    if name in VERSION_IS_CUDA_MAJOR:
        return int(version.split(".")[0])
    return None


def library(name: str) -> str:
    """The library a CUDA distribution installs, whatever CUDA it is built for."""
    return re.sub(r"-cu(da)?\d+$", "", canonical(name))


def problems(installs: list[tuple[str, str]]) -> list[str]:
    """(name, version) pairs of one environment -> what makes it hold more than one CUDA."""
    majors: dict[int, list[str]] = defaultdict(list)
    copies: dict[str, list[str]] = defaultdict(list)
    for name, version in installs:
        major = cuda_major(name, version)
        if major is None:
            continue
        majors[major].append(f"{canonical(name)}=={version}")
        copies[library(name)].append(canonical(name))
    out = []
    if len(majors) > 1:
        listed = "; ".join(f"CUDA {m}: {', '.join(sorted(p))}" for m, p in sorted(majors.items()))
        out.append(f"two CUDA majors in one environment - {listed}")
    for lib, names in sorted(copies.items()):
        if len(set(names)) > 1:
            out.append(f"two builds of {lib}: {', '.join(sorted(set(names)))}")
    return out


def environment_requirements(env: str) -> list[str]:
    """The pinned requirements of lbbench's environment ``env`` (torch | tf): its extras in
    setup.cfg ([lbbench:build] env-<env>) plus lbbench's own install_requires."""
    c = configparser.ConfigParser()
    c.read(ROOT / "setup.cfg")
    lines = c["options"]["install_requires"].splitlines()
    for extra in c["lbbench:build"][f"env-{env}"].split(","):
        lines += c["options.extras_require"][extra].splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def resolve(requirements: list[str], index: str = INDEX) -> list[tuple[str, str]]:
    """What pip would install for ``requirements`` into an empty environment, from ``index`` alone
    (machine-local pip configuration - extra indexes, local wheels, constraints - is ignored)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
        cmd += ["--disable-pip-version-check", "--only-binary", ":all:", "--index-url", index]
        p = subprocess.run([*cmd, "--report", str(report), *requirements], env=env, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"pip could not resolve {' '.join(requirements)}:\n{p.stderr.strip()[-3000:]}")
        installs = json.loads(report.read_text())["install"]
    return [(i["metadata"]["name"], i["metadata"]["version"]) for i in installs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("env", nargs="?", choices=("torch", "tf"), help="an environment of tools/bootstrap.sh")
    ap.add_argument("--requirement", action="append", default=[], help="check these requirements instead")
    ap.add_argument("--index", default=INDEX)
    args = ap.parse_args()
    requirements = args.requirement or environment_requirements(args.env or "torch")
    try:
        installs = resolve(requirements, args.index)
    except RuntimeError as e:
        print(f"gpu_stack: {e}", file=sys.stderr)
        sys.exit(2)
    majors = sorted({m for n, v in installs if (m := cuda_major(n, v)) is not None})
    report("gpu_stack", problems(installs), f"{len(installs)} distributions, CUDA majors {majors}: ", "one CUDA")


def report(tool: str, found: list[str], headline: str, ok: str) -> NoReturn:
    """Print each problem (stderr) and the verdict, then exit 1 if there were any, else 0."""
    for f in found:
        print(f"{tool}: {f}", file=sys.stderr)
    print(f"{tool}: {headline}" + ("FAILED" if found else ok))
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
