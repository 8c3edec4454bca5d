#!/usr/bin/env bash
# Quick start, second command: the whole test suite, as CI runs it.
#   1. Release build, every test.
#   2. The same suite built with AddressSanitizer + UndefinedBehaviorSanitizer
#      (but the tests labelled slow: the full-size model's gigabytes).
#   3. The release build again with kernels forced to the scalar path, then
#      AVX2 (a level this machine may not have is clamped, with a warning).
#   4. The fuzzers (clang, ASan + UBSan), 60 s each: scripts/fuzz.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# playwright-core for the browser test of kiln serve (the browser is Debian's chromium)
if [ ! -d tests/browser/node_modules ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

jobs=$(nproc)
ctest_args=(--output-on-failure -j "$jobs")

echo "== release build =="
scripts/build.sh build
ctest --test-dir build "${ctest_args[@]}"

echo "== sanitizer build (ASan + UBSan) =="
scripts/build.sh build-asan -DKILN_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan "${ctest_args[@]}" -LE slow

for isa in scalar avx2; do
  echo "== release build, KILN_ISA=$isa =="
  KILN_ISA=$isa ctest --test-dir build "${ctest_args[@]}" -LE slow
done

echo "== fuzzers, 60 s each (scripts/fuzz.sh) =="
scripts/fuzz.sh 60
