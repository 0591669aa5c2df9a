#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Instructions per request of the in-process microbenchmark (bench/micro.c --inline, callgrind
# --toggle-collect=bench_backend_drain: pop, push, notify, free), this library vs the C
# original, for the library-bound shapes of bench/run.sh. Instruction counts do not depend on
# machine load, so this runs on a busy machine (throughput needs bench/run.sh on a quiet one).
#
#   bench/cg-micro.sh                 every shape, ours (split and packed) vs C 10.0.2 split
#   bench/cg-micro.sh -p "-d 64 -e"   per-function profile (self instr/req) of one shape, ours
#
# Needs bench/run.sh's C build ($BENCH_WORK/lib-c10, from a run of bench/run.sh) and builds
# this library (release). N requests per run (default 10000) minus a zero-request run.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=${BENCH_WORK:-$CARGO_TARGET_DIR/bench-work}
N=${N:-10000}
CFLAGS="-O2 -g"
(cd "$ROOT" && cargo build --release --lib >&2)
mkdir -p "$WORK/bin" "$WORK/cg"
link() { # lib archive incdir
    gcc -std=gnu11 $CFLAGS -Wall -I"$3" -o "$WORK/bin/micro-$1" "$ROOT/bench/micro.c" "$2" \
        -lpthread -ldl -lm -lrt -lutil -lgcc_s
}
link ours "$CARGO_TARGET_DIR/release/libvhost_user.a" "$ROOT/include"
HAVE_C=0
if [ -f "$WORK/lib-c10/libvhost-user.a" ]; then
    link c10 "$WORK/lib-c10/libvhost-user.a" "$WORK/src/qemu-10.0.2/subprojects/libvhost-user"
    HAVE_C=1
fi
cg() { # lib n args... -> total instructions
    local lib=$1 n=$2; shift 2
    local f="$WORK/cg/cg-$lib-$n-$(echo "$*" | tr -c 'a-z0-9' _)"
    valgrind --tool=callgrind --callgrind-out-file="$f" --toggle-collect=bench_backend_drain \
        --quiet "$WORK/bin/micro-$lib" --inline "$@" -n "$n" >/dev/null 2>&1
    awk '/^totals:/ {print $2}' "$f"
}
per_req() { # lib args...
    local lib=$1; shift
    local a b
    a=$(cg "$lib" 0 "$@"); b=$(cg "$lib" "$N" "$@")
    echo "scale=1; ($b - $a) / $N" | bc
}
if [ "${1:-}" = -p ]; then
    args=$2
    f="$WORK/cg/profile"
    valgrind --tool=callgrind --callgrind-out-file="$f" --toggle-collect=bench_backend_drain \
        --dump-instr=no --quiet "$WORK/bin/micro-${LIB:-ours}" --inline $args -n "$N" >/dev/null 2>&1
    callgrind_annotate --inclusive=no "$f" 2>/dev/null | sed -n '1,60p' |
        awk -v n="$N" '/^ *[0-9,]+ / {v=$1; gsub(",","",v); printf "%8.1f  %s\n", v/n, substr($0, index($0,$2))} !/^ *[0-9,]+ / {print}'
    exit 0
fi
SHAPES=("-d 1 -e" "-d 16 -e" "-d 64 -e" "-d 16 -e -s indirect16" "-d 16 -e -s seg64"
        "-d 16 -e -r 8" "-d 16 -e -r 256" "-d 16" "-d 16 -e -i")
printf '| shape | ours split | ours packed | C 10.0.2 split | split/C | packed/C |\n|---|---:|---:|---:|---:|---:|\n'
for s in "${SHAPES[@]}"; do
    o=$(per_req ours $s); p=$(per_req ours $s -p)
    if [ $HAVE_C = 1 ]; then c=$(per_req c10 $s); else c=; fi
    if [ -n "$c" ]; then
        r1=$(echo "scale=2; $o / $c" | bc); r2=$(echo "scale=2; $p / $c" | bc)
    else r1=-; r2=-; c=-; fi
    printf '| %s | %s | %s | %s | %s | %s |\n' "$s" "$o" "$p" "$c" "$r1" "$r2"
done
