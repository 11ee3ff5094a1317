#!/usr/bin/env bash
# The GPU run, on a machine with an NVIDIA GPU, CUDA 13 (nvcc, compute-sanitizer), and cuDNN 9 / cuBLAS 13
# and PyTorch in a Python environment; no .NET SDK and no network needed.
#
#   bash gpu-run.sh [gpu.tar.xz | unpacked folder] [RESULTS_DIR] [--sim]
#
# MOBIUS_GPU_BUDGET_S (seconds, default 3600) bounds the whole run: each step gets its own cap and never
# more than what is left, so a hang in one step still leaves a report of all the others. Steps run in
# order of what they tell: the device tests first, the comparison, the kernels, the peer, the sanitizers.
#
# It unpacks the build made by scripts/gpu-pack.sh, finds the CUDA libraries (MOBIUS_CUDA_PATH, else
# the nvidia packages of the Python that has torch), builds the kernels with nvcc as well as checking the
# committed PTX, runs the test suite on the GPU (the kernel tests also under compute-sanitizer memcheck
# and racecheck), the serial vs parallel comparison, the kernel workloads and the PyTorch peer, and
# writes RESULTS_DIR/gpu-run.md (with date, card and commit) plus the JSON of each measurement.
# --sim rehearses everything on the simulated driver (no GPU needed; tools that need one are skipped; tiny's parts
# run on micro).
# MOBIUS_GPU_PARTS (default: all) picks the parts, in this order whatever the list's: info tests compare
# streams bf16 kernel-conv tf32 epilogue recompute budget motion finetune profile workbench peer nvcc ranks sanitizer. MOBIUS_GPU_CONFIGS (default "tiny small ms256")
# picks the configs that compare and the peer measure. A short lease runs the parts that answer its question.
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
# The pack leaves out the weights; they come from the repository this script sits in (or MOBIUS_REPO).
repo=${MOBIUS_REPO:-$(cd "$(dirname "$0")/.." && pwd)}
for pair in "Fixtures:tests/Mobius.Tests/Fixtures" "models:models"; do
  if [ ! -e "$bin/${pair%%:*}" ] && [ -d "$repo/${pair#*:}" ]; then ln -s "$repo/${pair#*:}" "$bin/${pair%%:*}"; fi
done
md="$results/gpu-run.md"
py=${PYTHON:-python3}
step() { printf '\n## %s\n\n' "$*" >> "$md"; echo "== $*"; }
start=$(date +%s)
budget=${MOBIUS_GPU_BUDGET_S:-3600}
summary=()
parts=" ${MOBIUS_GPU_PARTS:-info tests compare streams bf16 kernel-conv tf32 epilogue recompute budget motion finetune profile workbench peer nvcc ranks sanitizer} "
configs=" ${MOBIUS_GPU_CONFIGS:-tiny small ms256} "
want() { [[ "$parts" == *" $1 "* ]]; }
# run CAP_S command...: runs under a timeout of CAP_S seconds or what is left of the budget, if less.
run() {
  local cap=$1; shift
  [ $sim = 1 ] && cap=$((cap * 3))  # the caps are a GPU's; the simulator is slower even on micro
  local left=$(( budget - ($(date +%s) - start) - 5 ))
  [ $cap -gt $left ] && cap=$left
  local name="${*:1:6}"; name=${name#"$bin/"}; name=${name#"$root/"}; name=${name/#"$mobius"/mobius}
  if [ $cap -lt 5 ]; then echo "skipped (time budget spent): $*" >> "$md"; summary+=("skipped  $name"); return 1; fi
  echo "\$ $*" >> "$md"; echo '```' >> "$md"
  local t0=$(date +%s)
  timeout -k 5 "$cap" "$@" >> "$md" 2>&1; local rc=$?
  echo '```' >> "$md"
  local took=$(( $(date +%s) - t0 ))
  [ $rc = 124 ] && echo "timed out after ${cap} s" >> "$md"
  echo "exit $rc (${took} s)" >> "$md"
  summary+=("$(printf 'exit %-3s %4ss  %s' "$rc" "$took" "$name")")
  echo "   exit $rc in ${took} s"
  return $rc
}

# An unexpected failure prints its stack trace into the report (the CLI prints only the message without this).
export MOBIUS_DEBUG=${MOBIUS_DEBUG:-1}
mobius="$bin/mobius"
if [ $sim = 1 ]; then
  export MOBIUS_CUDA=sim MOBIUS_SIM_LIBRARY="$bin/libmobius_simcuda.so"
  card="simulated (rehearsal, no GPU; tiny's parts run on micro)"
  # The simulator takes minutes over a tiny step and the caps are a GPU's: a rehearsal runs tiny's parts on micro.
  mobius="$(mktemp -d)/mobius"
  printf '#!/usr/bin/env bash\nargs=()\nfor a in "$@"; do [ "$a" = tiny ] && a=micro; args+=("$a"); done\nexec "%s" "${args[@]}"\n' "$bin/mobius" > "$mobius"
  chmod +x "$mobius"
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

echo "- parts: $parts (configs:$configs)" >> "$md"

if want info; then
step "mobius info"
run 60 "$mobius" info
[ $sim = 0 ] && nvidia-smi >> "$md" 2>&1
fi

if want tests; then
step "test suite on the GPU (cuda backend classes)"
run 150 "$bin/Mobius.Tests" -class "*.Cuda*"
fi

if want compare; then
step "serial vs parallel (mobius compare)"
# --profile 3: three more steps per topology, timed by layer kind (kept out of the step times).
for spec in "tiny 60 4 60" "small 20 0 45" "ms256 6 0 100"; do
  set -- $spec
  [ $sim = 1 ] && [ "$1" != tiny ] && continue
  [[ "$configs" == *" $1 "* ]] || continue
  steps=$2; samples=$3; [ $sim = 1 ] && { steps=2; samples=0; }
  run "$4" "$mobius" compare --config "$1" --backend cuda --steps "$steps" --samples "$samples" --seed 1 --profile 3 --json --out "$results/compare-$1"
done
fi
if want streams; then
step "the ring's spatial chain on a second stream (the default), then on the main stream too (MOBIUS_STREAMS=1)"
# With a ring bridge the parallel topology runs its inference-only spatial chain on a second stream beside the
# temporal ring (Engine.SideStream); the loop bridge, the default, and serial have nothing to overlap: each of their
# layers waits for the one before. The additive ring on two streams, then on one: the same losses bit for bit, and the
# parallel step's time with and without the overlap.
for spec in "tiny 60 60" "ms256 6 100"; do
  set -- $spec; c=$1; steps=$2
  [ $sim = 1 ] && [ "$c" != tiny ] && continue
  [[ "$configs" == *" $c "* ]] || continue
  [ $sim = 1 ] && steps=2
  for n in 2 1; do
    run "$3" env MOBIUS_STREAMS=$n "$mobius" compare --config $c --backend cuda --bridge additive --steps $steps --samples 0 --seed 1 --profile 3 --json --out "$results/compare-$c-additive-streams-$n"
  done
done
fi
if want bf16; then
step "serial vs parallel with bf16 frozen weights, then bf16 saved activations too, then int8 ones and bf16 optimizer state (mobius compare)"
# Both keep the frozen linear, conv and embedding weights in bf16 and widen one layer's weight at a time
# (the cast.cu kernels): the peak should fall by the planned 1.7 GiB in each topology at ms256, against the
# compare part's fp32 run, at the cost of the casts (docs/architecture.md, Tensors and memory). Then the
# activations kept for backward in bf16 as well (attention's q, k, v too): planned 3,488 and 1,791 MiB kept; then in
# int8 blocks (quantize_f32_i8b) with AdamW's moments in bf16 (adamw_multi_bf16m): planned 1,801 and 925 MiB kept,
# peaks 8,111 and 7,933 MiB.
c=ms256; steps=6; [ $sim = 1 ] && { c=tiny; steps=2; }
run 150 "$mobius" compare --config $c --backend cuda --steps $steps --samples 0 --seed 1 --frozen-weights bf16 --json --out "$results/compare-$c-bf16"
run 150 "$mobius" compare --config $c --backend cuda --steps $steps --samples 0 --seed 1 --frozen-weights bf16 --saved-activations bf16 --json --out "$results/compare-$c-bf16-activations"
run 150 "$mobius" compare --config $c --backend cuda --steps $steps --samples 0 --seed 1 --frozen-weights bf16 --saved-activations int8 --optimizer-state bf16 --json --out "$results/compare-$c-all-narrow"
fi

if want kernel-conv; then
step "the temporal convolution on our kernels (MOBIUS_TEMPORAL_CONV=kernel) against the default cuBLAS frame windows"
# At ms256 the default (CudaBackend.TemporalConvOnCublas's size rule) runs every temporal convolution on cuBLAS:
# forward and backward data as GEMMs over three-frame windows, the weight gradient as one GEMM per tap over
# channel-major copies. This part runs our kernels instead; the compare part's ms256 run is the baseline (same
# lease); the kernel workloads repeat the profile part's ms256 temporal_conv shapes on our kernels.
c=ms256; steps=6; [ $sim = 1 ] && { c=tiny; steps=2; }
run 150 env MOBIUS_TEMPORAL_CONV=kernel "$mobius" compare --config $c --backend cuda --steps $steps --samples 0 --seed 1 --profile 3 --json --out "$results/compare-$c-kernel-conv"
if [ $sim = 0 ]; then
  for spec in "fwd b=1,f=16,c=320,s=1024" "bwd_data b=1,f=16,c=320,s=1024" "bwd_filter b=1,f=16,c=320,s=1024" "fwd b=1,f=16,c=1280,s=64"; do
    set -- $spec
    run 20 env MOBIUS_TEMPORAL_CONV=kernel "$mobius" profile --kernel temporal_conv --direction $1 --shape $2 --backend cuda --iterations 100
  done
fi
fi

if want tf32; then
step "tensor cores on both engines: TF32, then bf16 GEMMs (mobius compare --math, the peer with --math)"
# CudaBackend.TensorCores: tf32 puts cuBLAS in CUBLAS_TF32_TENSOR_OP_MATH and cuDNN in default math; bf16 runs every
# GEMM as GemmEx with CUBLAS_COMPUTE_32F_FAST_16BF and the convolutions in TF32; both move the temporal convolution
# onto cuBLAS. The peer: allow_tf32, or set_float32_matmul_precision("medium"). The compare and peer parts' strict
# runs are the baselines.
for math in tf32 bf16; do
  for spec in "tiny 60 60" "ms256 6 150"; do
    set -- $spec; c=$1; steps=$2
    [ $sim = 1 ] && [ "$c" != tiny ] && continue
    [[ "$configs" == *" $c "* ]] || continue
    [ $sim = 1 ] && steps=2
    run "$3" "$mobius" compare --config $c --backend cuda --math $math --steps $steps --samples 0 --seed 1 --profile 3 --json --out "$results/compare-$c-math-$math"
  done
  if [ $sim = 0 ]; then
    for spec in "fwd b=1,f=16,c=320,s=1024" "bwd_data b=1,f=16,c=320,s=1024" "bwd_filter b=1,f=16,c=320,s=1024"; do
      set -- $spec
      run 20 env MOBIUS_MATH=$math "$mobius" profile --kernel temporal_conv --direction $1 --shape $2 --backend cuda --iterations 100
    done
    if $py -c "import torch" 2>/dev/null && [[ "$configs" == *" ms256 "* ]]; then
      run 180 sh -c "$py '$root/peers/mobius_torch.py' bench --device cuda --config ms256 --steps 6 --math $math > '$results/peer-ms256-math-$math.json'"
      cat "$results/peer-ms256-math-$math.json" >> "$md"
    fi
  fi
done
fi

if want epilogue; then
step "linear layers' biases as cuBLASLt epilogues (MOBIUS_GEMM_EPILOGUES=on)"
# CudaBackend.GemmEpilogues: the forward with CUBLASLT_EPILOGUE_BIAS, the weight gradient with BGRADB, where the default
# takes a GEMM and a kernel each. The compare part's runs are the baselines (calls_per_step shows the kernels gone);
# then ms256 in TF32, against the tf32 part's run: an epilogue runs on cuBLASLt's choice of algorithm, not cuBLAS's.
for spec in "tiny 60 60 fp32" "ms256 6 150 fp32" "ms256 6 150 tf32"; do
  set -- $spec; c=$1; steps=$2; math=$4
  [ $sim = 1 ] && [ "$c" != tiny ] && continue
  [[ "$configs" == *" $c "* ]] || continue
  [ $sim = 1 ] && steps=2
  out="$results/compare-$c-epilogue"; [ $math = fp32 ] || out="$out-math-$math"
  run "$3" env MOBIUS_GEMM_EPILOGUES=on "$mobius" compare --config $c --backend cuda --math $math --steps $steps --samples 0 --seed 1 --profile 3 --json --out "$out"
done
fi

if want recompute; then
step "both topologies at every recompute policy (mobius compare --frontier)"
# Recomputation (benchmarks/results/2026-11-26-recompute.md) trades time for memory: the frontier times serial and
# parallel at each policy (none, temporal, spatial, spatial+temporal), the two topologies of a policy taking
# turns, with exact memory, and pairs each topology at its own best (fastest, leanest).
c=ms256; steps=6; frontier=6; [ $sim = 1 ] && { c=tiny; steps=2; frontier=1; }
run 240 "$mobius" compare --config $c --backend cuda --steps $steps --samples 0 --seed 1 --frontier $frontier --json --out "$results/compare-$c-frontier"
fi

if want budget && [ $sim = 0 ]; then
  step "largest batch within the card (ms256): planned, then two training steps of each topology at it"
  # plan --budget-mib finds each topology's largest batch whose planned peak (the engine's tensors) fits; 6000 MiB
  # of the card are left for the CUDA context, cuBLAS/cuDNN and the allocator's cache. Each topology then trains
  # two steps at its own batch: both must fit, and train prints the measured peak beside the planned one.
  total=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -n 1)
  room=$(( ${total:-0} - 6000 ))
  timeout 120 "$mobius" plan --config ms256 --budget-mib "$room" --json > "$results/plan-ms256-budget.json"
  batches=$($py -c "import json, sys; b = json.load(open(sys.argv[1]))['largest_batch']; print(b['serial'], b['parallel'])" "$results/plan-ms256-budget.json")
  echo "planned within $room MiB (plan-ms256-budget.json): largest batch serial ${batches% *}, parallel ${batches#* }" >> "$md"
  set -- $batches
  if [ "${1:-0}" -gt 0 ] && run 240 "$mobius" pretrain --config ms256 --steps 1 --backend cuda --weights-only --out "$results/ms256-t2i.safetensors"; then
    run 240 "$mobius" train --topology serial --from "$results/ms256-t2i.safetensors" --batch "$1" --steps 2 --backend cuda --weights-only --out "$results/ms256-serial.safetensors"
    run 240 "$mobius" train --topology parallel --from "$results/ms256-t2i.safetensors" --batch "$2" --steps 2 --backend cuda --weights-only --out "$results/ms256-parallel.safetensors"
    rm -f "$results"/ms256-*.safetensors
  fi
fi

if want motion && [ -n "${MOBIUS_GPU_MOTION_STEPS:-}" ] && [ $sim = 0 ]; then
  step "long motion training (tiny, move-right, $MOBIUS_GPU_MOTION_STEPS steps)"
  # A validation every 250 steps gives a curve rather than one noisy estimate. MOBIUS_GPU_MOTION_ARGS adds
  # options the line does not give already (--batch N, --frame-noise R, --freeze PREFIXES, --min-snr G, --keep-best,
  # --loop-correction K; a tiny step at batch 2 is launch-bound on a GPU, so --batch 16 should see eight times the
  # clips for little more time a step: not measured yet). --frame-noise 0 is where serial learns visible motion on
  # the CPU (benchmarks/results/2026-11-26-frame-noise-0.md): "--frame-noise 0 --batch 16" is the next GPU run.
  # Adding "--bridge skip" to it asks whether the ring (with the UNet's skip connections, the best ring on the CPU:
  # benchmarks/results/2026-11-27-ring-skips.md) learns serial's motion given many more clips: on the CPU its noise
  # error passes serial's and its movement term rises slowly, 0.18 after 16,000 clips and 0.60 after 48,000.
  run 560 "$mobius" compare --config tiny --backend cuda --motion move-right --steps "$MOBIUS_GPU_MOTION_STEPS" --lr 1e-3 \
    --samples 16 --seed 1 --validate-every 250 --json --out "$results/motion-tiny" ${MOBIUS_GPU_MOTION_ARGS:-}
fi

if want finetune && [ -n "${MOBIUS_GPU_FINETUNE_STEPS:-}" ] && [ $sim = 0 ]; then
  step "long fine-tuning of the shipped text-to-video model (tiny, $MOBIUS_GPU_FINETUNE_STEPS steps)"
  # The demo's experiment taken far: both topologies fine-tune models/tiny-t2v.safetensors on its motion and frame
  # noise. On the CPU the loop tracks serial for 1200 steps at 1e-4 and then drifts
  # (benchmarks/results/2026-11-27-fine-tune.md); with --loop-correction 16 --ema 0.999 it holds within 0.0003 of
  # serial over 1500 (2026-11-27-loop-correction-16.md), 78 % of its drop paired over 32 held-out clips (16 batches,
  # as here: 2026-11-27-paired-quality.md). MOBIUS_GPU_FINETUNE_ARGS adds options (--loop-correction K,
  # --ema D, --keep-best, --lr R, --batch N, --accumulate N, --motion M).
  run 560 "$mobius" compare --checkpoint "$bin/models/tiny-t2v.safetensors" --backend cuda --steps "$MOBIUS_GPU_FINETUNE_STEPS" \
    --lr 1e-4 --samples 16 --validation-batches 16 --seed 1 --validate-every 250 --json --out "$results/finetune-tiny" ${MOBIUS_GPU_FINETUNE_ARGS:-}
fi

if want profile; then
step "kernel workloads (mobius profile)"
for k in temporal_attention temporal_conv group_norm attention conv2d gemm; do
  for d in fwd bwd; do
    dir=$d; case $k in temporal_conv|conv2d) [ $d = bwd ] && dir=bwd_data;; gemm) [ $d = bwd ] && continue;; esac
    iters=100; [ $sim = 1 ] && iters=1
    run 20 "$mobius" profile --kernel $k --direction $dir --backend cuda --iterations $iters
  done
done
# The temporal kernels at the ms256 model's first level (32x32 latent, 320 channels, 16 frames, batch 1), and
# the temporal convolution at its last (8x8, 1280 channels).
if [ $sim = 0 ]; then
  for spec in "temporal_attention fwd n=1024,h=5,f=16,d=64" "temporal_attention bwd n=1024,h=5,f=16,d=64" \
              "temporal_conv fwd b=1,f=16,c=320,s=1024" "temporal_conv bwd_data b=1,f=16,c=320,s=1024" \
              "temporal_conv bwd_filter b=1,f=16,c=320,s=1024" "temporal_conv fwd b=1,f=16,c=1280,s=64" \
              "group_norm fwd n=1,t=16,c=320,s=1024,g=32" "group_norm bwd n=1,t=16,c=320,s=1024,g=32"; do
    set -- $spec
    run 20 "$mobius" profile --kernel $1 --direction $2 --shape $3 --backend cuda --iterations 100
  done
fi

fi

if want workbench; then
step "kernel workbench (nvcc, every version validated and timed)"
if command -v nvcc >/dev/null && [ $sim = 0 ] && [ -d "$repo/benchmarks/workbench" ]; then
  wbdir=$(mktemp -d)
  for spec in "temporal_conv 1 16 320 320 1024" "group_norm 1 16 320 1024 32" "temporal_attention 1024 5 16 64"; do
    set -- $spec; b=$1; shift
    run 90 sh -c "nvcc -O3 -std=c++17 -arch=sm_90 -I'$repo/kernels/include' -o '$wbdir/$b' '$repo/benchmarks/workbench/$b.cu' -lcublas && '$wbdir/$b' $*"
  done
else
  echo "nvcc not found, rehearsal, or no workbench next to this script: skipped" >> "$md"
fi

fi

if want peer; then
step "PyTorch peer (same model, both topologies)"
if $py -c "import torch" 2>/dev/null; then
  device=cuda; [ $sim = 1 ] && device=cpu
  for spec in "tiny 10 60" "small 10 90" "ms256 6 180"; do
    set -- $spec; c=$1
    [ $sim = 1 ] && [ "$c" != tiny ] && continue
    [[ "$configs" == *" $c "* ]] || continue
    run "$3" sh -c "$py '$root/peers/mobius_torch.py' bench --device $device --config $c --steps $2 > '$results/peer-$c.json'"
    cat "$results/peer-$c.json" >> "$md"
  done
  c=ms256; [ $sim = 1 ] && c=tiny
  run 180 sh -c "$py '$root/peers/mobius_torch.py' bench --device $device --config $c --steps 6 --recompute-spatial > '$results/peer-$c-recompute.json'"
  cat "$results/peer-$c-recompute.json" >> "$md"
else
  echo "python with torch not found: skipped" >> "$md"
fi

fi

if want nvcc; then
step "kernels: nvcc builds every source for sm_90 (resource usage)"
if command -v nvcc >/dev/null && [ $sim = 0 ]; then
  for cu in "$root"/kernels/*.cu; do
    run 60 nvcc -arch=sm_90 -std=c++17 -O3 -I"$root/kernels/include" -cubin -Xptxas -v -o /dev/null "$cu"
  done
else
  echo "nvcc not found or rehearsal: skipped" >> "$md"
fi

fi

if want ranks; then
  step "data parallel (mobius train and compare --ranks): the CPU's cores split among ranks, then two cuda ranks on one device"
  # The same 4 clips a step every way (ranks x batch), fine-tuning the shipped tiny model: the CPU machine here has
  # 2 cores, where 2 ranks run a step in one rank's time (benchmarks/results/2026-11-28-data-parallel-cpu.md); this
  # machine's cores say whether ranks buy time where one step cannot keep every core busy. Each run logs its steps
  # (losses to compare with accumulation's, times); the cuda pair checks two ranks' threads on one device end to end.
  ckpt="$bin/models/tiny-t2v.safetensors"; steps=30; [ $sim = 1 ] && steps=2
  for spec in "1 4" "2 2" "4 1"; do
    set -- $spec
    run 120 "$mobius" train --from "$ckpt" --backend cpu --ranks "$1" --batch "$2" --steps $steps --seed 1 --log "$results/ranks-cpu-$1.csv" --out "$results/ranks.safetensors"
  done
  run 120 "$mobius" train --from "$ckpt" --backend cpu --accumulate 4 --batch 1 --steps $steps --seed 1 --log "$results/ranks-cpu-accumulate.csv" --out "$results/ranks.safetensors"
  if [ $sim = 0 ]; then  # a tiny step takes minutes on the simulator; the test suite covers cuda ranks there on micro
    run 120 "$mobius" train --from "$ckpt" --backend cuda --ranks 2 --batch 2 --steps $steps --seed 1 --log "$results/ranks-cuda-2.csv" --out "$results/ranks.safetensors"
    run 120 "$mobius" train --from "$ckpt" --backend cuda --batch 4 --steps $steps --seed 1 --log "$results/ranks-cuda-1.csv" --out "$results/ranks.safetensors"
    # The comparison with each topology on two ranks of the one device (host collectives there): its ratios beside
    # the compare part's, rank 0's memory against one rank's.
    run 120 "$mobius" compare --config tiny --backend cuda --ranks 2 --steps $steps --samples 0 --validation-batches 2 --seed 1 --json --out "$results/compare-tiny-ranks-2"
  fi
  rm -f "$results/ranks.safetensors"
fi

if want sanitizer; then
step "kernel tests under compute-sanitizer"
if command -v compute-sanitizer >/dev/null && [ $sim = 0 ]; then
  for tool in memcheck racecheck; do
    run 150 compute-sanitizer --tool $tool --error-exitcode 1 "$bin/Mobius.Tests" -class "Mobius.Tests.Engine.CudaOpGradientTests" -class "Mobius.Tests.Cuda.CudaGroupNormTests" -class "Mobius.Tests.Cuda.CudaTemporalConvTests" -class "Mobius.Tests.Engine.CudaBFloat16Tests" -class "Mobius.Tests.Cuda.CudaMultiTensorTests" -class "Mobius.Tests.Cuda.CudaWorkspaceTests" -class "Mobius.Tests.Cuda.CudaTensorCoreTests"
  done
else
  echo "compute-sanitizer not found or rehearsal: skipped" >> "$md"
fi
fi

{ echo; echo "## summary"; echo; echo '```'; printf '%s\n' "${summary[@]}"; echo '```'; } >> "$md"
printf '%s\n' "${summary[@]}"
echo "wrote $md"
