#!/usr/bin/env bash
# A long ASan campaign on a shared machine: ONE fuzzer process at a time at nice 19, the
# targets in turn (slices of SLICE seconds of wall time), until each has GOAL CPU seconds or
# the time END (seconds since the epoch) comes:
#   fuzz/campaign.sh [TARGET...]        (default: all six targets)
#   env: CAMPAIGN_DIR (default /tmp/vufuzz-campaign), SLICE (600), GOAL (1800), END (now + 3 h),
#        FUZZ_BIN (default target/asan/x86_64-unknown-linux-gnu/release; build it with
#        `RUSTC_BOOTSTRAP=1 cargo fuzz build --target-dir target/asan`).
# Each target works on a scratch copy of its committed corpus and regression inputs in
# $CAMPAIGN_DIR/<target>/corpus (never on corpus/); crashes go to .../artifacts/. CPU time is
# the fuzzer's user+sys time from /usr/bin/time, summed per target in .../cpu; the summary
# prints CPU seconds, executions, the last cov/ft/corpus line and the crash inputs per target.
set -uo pipefail
cd "$(dirname "$0")"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(dispatch split_ring mem_table inflight packed_ring iotlb)
dir=${CAMPAIGN_DIR:-/tmp/vufuzz-campaign}
bin=${FUZZ_BIN:-target/asan/x86_64-unknown-linux-gnu/release}
slice=${SLICE:-600}
goal=${GOAL:-1800}
end=${END:-$(($(date +%s) + 3 * 3600))}

# (cat, not awk FILE: awk gives up before END on a missing file, and a fresh target has none.)
cpu() { cat "$dir/$1/cpu" 2>/dev/null | awk '{s += $1} END {printf "%d", s + 0}'; }
execs() { cat "$dir/$1"/logs/*.log 2>/dev/null | grep -oE 'number_of_executed_units: [0-9]+' | awk '{s += $2} END {print s + 0}'; }

run_slice() {
  local t=$1 secs=$2
  mkdir -p "$dir/$t/corpus" "$dir/$t/artifacts" "$dir/$t/logs"
  if [ ! -f "$dir/$t/seeded" ]; then
    cp corpus/"$t"/* regressions/"$t"/* "$dir/$t/corpus/" 2>/dev/null
    touch "$dir/$t/seeded"
  fi
  local n log
  n=$(find "$dir/$t/logs" -name '*.log' | wc -l)
  log="$dir/$t/logs/$n.log"
  echo "$(date -u +%T) $t: slice $n, ${secs}s, $(cpu "$t") CPU s so far"
  /usr/bin/time -f "%U %S" -o "$dir/$t/time.$n" nice -n 19 "$bin/$t" "$dir/$t/corpus" \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$dir/$t/artifacts/" > "$log" 2>&1
  tail -1 "$dir/$t/time.$n" | awk '{printf "%.0f\n", $1 + $2}' >> "$dir/$t/cpu"
}

while :; do
  ran=0
  for t in "${targets[@]}"; do
    left=$((end - $(date +%s)))
    [ "$left" -ge 30 ] || break 2
    [ "$(cpu "$t")" -lt "$goal" ] || continue
    run_slice "$t" $((left < slice ? left : slice))
    ran=1
  done
  [ $ran -eq 1 ] || break
done
for t in "${targets[@]}"; do
  echo "$t: $(cpu "$t") CPU s; $(execs "$t") executions;" \
    "$(ls -v "$dir/$t"/logs/*.log 2>/dev/null | tail -1 | xargs -r grep -E '^#[0-9]+' | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' | tail -1);" \
    "crash inputs: $(find "$dir/$t/artifacts" -type f 2>/dev/null | wc -l)"
done
