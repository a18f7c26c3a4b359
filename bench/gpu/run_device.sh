#!/usr/bin/env bash
# The GPU bench on the device machine (see bench/gpu/README.md for the sequence of calls).
#
#   bash bench/gpu/run_device.sh probe   # first call: the machine, and which pieces are here
#   bash bench/gpu/run_device.sh stage   # a call that only brings a piece: which pieces are here
#   bash bench/gpu/run_device.sh run     # last call: assemble, install, bench (BUDGET_S, default 300)
#   bash bench/gpu/run_device.sh run --cpu-only   # here, without a GPU (bench_gpu.py arguments follow)
#
# Writes under $OUT (at most 8 files come back): probe.txt, assemble.log, bench.log,
# gpu-results.json, summary.md. Runs from the repository root of the working-tree copy.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
REPO=$PWD
OUT=${OUT:-/tmp/gpu-out}
DEST=${DEST:-/tmp/gpu}
SITE=${SITE:-/tmp/site}
ROOT=${ROOT:-.gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
mode=${1:-stage}
shift || true

pieces() { "$PY" bench/gpu/bundle.py status --root "$ROOT"; }

if [ "$mode" = probe ]; then
  {
    echo "== $(date -Is) $(uname -srm), $(nproc) cores"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv 2>&1
    "$PY" -V; command -v "$PY"
    "$PY" -m pip list 2>/dev/null | grep -iE '^(torch|torchvision|onnx|onnxruntime|numpy|h5py|typer|pillow|scikit-learn|nvidia-cudnn-cu13|nvidia-cublas|nvidia-cuda-runtime|nvidia-cufft|nvidia-curand|nvidia-cuda-nvrtc|setuptools|pip) '
    "$PY" -c 'import onnxruntime as o; print("system onnxruntime", o.__version__, o.get_available_providers())'
    ls -d "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"/nvidia/*/lib 2>&1 | head -20
    command -v xz || echo "no xz binary (python's lzma unpacks)"
    df -h /tmp | tail -1; free -g | head -2
    git -C "$REPO" log --oneline -1 2>/dev/null
  } 2>&1 | tee "$OUT/probe.txt"
  pieces
  exit 0
fi

if [ "$mode" = stage ]; then
  pieces
  exit 0
fi

if [ "$mode" != run ]; then
  echo "usage: run_device.sh probe|stage|run [bench_gpu.py arguments]" >&2
  exit 2
fi

cpu_only=0
for a in "$@"; do [ "$a" = --cpu-only ] && cpu_only=1; done

if [ -z "${SKIP_ASSEMBLE:-}" ]; then
  t0=$(date +%s)
  "$PY" bench/gpu/bundle.py assemble --root "$ROOT" --dest "$DEST" --site "$SITE" 2>&1 | tee "$OUT/assemble.log"
  rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || { echo "assemble failed (rc $rc): see $OUT/assemble.log" >&2; exit "$rc"; }
  echo "assembled and installed in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/assemble.log"
fi

# featstore from the working tree, without installing it: the package from the repository root,
# the CLI (folder cli/, imported as featstore_cli) through a link.
mkdir -p "$DEST/shim"
ln -sfn "$REPO/cli" "$DEST/shim/featstore_cli"
export PYTHONPATH="$SITE:$REPO:$DEST/shim${PYTHONPATH:+:$PYTHONPATH}"
# the CUDA 13 and cuDNN 9 libraries of PyTorch's nvidia-* wheels, for onnxruntime-gpu's CUDA provider
libs=$("$PY" - <<'EOF'
import glob, os, sysconfig
dirs = set()
for base in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
    for lib in glob.glob(os.path.join(base, "nvidia", "**", "lib*.so*"), recursive=True):
        dirs.add(os.path.dirname(lib))
print(":".join(sorted(dirs)))
EOF
)
[ -n "$libs" ] && export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FEATSTORE_OFFLINE=1 ORT_DISABLE_TELEMETRY=1

"$PY" -c 'import onnxruntime as o; print("onnxruntime", o.__version__, "from", o.__file__); print("get_available_providers:", o.get_available_providers())' 2>&1 | tee -a "$OUT/assemble.log"

MODELS=${MODELS:-$DEST/models}
PHOTOS=${PHOTOS:-$DEST/photos}
args=(--models "$MODELS" --photos "$PHOTOS" --out "$OUT" --work "$DEST/work" --budget-s "${BUDGET_S:-300}")
[ "$cpu_only" = 1 ] && args+=(--workers "$(nproc)")
"$PY" bench/gpu/bench_gpu.py "${args[@]}" "$@"
