#!/usr/bin/env bash
# The two commands of the README:
#   ./setup.sh run    install what is missing, build, fetch the default model, run the main job
#                     (a two-worker local cluster answering one question)
#   ./setup.sh test   install what is missing, build, fetch the default model, run every test,
#                     then the unit tests (ctest label `unit`) once more under ASan + UBSan, then
#                     each fuzzer (fuzz/) for a bounded time under ASan + UBSan
#   ./setup.sh install  install what is missing, build, and put herd and herd-cluster on PATH
#                     (cmake --install: /usr/local/bin; PREFIX=DIR for another prefix)
# Safe to re-run: each step skips what is already done.
set -euo pipefail
cd "$(dirname "$0")"

mode=${1:-}
case "$mode" in
  run|test|install) ;;
  *) echo "usage: ./setup.sh run|test|install" >&2; exit 2 ;;
esac

# Debian packages the build, the tests and the model download need.
packages=(cmake g++ make pkg-config libgtest-dev libgmock-dev libbenchmark-dev python3 python3-pip ca-certificates
          libzmq3-dev cppzmq-dev libcereal-dev openmpi-bin libopenmpi-dev
          g++-aarch64-linux-gnu qemu-user  # NEON tests, cross-built and run under qemu
          libcpp-httplib-dev nlohmann-json3-dev libsodium-dev)  # herd serve: HTTP, JSON, constant-time key check
# `./setup.sh test` also drives the server with a real browser (tests/server/test_page.py).
[ "$mode" = test ] && packages+=(chromium chromium-driver)
# `./setup.sh test` also runs the unit tests and the libFuzzer harnesses (fuzz/) under ASan + UBSan:
# clang and its runtime libraries (libFuzzer, the sanitizers).
[ "$mode" = test ] && packages+=(clang libclang-rt-14-dev)
# `./setup.sh test` also runs herd lab's namespaced tests: ip and tc (tests/lab/test_lab_netns.py).
[ "$mode" = test ] && packages+=(iproute2)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

# Python test tools from PyPI (tests/server): the official OpenAI client, pytest, selenium, a
# Prometheus text parser.
if [ "$mode" = test ] && ! python3 -c "import openai, pytest, requests, selenium, prometheus_client" 2>/dev/null; then
  echo "setup: installing Python test tools (openai pytest requests selenium prometheus-client)"
  tools=(openai pytest requests selenium prometheus-client)
  python3 -m pip install -q "${tools[@]}" 2>/dev/null || python3 -m pip install -q --break-system-packages "${tools[@]}"
fi

scripts/fetch-model.sh

jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"

if [ "$mode" = install ]; then
  sudo=""
  prefix=${PREFIX:-/usr/local}
  [ "$(id -u)" -ne 0 ] && [ ! -w "$prefix/bin" ] && sudo=sudo
  $sudo cmake --install build --prefix "$prefix"
  echo "setup: installed $prefix/bin/herd and $prefix/bin/herd-cluster"
elif [ "$mode" = run ]; then
  # The main job: a local cluster (two `herd worker` processes, launch/local-cluster.txt) serving the
  # default model, one question through its chat template. --plan-strategy even shows a real
  # 2-stage pipeline: on one shared machine the planner would rather use a single worker.
  exec build/bin/herd-cluster launch/local-cluster.txt -- \
    chat -p "Why is the sky blue? Answer in two sentences." --plan-strategy even --speed
else
  ctest --test-dir build --output-on-failure -j"$jobs"
  # The unit tests once more under ASan + UBSan (any report fails the run), in their own clang build
  # (build-asan/, -O1 -g, CMake option HERD_SANITIZE): the `unit` label, i.e. the in-process tests of
  # the kernels, GGUF/model parsing, tokenizers and chat templates, protocol, transport, engine and
  # the server's C++ side. The multi-process integration tests are not in it (CI's time; README, Tests).
  CC=clang CXX=clang++ cmake -S . -B build-asan -DHERD_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
  cmake --build build-asan -j"$jobs" --target herd_unit_tests
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    ctest --test-dir build-asan -L unit --output-on-failure -j"$jobs"
  # Each fuzzer for a bounded time (HERD_FUZZ_SECONDS, default 20) from its seed corpus, in its own
  # clang build (build-fuzz/, every object under ASan + UBSan). fuzz/run.sh N NAME runs one longer.
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -DHERD_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build-fuzz -j"$jobs" --target herd_fuzzers
  fuzz/run.sh "${HERD_FUZZ_SECONDS:-20}"
fi
