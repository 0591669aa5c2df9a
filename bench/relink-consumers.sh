#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Relink the consumer tier's contrib vhost-user-blk and qemu-storage-daemon
# with this checkout's library (release build), without recompiling QEMU:
# the object files of the consumer tier's build tree are linked against
# $CARGO_TARGET_DIR/release/libvhost_user_glib.a (it holds the whole core).
# Used to benchmark the newest library when the consumer tier's `ours`
# binaries are older, or missing for a generation.
#
#   bench/relink-consumers.sh GEN OUTDIR      (GEN: 7.2 | 10.0)
#   then: BENCH_CONSUMERS_OURS=OUTDIR/.. bench/run.sh ...   (OUTDIR = .../<GEN>)
#
# It relinks the objects of the consumer tier's build directory for `ours`
# (build-ours: the tier keeps one build directory per library), which were
# compiled against our header.
set -euo pipefail
GEN=${1:?GEN}; OUT=${2:?OUTDIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
VU_CACHE=${VU_CACHE:-/var/tmp/vu-consumers}
case $GEN in
    7.2) B=$VU_CACHE/src/qemu-7.2.0/build-ours ;;
    10.0) B=$VU_CACHE/src/qemu-10.0.2/build-ours ;;
    *) echo "GEN: 7.2 or 10.0" >&2; exit 2 ;;
esac
[ -f "$B/build.ninja" ] || { echo "no consumer-tier build tree at $B" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --lib -p vhost-user-glib >&2)
LIB=$CARGO_TARGET_DIR/release/libvhost_user_glib.a
mkdir -p "$OUT"
for t in contrib/vhost-user-blk/vhost-user-blk storage-daemon/qemu-storage-daemon; do
    cmd=$(cd "$B" && ninja -t commands "$t" | tail -1)
    cmd=${cmd/ -o $t / -o $OUT/$(basename "$t") }
    cmd=${cmd//subprojects\/libvhost-user\/libvhost-user-glib.a/$LIB}
    cmd=${cmd//subprojects\/libvhost-user\/libvhost-user.a/}
    (cd "$B" && eval "$cmd")
    # (grep -c, not -q: -q would end nm with SIGPIPE, which pipefail reports as a failure)
    nm "$OUT/$(basename "$t")" | grep -c 'vhost_user' >/dev/null || { echo "$t: no Rust symbols" >&2; exit 1; }
done
echo "relinked into $OUT (library: $(git -C "$ROOT" rev-parse --short HEAD))"
