#!/usr/bin/env bash
# Fuzzes every parser of untrusted bytes with libFuzzer (coverage-guided, with AddressSanitizer and
# LeakSanitizer): Redis replies, WebSocket client frames, JSON request bodies, multipart uploads,
# and the text rules (see Sources/ParleyFuzz). Each harness starts from its committed corpus
# (Fuzz/corpus/<harness>) and runs for a bounded time; any crash, leak, timeout or failed
# property fails the script, and the input that caused it is saved under artifacts/fuzz/.
#
#   scripts/fuzz.sh                 # every harness, PARLEY_FUZZ_SECONDS (60) each
#   scripts/fuzz.sh resp multipart  # some of them
#
# Reproduce a saved input without the fuzzer: swift run parley-fuzz HARNESS artifacts/fuzz/<file>.
# An input worth keeping as a regression test goes into Fuzz/corpus/<harness>/ (swift test replays it).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${PARLEY_FUZZ_SECONDS:-60}
scratch=.build-fuzz

swift build --scratch-path $scratch --product parley-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DPARLEY_FUZZING 2>&1 \
  | grep -v "ld.gold: warning: Cannot export local symbol" | tail -3
bin=$(swift build --scratch-path $scratch --show-bin-path)/parley-fuzz

harnesses=("$@")
if [ ${#harnesses[@]} -eq 0 ]; then harnesses=(resp client-frame json-body multipart text); fi
mkdir -p artifacts/fuzz
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for harness in "${harnesses[@]}"; do
  [ -d "Fuzz/corpus/$harness" ] || { echo "fuzz: no corpus for $harness" >&2; exit 2; }
  cp -r "Fuzz/corpus/$harness" "$work/$harness"
  log="$work/$harness.log"
  # -timeout: one input taking 20 s is a hang (generous: a debug build under ASan on a busy machine); -rss_limit_mb: runaway memory is a failure too.
  if ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 PARLEY_FUZZ_TARGET=$harness "$bin" "$work/$harness" \
    -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -max_len=8192 -print_final_stats=1 \
    -artifact_prefix="artifacts/fuzz/$harness-" >"$log" 2>&1; then
    runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
    coverage=$( (grep -Eo "cov: [0-9]+" "$log" || true) | tail -1 | cut -d' ' -f2)
    corpus=$(ls "$work/$harness" | wc -l)
    echo "fuzz: $harness: ${runs:-?} inputs in ${seconds} s, coverage ${coverage:-?} edges, corpus $(ls "Fuzz/corpus/$harness" | wc -l) → $corpus; no crash, leak or timeout"
  else
    echo "fuzz: $harness FAILED; the input is in artifacts/fuzz/:"
    grep -E "ERROR|SUMMARY|property failed|Fatal error|Test unit written" "$log" | head -20
    failed+=("$harness")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then echo "fuzz: failures in ${failed[*]}"; exit 1; fi
