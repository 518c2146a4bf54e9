#!/usr/bin/env bash
# Cross-builds the NEON backend tests for AArch64 (tests/neon/CMakeLists.txt) and runs them under
# qemu-user twice: -cpu max (has the ARMv8.2 dot product: the neon-dotprod table) and -cpu
# cortex-a57 (ARMv8.0, no dotprod: the baseline table, and "auto" must not pick dotprod).
#   usage: run_cross_tests.sh BUILD_DIR [SHARED_DIR]     (env HERD_NEON_JOBS, default 2)
# Exit 77 (ctest SKIP_RETURN_CODE) when the cross compiler, qemu or the GoogleTest sources are missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:?usage: run_cross_tests.sh BUILD_DIR [SHARED_DIR]}
shared=${2:-$root/../shared}
jobs=${HERD_NEON_JOBS:-2}
sysroot=/usr/aarch64-linux-gnu

missing=()
command -v aarch64-linux-gnu-g++ >/dev/null || missing+=("aarch64-linux-gnu-g++ (package g++-aarch64-linux-gnu)")
command -v qemu-aarch64 >/dev/null || missing+=("qemu-aarch64 (package qemu-user)")
[ -f /usr/src/googletest/CMakeLists.txt ] || missing+=("/usr/src/googletest (package libgtest-dev)")
[ -d "$sysroot/lib" ] || missing+=("$sysroot (package libc6-dev-arm64-cross)")
if [ ${#missing[@]} -gt 0 ]; then
  echo "SKIP: NEON cross tests need: ${missing[*]}"
  exit 77
fi

start=$(date +%s)
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$root/tests/neon" -B "$build" -DCMAKE_TOOLCHAIN_FILE="$root/cmake/aarch64-toolchain.cmake" \
    -DCMAKE_BUILD_TYPE=Release -DHERD_SHARED_DIR="$shared" >/dev/null
fi
cmake --build "$build" -j"$jobs" -- --no-print-directory
echo "neon cross build: $(( $(date +%s) - start )) s"

status=0
for cpu in max:1 cortex-a57:0; do
  model=${cpu%%:*}
  t0=$(date +%s)
  echo "=== qemu-aarch64 -cpu $model ==="
  # Without dotprod the neon-dotprod cases would only skip; leave them out instead.
  filter='*'
  [ "${cpu##*:}" = 0 ] && filter='-*neon_dotprod*:NeonMatmulIsa.*'
  if ! HERD_NEON_EXPECT_DOTPROD=${cpu##*:} qemu-aarch64 -cpu "$model" -L "$sysroot" \
      "$build/test_neon_kernels" --gtest_brief=1 --gtest_filter="$filter"; then
    status=1
  fi
  echo "=== -cpu $model: $(( $(date +%s) - t0 )) s ==="
done
exit $status
