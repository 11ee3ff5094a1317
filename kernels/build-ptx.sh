#!/usr/bin/env bash
# Builds kernels/ptx/<arch>/<name>.ptx from kernels/<name>.cu with clang (no CUDA SDK needed).
#
#   bash kernels/build-ptx.sh           rebuild the committed PTX
#   bash kernels/build-ptx.sh --check   rebuild into a temporary folder and fail, naming the file, when the
#                                       committed PTX is stale, missing, orphaned or lacks an entry
#
# Each PTX file starts with a line "// mobius-source-sha256: <hash>" over the compiler flags, the .cu and the
# headers in kernels/include; --check compares that hash (not the bytes, so another clang patch release does
# not flake) and checks that every MOBIUS_REGISTER_KERNEL entry of the .cu is a `.entry` of the PTX.
# Where nvcc is on PATH, every .cu is also compiled with it (sm_80 and sm_90) so both compilers stay happy.
# MOBIUS_CLANG overrides the compiler (default clang++-19).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
clang="${MOBIUS_CLANG:-clang++-19}"
check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

# arch:ptx-feature pairs; the PTX ISA version is the lowest each architecture needs.
targets=("sm_80:+ptx70" "sm_90:+ptx78")
shopt -s nullglob
sources=(*.cu)
if [ ${#sources[@]} -eq 0 ]; then echo "build-ptx: no kernels/*.cu found" >&2; exit 1; fi

flags_for() {  # relative paths only: the flags are part of the source hash
  echo "-x cuda --cuda-device-only -nocudainc -nocudalib --cuda-gpu-arch=$1 --cuda-feature=$2 -std=c++17 -O3 -S -Iinclude"
}

source_hash() {  # flags, .cu, headers
  { printf '%s\n' "$1"; cat "$2" include/*.h; } | sha256sum | cut -d' ' -f1
}

entries_of() {  # the entries a .cu registers
  grep -o 'MOBIUS_REGISTER_KERNEL([A-Za-z_0-9]*)' "$1" | sed 's/.*(\(.*\))/\1/' || true
}

out_root=ptx
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
[ $check -eq 1 ] && out_root="$work/ptx"

# Compile everything, two jobs at a time.
jobs_file="$work/jobs"
: >"$jobs_file"
for t in "${targets[@]}"; do
  arch="${t%%:*}" feature="${t#*:}"
  mkdir -p "$out_root/$arch" "$work/raw/$arch"
  for cu in "${sources[@]}"; do
    printf '%s\0%s\0%s\0' "$arch" "$feature" "$cu" >>"$jobs_file"
  done
done
export clang work
export -f flags_for
compile_one() {
  local arch="$1" feature="$2" cu="$3"
  # shellcheck disable=SC2046
  if ! "$clang" $(flags_for "$arch" "$feature") "$cu" -o "$work/raw/$arch/${cu%.cu}.ptx" 2>"$work/raw/$arch/${cu%.cu}.log"; then
    echo "build-ptx: clang failed on $cu for $arch:" >&2
    cat "$work/raw/$arch/${cu%.cu}.log" >&2
    return 1
  fi
}
export -f compile_one
if ! xargs -0 -n 3 -P 2 bash -c 'compile_one "$@"' _ <"$jobs_file"; then exit 1; fi

status=0
for t in "${targets[@]}"; do
  arch="${t%%:*}" feature="${t#*:}"
  for cu in "${sources[@]}"; do
    name="${cu%.cu}"
    hash="$(source_hash "$(flags_for "$arch" "$feature")" "$cu")"
    { echo "// mobius-source-sha256: $hash"; cat "$work/raw/$arch/$name.ptx"; } >"$out_root/$arch/$name.ptx"
    for e in $(entries_of "$cu"); do
      if ! grep -q "\.entry $e(" "$out_root/$arch/$name.ptx"; then
        echo "build-ptx: $arch/$name.ptx lacks .entry $e" >&2
        status=1
      fi
    done
    [ $check -eq 1 ] || continue
    committed="ptx/$arch/$name.ptx"
    if [ ! -f "$committed" ]; then
      echo "build-ptx: missing kernels/$committed (run kernels/build-ptx.sh)" >&2
      status=1
      continue
    fi
    if [ "$(head -n 1 "$committed")" != "// mobius-source-sha256: $hash" ]; then
      echo "build-ptx: stale kernels/$committed: $cu or a header changed (run kernels/build-ptx.sh)" >&2
      status=1
    fi
    for e in $(entries_of "$cu"); do
      if ! grep -q "\.entry $e(" "$committed"; then
        echo "build-ptx: kernels/$committed lacks .entry $e" >&2
        status=1
      fi
    done
  done
  # PTX whose .cu is gone
  for p in ptx/"$arch"/*.ptx; do
    base="$(basename "$p" .ptx)"
    if [ ! -f "$base.cu" ]; then
      if [ $check -eq 1 ]; then
        echo "build-ptx: orphaned kernels/$p (no $base.cu)" >&2
        status=1
      else
        rm -f "$p"
      fi
    fi
  done
done

# The test-only kernels use the rest of the header's intrinsics (int and up/down shuffles, ballot): compile
# them too, so the clang build of every CUDA name the header declares is exercised. Not committed.
if ! "$clang" $(flags_for sm_90 +ptx78) sim/tests/fault_kernels.cu -o "$work/fault_kernels.ptx" 2>"$work/fault_kernels.log"; then
  echo "build-ptx: clang failed on sim/tests/fault_kernels.cu:" >&2
  cat "$work/fault_kernels.log" >&2
  status=1
fi

if command -v nvcc >/dev/null 2>&1; then
  for t in "${targets[@]}"; do
    arch="${t%%:*}"
    for cu in "${sources[@]}" sim/tests/fault_kernels.cu; do
      if ! nvcc -ptx -arch="$arch" -std=c++17 -Iinclude "$cu" -o "$work/nvcc_${arch}_$(basename "${cu%.cu}").ptx"; then
        echo "build-ptx: nvcc failed on $cu for $arch" >&2
        status=1
      fi
    done
  done
fi

if [ $status -eq 0 ]; then
  if [ $check -eq 1 ]; then echo "build-ptx: committed PTX is up to date (${#sources[@]} sources, ${#targets[@]} architectures)"
  else echo "build-ptx: wrote ${#sources[@]} x ${#targets[@]} PTX files to kernels/ptx"; fi
fi
exit $status
