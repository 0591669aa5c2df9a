#!/usr/bin/env bash
# The whole test suite: the Rust and C API tests (cargo test), then the consumer tier
# (QEMU's own consumers built unchanged against this library, under real frontends), with the
# fuzz stage in between (scripts/fuzz-ci.sh: each fuzz target ~60 s, corpora replayed under
# ASan). Ends with one summary line: "N passed, N failed".
#   --no-consumers   skip the consumer tier (quick local runs)
#   --no-fuzz        skip the fuzz stage
set -uo pipefail
cd "$(dirname "$0")/.."
run_consumers=1
run_fuzz=1
for a in "$@"; do
  case "$a" in
    --no-consumers) run_consumers=0 ;;
    --no-fuzz) run_fuzz=0 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
  esac
done
bash scripts/install-deps.sh || exit 1

log=$(mktemp)
trap 'rm -f "$log"' EXIT
passed=0 failed=0 status=0

# Lint gates: formatting and clippy (warnings are errors). A failing gate counts as one
# failed test, so the summary line (and CI) fails.
if cargo fmt --all --check >/dev/null 2>&1; then
  echo "lint: cargo fmt --check passed"; passed=$((passed + 1))
else
  cargo fmt --all --check 2>&1 | head -40
  echo "lint: cargo fmt --check FAILED"; failed=$((failed + 1)); status=1
fi
if cargo clippy --workspace --all-targets -- -D warnings 2>&1 | tee "$log" | tail -3; then
  echo "lint: cargo clippy passed"; passed=$((passed + 1))
else
  grep -E '^(error|warning)' -A8 "$log" | head -80
  echo "lint: cargo clippy FAILED"; failed=$((failed + 1)); status=1
fi

# Integration tests link the C examples against the static library: build it first.
cargo build --all-targets 2>&1 | tail -3
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
while read -r p f; do
  passed=$((passed + p)); failed=$((failed + f))
done < <(sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$log")

# Adds the "N passed, N failed" line of a stage's log to the totals (a stage without one failed).
add_stage_counts() {
  local line p f
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
  if [ -n "$line" ]; then
    p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed*}
    passed=$((passed + p)); failed=$((failed + f))
  else
    failed=$((failed + 1)); status=1
  fi
}

if [ "$run_fuzz" -eq 1 ]; then
  bash scripts/fuzz-ci.sh 2>&1 | tee "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  add_stage_counts
fi

if [ "$run_consumers" -eq 1 ] && [ -x tests/consumers/run.sh ]; then
  tests/consumers/run.sh 2>&1 | tee "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  add_stage_counts
fi
[ "$failed" -eq 0 ] || status=1
echo "$passed passed, $failed failed"
exit $status
