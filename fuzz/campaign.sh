#!/usr/bin/env bash
# A long ASan campaign, two targets at a time at nice 19 (the machine is shared):
#   fuzz/campaign.sh SECONDS [TARGET...]   (default: all four targets)
# Each target fuzzes for SECONDS starting from the committed corpus and regression inputs;
# new inputs go to $CAMPAIGN_DIR/<target>/corpus (default /tmp/vufuzz-campaign), crashes to
# .../artifacts/ (fork mode: a crash does not end the campaign). The summary (CPU seconds, executions, cov/ft, crashes) is printed per target.
set -uo pipefail
cd "$(dirname "$0")"
secs=${1:?usage: campaign.sh SECONDS [TARGET...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(dispatch split_ring mem_table inflight)
dir=${CAMPAIGN_DIR:-/tmp/vufuzz-campaign}
bin=${FUZZ_BIN:-target/asan/x86_64-unknown-linux-gnu/release}
run() {
  local t=$1
  mkdir -p "$dir/$t/corpus" "$dir/$t/artifacts"
  /usr/bin/time -f "cpu_seconds %U user %S sys" -o "$dir/$t/time.txt" \
    nice -n 19 "$bin/$t" "$dir/$t/corpus" "corpus/$t" "regressions/$t" \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    -artifact_prefix="$dir/$t/artifacts/" > "$dir/$t/asan.log" 2>&1
}
summary() {
  local t=$1
  echo "$t: $(cat "$dir/$t/time.txt" 2>/dev/null | tail -1);" \
    "executions $(grep -oE '^#[0-9]+' "$dir/$t/asan.log" | tail -1 | tr -d '#');" \
    "$(grep -E '^#[0-9]+' "$dir/$t/asan.log" | grep -oE 'cov: [0-9]+ ft: [0-9]+' | tail -1);" \
    "crashes: $(find "$dir/$t/artifacts" -type f | wc -l)"
}
i=0
while [ $i -lt ${#targets[@]} ]; do
  run "${targets[$i]}" &
  p1=$!
  p2=""
  if [ $((i + 1)) -lt ${#targets[@]} ]; then run "${targets[$((i + 1))]}" & p2=$!; fi
  wait $p1 ${p2:+$p2}
  i=$((i + 2))
done
for t in "${targets[@]}"; do summary "$t"; done
