#!/usr/bin/env bash
# The fuzz stage of the test suite (called by scripts/test-all.sh; runs alone too).
#   1. every fuzz target (fuzz/fuzz_targets/) for FUZZ_SECONDS (default 60) without a
#      sanitizer, two at a time, starting from the committed corpus and regression inputs;
#   2. a replay of the committed corpora (fuzz/corpus/) and crash inputs (fuzz/regressions/)
#      under AddressSanitizer (RUSTC_BOOTSTRAP=1 on stable, see fuzz/README.md).
# A crash, leak, hang (10 s) or sanitizer report fails that target's check; crash inputs are
# left in $FUZZ_OUT (default: a temporary directory, printed). Ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-60}
out=${FUZZ_OUT:-$(mktemp -d /tmp/vu-fuzz-ci.XXXXXX)}
mkdir -p "$out"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
triple=x86_64-unknown-linux-gnu
targets=(dispatch split_ring mem_table inflight packed_ring iotlb)
passed=0 failed=0
pass() { echo "fuzz: PASS $1"; passed=$((passed + 1)); }
fail() { echo "fuzz: FAIL $1"; failed=$((failed + 1)); }

command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing (scripts/install-deps.sh installs it)"; exit 1; }
(cd fuzz && cargo fuzz build -s none 2>&1 | tail -2)
(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build --target-dir target/asan 2>&1 | tail -2)
# cargo fuzz builds the plain targets where CARGO_TARGET_DIR says (the ASan ones: --target-dir).
plain=${CARGO_TARGET_DIR:-fuzz/target}/$triple/release
asan=fuzz/target/asan/$triple/release

# 1. Timed runs, two at a time (the machine has 2 cores). New inputs go to a scratch corpus.
smoke() {
  local t=$1
  mkdir -p "$out/$t/corpus" "$out/$t/artifacts"
  "$plain/$t" "$out/$t/corpus" "fuzz/corpus/$t" "fuzz/regressions/$t" \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/$t/artifacts/" > "$out/$t/smoke.log" 2>&1
}
pids=()
for t in "${targets[@]}"; do
  if [ ! -x "$plain/$t" ]; then fail "$t: not built"; continue; fi
  smoke "$t" & pids+=("$!:$t")
  if [ ${#pids[@]} -eq 2 ]; then
    for p in "${pids[@]}"; do
      if wait "${p%%:*}"; then pass "${p#*:} ${secs}s run"; else fail "${p#*:} ${secs}s run (log: $out/${p#*:}/smoke.log)"; tail -30 "$out/${p#*:}/smoke.log"; fi
    done
    pids=()
  fi
done
for p in "${pids[@]}"; do
  if wait "${p%%:*}"; then pass "${p#*:} ${secs}s run"; else fail "${p#*:} ${secs}s run (log: $out/${p#*:}/smoke.log)"; tail -30 "$out/${p#*:}/smoke.log"; fi
done
for t in "${targets[@]}"; do
  grep -E "^stat::(number_of_executed_units|peak_rss_mb)|INITED|DONE" "$out/$t/smoke.log" 2>/dev/null | tail -3 | sed "s/^/fuzz: $t: /"
done

# 2. Replay under ASan: every committed input, once.
for t in "${targets[@]}"; do
  if [ ! -x "$asan/$t" ]; then fail "$t: ASan build missing"; continue; fi
  if "$asan/$t" "fuzz/corpus/$t" "fuzz/regressions/$t" -runs=0 -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$out/$t/artifacts/" > "$out/$t/replay.log" 2>&1; then
    pass "$t ASan replay ($(find "fuzz/corpus/$t" "fuzz/regressions/$t" -type f ! -name '.*' | wc -l) inputs)"
  else
    fail "$t ASan replay (log: $out/$t/replay.log)"
    tail -40 "$out/$t/replay.log"
  fi
done
echo "fuzz outputs: $out"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
