#!/usr/bin/env bash
# Packs everything a GPU run needs into out/gpu/ (ignored) and out/gpu.tar.xz (carry this one: it stays
# about 31 MB, which leaves room for the repository within a 64 MiB transfer): self-contained linux-x64 builds
# of the mobius command and the test suite
# (no .NET SDK needed there), the kernel sources and PTX (nvcc builds them there too), the
# PyTorch peer and scripts/gpu-run.sh. On the GPU machine, in a checkout of the same commit:
#   bash scripts/gpu-run.sh out/gpu.tar.xz RESULTS_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
out=out/gpu
rm -rf "$out" out/gpu.tar.xz
mkdir -p "$out/bin"
common=(-c Release -r linux-x64 --self-contained -p:InvariantGlobalization=true -p:MobiusSkipSimBuild=true -v:q -nologo)
for project in src/Mobius.Cli tests/Mobius.Tests; do
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
# The weights (test fixtures, the stage-1 model) travel with the repository already and gpu-run.sh links
# them back; the runtime's debugger and alternative-GC libraries are never loaded. That keeps the archive
# near 31 MB.
rm -rf "$out/bin/Fixtures" "$out/bin/models" "$out/bin/"*.pdb "$out/bin/createdump" \
  "$out/bin/libmscordaccore.so" "$out/bin/libmscordbi.so" "$out/bin/libclrgc.so" "$out/bin/libclrgcexp.so"
tar -C out -cf - gpu | xz -9e -T2 > out/gpu.tar.xz
du -sh "$out" out/gpu.tar.xz
