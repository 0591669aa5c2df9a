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
# 10.0: works whichever library the tree was last built for (our binary
# layout is 10.0's). 7.2: the 7.2 header's VuDev differs, so the tree's
# objects must have been compiled against our header (tree last built for
# `ours`); refused otherwise.
set -euo pipefail
GEN=${1:?GEN}; OUT=${2:?OUTDIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
VU_CACHE=${VU_CACHE:-/var/tmp/vu-consumers}
case $GEN in
    7.2) B=$VU_CACHE/src/qemu-7.2.0/build ;;
    10.0) B=$VU_CACHE/src/qemu-10.0.2/build ;;
    *) echo "GEN: 7.2 or 10.0" >&2; exit 2 ;;
esac
[ -f "$B/build.ninja" ] || { echo "no consumer-tier build tree at $B" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --lib -p vhost-user-glib >&2)
LIB=$CARGO_TARGET_DIR/release/libvhost_user_glib.a
mkdir -p "$OUT"
for t in contrib/vhost-user-blk/vhost-user-blk storage-daemon/qemu-storage-daemon; do
    cmd=$(cd "$B" && ninja -t commands "$t" | tail -1)
    if [ "$GEN" = 7.2 ] && [[ "$cmd" == *"subprojects/libvhost-user/libvhost-user.a"* ]]; then
        echo "$B was last built for the C original: its 7.2 objects use the 7.2 layout" >&2
        exit 1
    fi
    cmd=${cmd/ -o $t / -o $OUT/$(basename "$t") }
    cmd=${cmd//subprojects\/libvhost-user\/libvhost-user-glib.a/$LIB}
    cmd=${cmd//subprojects\/libvhost-user\/libvhost-user.a/}
    (cd "$B" && eval "$cmd")
    nm "$OUT/$(basename "$t")" | grep -q 'vhost_user' || { echo "$t: no Rust symbols" >&2; exit 1; }
done
echo "relinked into $OUT (library: $(git -C "$ROOT" rev-parse --short HEAD))"
