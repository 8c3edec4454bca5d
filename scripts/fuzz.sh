#!/usr/bin/env bash
# Fuzzes kiln's parsers of untrusted bytes: builds the libFuzzer targets of
# fuzz/ with clang, AddressSanitizer and UndefinedBehaviorSanitizer into
# build-fuzz/, then runs each for SECONDS (default 60) from its seed corpus
# and dictionary.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (targets: safetensors tokenizer png parameters request)
#
# The seeds (fuzz/corpus/<target>) are copied into build-fuzz/corpus/<target>,
# which keeps what the fuzzer adds across runs; the repository is not
# written. Prints, per target, the inputs run and the coverage of libFuzzer's
# last status line (cov: edges, ft: features). Any crash, leak, sanitizer
# report, timeout (10 s an input) or out-of-memory (2 GB) fails the script;
# the input is kept under build-fuzz/crashes/<target>/. To keep it as a
# regression test, copy it to tests/data/regressions/<target>/ and add its
# line to tests/data/regressions/EXPECTED.tsv (tests/test_fuzz_regressions).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors tokenizer png parameters request)
case "$seconds" in
  '' | *[!0-9]*) echo "fuzz.sh: SECONDS_PER_TARGET must be a whole number, got '$seconds'" >&2; exit 2 ;;
esac

# The longest input each target gets: past every seed, short enough that
# the fuzzer tries many (the tokenizer costs the most per byte).
declare -A max_len=([safetensors]=8192 [tokenizer]=1024 [png]=16384 [parameters]=4096 [request]=8192)
for t in "${targets[@]}"; do
  [ -n "${max_len[$t]:-}" ] || { echo "fuzz.sh: no target '$t'" >&2; exit 2; }
done

dir=build-fuzz
echo "== fuzz build (clang, libFuzzer, ASan + UBSan) =="
cmake -S . -B "$dir" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DKILN_FUZZ=ON -DKILN_SANITIZE=ON -DKILN_BUILD_TESTS=OFF >/dev/null
cmake --build "$dir" -j "$(nproc)" --target "${targets[@]/#/fuzz_}"

export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
failed=0
for t in "${targets[@]}"; do
  corpus=$dir/corpus/$t crashes=$dir/crashes/$t log=$dir/fuzz-$t.log
  mkdir -p "$corpus" "$crashes"
  cp -n fuzz/corpus/"$t"/* "$corpus"/
  before=$(find "$corpus" -type f | wc -l)
  status=0
  "$dir/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="${max_len[$t]}" \
    -dict="fuzz/$t.dict" -artifact_prefix="$crashes/" -print_final_stats=1 "$corpus" >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  [ -n "$runs" ] || runs=$(grep -o '^#[0-9]*' "$log" | tail -n 1 | tr -d '#')
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1)
  after=$(find "$corpus" -type f | wc -l)
  printf 'fuzz_%-12s %10s inputs in %ss, %s, corpus %d (%+d)' "$t" "${runs:-?}" "$seconds" "${cov:-cov: ?}" \
    "$after" $((after - before))
  if [ "$status" -ne 0 ]; then
    failed=1
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    echo "  FAILED (exit $status): ${artifact:-no input saved}"
    grep -m 3 -E 'ERROR: |SUMMARY: |fuzz check failed|runtime error' "$log" | sed 's/^/    /' || true
    echo "    full log: $log"
  else
    echo "  ok"
  fi
done
exit "$failed"
