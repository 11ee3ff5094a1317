#!/usr/bin/env bash
# The GPU run, on a machine with an NVIDIA GPU, CUDA 13 (nvcc, compute-sanitizer), and cuDNN 9 / cuBLAS 13
# and PyTorch in a Python environment; no .NET SDK and no network needed.
#
#   bash gpu-run.sh [gpu.tar.xz | unpacked folder] [RESULTS_DIR] [--sim]
#
# It unpacks the build made by scripts/gpu-pack.sh, finds the CUDA libraries (MOBIUS_CUDA_PATH, else
# the nvidia packages of the Python that has torch), builds the kernels with nvcc as well as checking the
# committed PTX, runs the test suite on the GPU (the kernel tests also under compute-sanitizer memcheck
# and racecheck), the serial vs parallel comparison, the kernel workloads and the PyTorch peer, and
# writes RESULTS_DIR/gpu-run.md (with date, card and commit) plus the JSON of each measurement.
# --sim rehearses everything on the simulated driver (no GPU needed; tools that need one are skipped).
set -uo pipefail
src=${1:-gpu.tar.xz}
results=${2:-results}
sim=0; [ "${3:-}" = "--sim" ] && sim=1
mkdir -p "$results"
results=$(cd "$results" && pwd)
if [ -f "$src" ]; then
  work=$(mktemp -d); tar -C "$work" -xJf "$src"; root="$work/gpu"
else
  root=$(cd "$src" && pwd)
fi
bin="$root/bin"
md="$results/gpu-run.md"
py=${PYTHON:-python3}
step() { printf '\n## %s\n\n' "$*" >> "$md"; echo "== $*"; }
run() { echo "\$ $*" >> "$md"; echo '```' >> "$md"; "$@" >> "$md" 2>&1; local rc=$?; echo '```' >> "$md"; echo "exit $rc" >> "$md"; return $rc; }

if [ $sim = 1 ]; then
  export MOBIUS_CUDA=sim MOBIUS_SIM_LIBRARY="$bin/libmobius_simcuda.so"
  card="simulated (rehearsal, no GPU)"
else
  export MOBIUS_CUDA=real
  if [ -z "${MOBIUS_CUDA_PATH:-}" ]; then
    MOBIUS_CUDA_PATH=$($py -c "import nvidia, os; print(os.path.dirname(nvidia.__path__[0]) if hasattr(nvidia, '__path__') else '')" 2>/dev/null || true)
    export MOBIUS_CUDA_PATH
  fi
  card=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1)
fi

{
  echo "# GPU run"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- card: ${card:-unknown}"
  echo "- build: $(tr '\n' ';' < "$root/BUILD")"
  echo "- CUDA libraries from: ${MOBIUS_CUDA_PATH:-system search path}"
} > "$md"

step "mobius info"
run "$bin/mobius" info

step "kernels: committed PTX fresh, nvcc builds every source"
if command -v nvcc >/dev/null && [ $sim = 0 ]; then
  run bash "$root/kernels/build-ptx.sh" --check
else
  echo "nvcc not found or rehearsal: skipped" >> "$md"
fi

step "test suite on the GPU (cuda backend classes)"
run "$bin/Mobius.Tests" -class "*.Cuda*"

step "kernel tests under compute-sanitizer"
if command -v compute-sanitizer >/dev/null && [ $sim = 0 ]; then
  for tool in memcheck racecheck; do
    run compute-sanitizer --tool $tool --error-exitcode 1 "$bin/Mobius.Tests" -class "Mobius.Tests.Engine.CudaOpGradientTests"
  done
else
  echo "compute-sanitizer not found or rehearsal: skipped" >> "$md"
fi

step "serial vs parallel (mobius compare)"
for spec in "tiny 60 4" "small 20 0" "ms256 8 0"; do
  set -- $spec
  [ $sim = 1 ] && [ "$1" != tiny ] && continue
  steps=$2; samples=$3; [ $sim = 1 ] && { steps=2; samples=0; }
  run "$bin/mobius" compare --config "$1" --backend cuda --steps "$steps" --samples "$samples" --seed 1 --json --out "$results/compare-$1"
done

step "kernel workloads (mobius profile)"
for k in temporal_attention temporal_conv group_norm attention conv2d gemm; do
  for d in fwd bwd; do
    dir=$d; case $k in temporal_conv|conv2d) [ $d = bwd ] && dir=bwd_data;; gemm) [ $d = bwd ] && continue;; esac
    iters=200; [ $sim = 1 ] && iters=1
    run "$bin/mobius" profile --kernel $k --direction $dir --backend cuda --iterations $iters
  done
done

step "PyTorch peer (same model, both topologies)"
if $py -c "import torch" 2>/dev/null; then
  device=cuda; [ $sim = 1 ] && device=cpu
  for c in tiny; do
    $py "$root/peers/mobius_torch.py" bench --device $device --config $c --steps 10 > "$results/peer-$c.json" 2>> "$md"
    cat "$results/peer-$c.json" >> "$md"
  done
else
  echo "python with torch not found: skipped" >> "$md"
fi

echo "wrote $md"
