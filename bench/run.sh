#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Benchmark: this library vs the C original (QEMU 10.0.2 and 7.2 libvhost-user),
# the same C backend (examples-c/vhost-user-blk.c, --null) linked against each.
#
#   bench/run.sh            full mode (~45-60 min on 2 cores)
#   bench/run.sh --quick    quick mode (a few minutes)
#   bench/run.sh --only consumers,mem   only these sections (blk, micro, ctrl,
#                           consumers, mem); earlier raw results of the same
#                           mode are kept and merged into the report
#
# Real consumers (section `consumers`): QEMU's contrib vhost-user-blk and
# qemu-storage-daemon, unchanged, as built by the consumer tier
# (tests/consumers/run.sh) into $VU_CACHE/bin/<gen>/<lib>/ (VU_CACHE default
# /var/tmp/vu-consumers). BENCH_CONSUMERS_OURS=DIR takes `ours` binaries from
# DIR/<gen>/ instead. Missing binaries are built with the consumer tier's
# build step when BENCH_BUILD_CONSUMERS=1, else reported as n/a with the reason.
#
# Pinning: the driver (frontend) and each backend run on different CPUs,
# BENCH_PIN=FE,BE (default: the first two CPUs this process may use;
# BENCH_PIN=none: not pinned). The microbenchmark pins its two threads alike.
#
# Environment: CARGO_TARGET_DIR (default ./target), BENCH_WORK (default
# $CARGO_TARGET_DIR/bench-work: downloaded QEMU sources, built binaries, raw
# results). The report goes to bench/results/ (REPORT.md, report.png,
# results.json).
set -euo pipefail

MODE=full
ONLY=
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick ;;
        --full) MODE=full ;;
        --only) shift; ONLY=${1:-} ;;
        *) echo "usage: $0 [--quick|--full] [--only blk,micro,ctrl,consumers,mem]" >&2; exit 2 ;;
    esac
    shift
done
want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=${BENCH_WORK:-$CARGO_TARGET_DIR/bench-work}
mkdir -p "$WORK/src" "$WORK/bin" "$WORK/raw"
CC=${CC:-gcc}
CFLAGS="-O2 -g"

log() { echo "[bench] $*" >&2; }

# ---- tools --------------------------------------------------------------
need_pkgs=()
command -v valgrind >/dev/null || need_pkgs+=(valgrind)
command -v "$CC" >/dev/null || need_pkgs+=(gcc)
command -v xz >/dev/null || need_pkgs+=(xz-utils)
command -v python3 >/dev/null || need_pkgs+=(python3)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    apt-get install -y "${need_pkgs[@]}" >&2
fi
PYENV="$WORK/pyenv"
if ! "$PYENV/bin/python3" -c 'import matplotlib' 2>/dev/null; then
    log "installing matplotlib into $PYENV"
    python3 -m venv "$PYENV" >&2 || { apt-get install -y python3-venv >&2 && python3 -m venv "$PYENV" >&2; }
    "$PYENV/bin/pip" install -q matplotlib >&2
fi

# ---- the C original, downloaded at run time (never committed) ------------
ensure_sources() {
    if ! grep -qs 'deb-src' /etc/apt/sources.list.d/debian.sources ||
       ! grep -qs 'bookworm-backports' /etc/apt/sources.list.d/debian.sources; then
        log "enabling deb-src and bookworm-backports"
        sed -i -e 's/^Types: deb$/Types: deb deb-src/' \
               -e 's/^Suites: bookworm bookworm-updates$/Suites: bookworm bookworm-updates bookworm-backports/' \
               /etc/apt/sources.list.d/debian.sources
        apt-get update >&2
    fi
}

fetch_qemu() { # version-spec tarball topdir
    local spec=$1 tarball=$2 top=$3
    if [ ! -f "$WORK/src/$top/subprojects/libvhost-user/libvhost-user.c" ]; then
        if [ ! -f "$WORK/src/$tarball" ]; then
            ensure_sources
            log "downloading $spec"
            (cd "$WORK/src" && apt-get source --download-only --tar-only "$spec" >&2) ||
                { apt-get update >&2 && (cd "$WORK/src" && apt-get source --download-only --tar-only "$spec" >&2); }
        fi
        log "unpacking $tarball (libvhost-user and the headers it includes)"
        tar -C "$WORK/src" -xJf "$WORK/src/$tarball" --wildcards \
            "$top/subprojects/libvhost-user/*" "$top/include/qemu/*" "$top/include/standard-headers/*"
    fi
}

build_c_lib() { # name topdir
    local name=$1 dir="$WORK/src/$2/subprojects/libvhost-user" out="$WORK/lib-$1"
    if [ ! -f "$out/libvhost-user.a" ] || [ "$dir/libvhost-user.c" -nt "$out/libvhost-user.a" ]; then
        log "building C libvhost-user $name"
        mkdir -p "$out"
        (cd "$dir" && $CC $CFLAGS -std=gnu99 -D_GNU_SOURCE -pthread -I. -c libvhost-user.c -o "$out/libvhost-user.o")
        ar rcs "$out/libvhost-user.a" "$out/libvhost-user.o"
    fi
    LIBDIR[$name]=$out
    INCDIR[$name]=$dir
}

declare -A LIBDIR INCDIR
fetch_qemu 'qemu=1:10.0.2+ds-2+deb13u1~bpo12+1' 'qemu_10.0.2+ds.orig.tar.xz' qemu-10.0.2
fetch_qemu 'qemu=1:7.2+dfsg-7+deb12u18' 'qemu_7.2+dfsg.orig.tar.xz' qemu-7.2.0
build_c_lib c10 qemu-10.0.2
build_c_lib c72 qemu-7.2.0

# ---- this library (release) ----------------------------------------------
log "building this library (release)"
(cd "$ROOT" && cargo build --release --lib >&2)
LIBDIR[ours]=$CARGO_TARGET_DIR/release
INCDIR[ours]=$ROOT/include

# ---- the same C programs linked against each library ----------------------
for lib in ours c10 c72; do
    a=${LIBDIR[$lib]}/libvhost_user.a
    [ -f "$a" ] || a=${LIBDIR[$lib]}/libvhost-user.a
    log "linking backend and microbenchmark against $lib"
    # bench/blk-backend.c is examples-c/vhost-user-blk.c unchanged, plus an
    # offer of INFLIGHT_SHMFD so that inflight tracking can be measured.
    $CC -std=gnu11 $CFLAGS -Wall -I"${INCDIR[$lib]}" -I"$ROOT/examples-c" \
        -o "$WORK/bin/blk-$lib" "$ROOT/bench/blk-backend.c" "$a" \
        -lpthread -ldl -lm -lrt -lutil -lgcc_s
    $CC -std=gnu11 $CFLAGS -Wall -I"${INCDIR[$lib]}" \
        -o "$WORK/bin/micro-$lib" "$ROOT/bench/micro.c" "$a" \
        -lpthread -ldl -lm -lrt -lutil -lgcc_s
    $CC -std=gnu11 $CFLAGS -Wall -I"${INCDIR[$lib]}" \
        -o "$WORK/bin/mem-$lib" "$ROOT/bench/mem.c" "$a" \
        -lpthread -ldl -lm -lrt -lutil -lgcc_s
done

# ---- the driver -------------------------------------------------------------
log "building the benchmark driver"
(cd "$ROOT" && cargo bench --no-run --bench vhost-bench >&2)
DRIVER=$(cd "$ROOT" && cargo bench --no-run --bench vhost-bench --message-format=json 2>/dev/null |
         "$PYENV/bin/python3" -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="vhost-bench" and m.get("executable"):
        print(m["executable"])')
[ -x "$DRIVER" ] || { echo "driver not built" >&2; exit 1; }

RAW="$WORK/raw/$MODE"
if [ -z "$ONLY" ]; then
    rm -rf "$RAW"
    OUT="$RAW/results.json"
    SECTIONS=blk,micro,ctrl,consumers
    mkdir -p "$RAW"
    git -C "$ROOT" rev-parse --short HEAD > "$RAW/commit.txt" 2>/dev/null || true
else
    OUT="$RAW/results-${ONLY//,/-}.json"
    SECTIONS=$ONLY
fi
mkdir -p "$RAW"

# ---- memory footprint: heap in use after each step (bench/mem.c) ----------
if want mem; then
    log "memory footprint"
    : > "$RAW/mem.txt"
    git -C "$ROOT" rev-parse --short HEAD > "$RAW/mem-commit.txt" 2>/dev/null || true
    for lib in ours c10 c72; do
        for args in "-q 1" "-q 64" "-q 1 -m" "-q 1 -a 32" "-q 1 -a 256"; do
            out=$("$WORK/bin/mem-$lib" $args 2>&1 | tail -1) || true
            echo "$lib|$args|$out" >> "$RAW/mem.txt"
        done
    done
fi

# ---- real consumers: find (or build) the unchanged QEMU binaries ----------
VU_CACHE=${VU_CACHE:-/var/tmp/vu-consumers}
CONS_ARGS=()
IMAGE=/dev/shm/vu-bench-$$.img
if [[ ",$SECTIONS," == *",consumers,"* ]]; then
    for gen in 7.2 10.0; do
        for lib in ours c-original; do
            dir="$VU_CACHE/bin/$gen/$lib"
            if [ "$lib" = ours ] && [ -n "${BENCH_CONSUMERS_OURS:-}" ]; then
                dir="$BENCH_CONSUMERS_OURS/$gen"
            fi
            if { [ ! -x "$dir/vhost-user-blk" ] || [ ! -x "$dir/qemu-storage-daemon" ]; } &&
               [ "${BENCH_BUILD_CONSUMERS:-0}" = 1 ] && [ -x "$ROOT/tests/consumers/run.sh" ]; then
                log "building the $gen consumers against $lib (consumer tier, no guest tests)"
                VU_CACHE="$VU_CACHE" "$ROOT/tests/consumers/run.sh" --lib "$lib" --gen "$gen" \
                    --no-guest --no-rust >&2 || log "consumer build failed ($gen $lib)"
            fi
            for kind in contrib-blk qsd; do
                bin=vhost-user-blk; [ $kind = qsd ] && bin=qemu-storage-daemon
                if [ -x "$dir/$bin" ]; then
                    CONS_ARGS+=(--consumer "$gen,$lib,$kind,$dir/$bin")
                elif [ -x "$ROOT/tests/consumers/run.sh" ]; then
                    CONS_ARGS+=(--consumer-missing "$gen,$lib,$kind,not in $dir (tests/consumers/run.sh --gen $gen --lib $lib --no-guest --no-rust builds it; or BENCH_BUILD_CONSUMERS=1)")
                else
                    CONS_ARGS+=(--consumer-missing "$gen,$lib,$kind,not in $dir and no tests/consumers/run.sh to build it")
                fi
            done
        done
    done
    if [ -n "${BENCH_CONSUMERS_OURS:-}" ]; then
        echo "\`ours\` consumer binaries: $BENCH_CONSUMERS_OURS/<gen>/ (not the consumer tier's), e.g. relinked by bench/relink-consumers.sh with this checkout's library." > "$RAW/consumers-note.txt"
    fi
fi

DRIVER_SECTIONS=$(echo "$SECTIONS" | tr , '\n' | grep -v '^mem$' | paste -sd, || true)
if [ -n "$DRIVER_SECTIONS" ]; then
    log "running ($MODE mode: $DRIVER_SECTIONS); raw results in $RAW"
    PIN_ARGS=()
    [ -n "${BENCH_PIN:-}" ] && PIN_ARGS=(--pin "$BENCH_PIN")
    "$DRIVER" --mode "$MODE" --work "$WORK" --out "$OUT" --only "$DRIVER_SECTIONS" \
        --image "$IMAGE" "${CONS_ARGS[@]}" "${PIN_ARGS[@]}" \
        --lib ours="$WORK/bin/blk-ours,$WORK/bin/micro-ours" \
        --lib c10="$WORK/bin/blk-c10,$WORK/bin/micro-c10" \
        --lib c72="$WORK/bin/blk-c72,$WORK/bin/micro-c72"
    rm -f "$IMAGE"
fi

# ---- hotspots (callgrind annotate of one representative run per library) ---
for lib in ours c10 c72; do
    f="$RAW/hotspot-$lib.callgrind"
    if [ -f "$f" ]; then
        callgrind_annotate --auto=no --inclusive=no "$f" 2>/dev/null | head -60 > "$RAW/hotspot-$lib.txt" || true
        callgrind_annotate --auto=no --inclusive=yes "$f" 2>/dev/null | head -60 > "$RAW/hotspot-$lib-incl.txt" || true
    fi
done

log "writing the report"
"$PYENV/bin/python3" "$ROOT/bench/report.py" --raw "$RAW" --out "$ROOT/bench/results" --mode "$MODE"
log "done: $ROOT/bench/results/REPORT.md"
