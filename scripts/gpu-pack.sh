#!/usr/bin/env bash
# Packs everything a GPU run needs into out/gpu/ (ignored) and out/gpu.tar.xz (carry this one: it stays
# well under 60 MB): self-contained linux-x64 builds of the mobius command, the test suite and the
# benchmarks (no .NET SDK needed there), the kernel sources and PTX (nvcc builds them there too), the
# PyTorch peer and scripts/gpu-run.sh. On the GPU machine: bash gpu-run.sh gpu.tar.xz RESULTS_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
out=out/gpu
rm -rf "$out" out/gpu.tar.xz
mkdir -p "$out/bin"
common=(-c Release -r linux-x64 --self-contained -p:InvariantGlobalization=true -p:MobiusSkipSimBuild=true -v:q -nologo)
for project in src/Mobius.Cli tests/Mobius.Tests benchmarks/Mobius.Benchmarks; do
  echo "publishing $project"
  dotnet publish "$project" "${common[@]}" -o "$out/bin"
done

mkdir -p "$out/kernels"
cp -r kernels/*.cu kernels/include kernels/ptx kernels/build-ptx.sh "$out/kernels/"
cp -r benchmarks/peers "$out/peers"
cp scripts/gpu-run.sh "$out/"
# The simulated driver lets gpu-run.sh --sim rehearse the whole run on a machine without a GPU.
if [ -f kernels/sim/build/libmobius_simcuda.so ]; then cp kernels/sim/build/libmobius_simcuda.so "$out/bin/"; fi
{
  echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD -- src kernels tests benchmarks || echo ' (with uncommitted changes)')"
  echo "packed $(date -u +%Y-%m-%dT%H:%MZ)"
} > "$out/BUILD"
tar -C out -cJf out/gpu.tar.xz gpu
du -sh "$out" out/gpu.tar.xz
