#!/bin/bash
# Consumer tier: QEMU's own libvhost-user consumers, built unchanged against
# the library QEMU ships ("c-original") and against this repository ("ours"),
# then driven by a real QEMU frontend with a Linux guest.
#
#   tests/consumers/run.sh [--lib ours|c-original|both] [--gen 7.2|10.0|both]
#                          [--frontend 7.2|10.0|both] [--no-guest] [--no-rust]
#                          [--tests blk,fs,net,scsi,packed,status,iommu,netstate]
#
# Needs root and a Debian 12 machine; installs what it needs with apt-get.
# Everything downloaded or built lives in $VU_CACHE (default
# /var/tmp/vu-consumers), never in the repository.  Ends with the line
# "N passed, N failed, N skipped"; exits non-zero on any failure.
# --gen picks the consumers' source generation, --frontend the QEMU that
# runs the guest (Debian 12's 7.2, bookworm-backports' 10.0.2); --tests
# packed runs only the packed-ring tests (blk includes them).
# SPDX-License-Identifier: GPL-2.0-or-later

# The whole script is one function: bash reads it completely before running
# it, so editing this file during a run cannot derail that run (see the
# last line).
main() {
set -u -o pipefail

TIER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$TIER_DIR/../.." && pwd)
CACHE=${VU_CACHE:-/var/tmp/vu-consumers}
# the tree that stands in for subprojects/libvhost-user as "ours"
OURS=$(cd "${VU_OURS:-$REPO}" && pwd)

LIBS="c-original ours"
GENS="7.2 10.0"
DO_GUEST=1
DO_RUST=1
FRONTENDS="7.2 10.0"
GUEST_TESTS=blk,fs,net,scsi
usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case $1 in
        --lib) shift; case ${1:-} in
                   both) LIBS="c-original ours" ;; ours|c-original) LIBS=$1 ;; *) usage 2 ;; esac ;;
        --gen) shift; case ${1:-} in
                   both) GENS="7.2 10.0" ;; 7.2|10.0) GENS=$1 ;; *) usage 2 ;; esac ;;
        --frontend) shift; case ${1:-} in
                   both) FRONTENDS="7.2 10.0" ;; 7.2|10.0) FRONTENDS=$1 ;; *) usage 2 ;; esac ;;
        --no-guest) DO_GUEST=0 ;;
        --no-rust) DO_RUST=0 ;;
        --tests) shift; GUEST_TESTS=${1:-} ;;
        -h|--help) usage 0 ;;
        *) usage 2 ;;
    esac
    shift
done
[ "$DO_GUEST" = 0 ] && export VU_NO_GUEST=1

case $CACHE in
    "$REPO"|"$REPO"/*) echo "VU_CACHE must be outside the repository" >&2; exit 2 ;;
esac
mkdir -p "$CACHE"
RUNDIR=$CACHE/run
LOGDIR=$RUNDIR/logs
RESULTS=$RUNDIR/results.tsv
TABLE=$CACHE/consumers-results.md

# shellcheck source=lib/common.sh
. "$TIER_DIR/lib/common.sh"
# shellcheck source=lib/setup.sh
. "$TIER_DIR/lib/setup.sh"
# shellcheck source=lib/build.sh
. "$TIER_DIR/lib/build.sh"
# shellcheck source=lib/guest.sh
. "$TIER_DIR/lib/guest.sh"

# one run at a time per cache (the QEMU trees are shared)
exec 9> "$CACHE/.lock"
if ! flock -w 3600 9; then die "another consumer tier run holds $CACHE/.lock"; fi

trap 'kill_tracked' EXIT
trap 'kill_tracked; exit 130' INT TERM

rm -rf "$RUNDIR"; mkdir -p "$LOGDIR"
: > "$RESULTS"
T_START=$(date +%s)
SYS_PATH=$(vu_sys_path)

setup_host
gpu_deps_present && GPU_OK=1 || GPU_OK=0
if [ "$DO_GUEST" = 1 ]; then
    fetch_guest_bits
    make_initramfs
fi

# Consumers are built only when a selected test uses them (--tests netstate --no-rust: none).
NEED_CONSUMERS=1
case ",$GUEST_TESTS," in
    *,blk,*|*,fs,*|*,net,*|*,scsi,*|*,packed,*|*,status,*|*,iommu,*) ;;
    *) [ "$DO_RUST" = 0 ] && [ "$DO_GUEST" = 1 ] && NEED_CONSUMERS=0 ;;
esac
[ "$NEED_CONSUMERS" = 1 ] && for gen in $GENS; do
    fetch_source "$gen"
    for lib in $LIBS; do
        build_consumers "$gen" "$lib"
        if [ "$DO_GUEST" = 1 ]; then
            for fe in $FRONTENDS; do
                use_frontend "$fe"
                log "guest tests: QEMU $gen consumers, $lib, frontend QEMU $fe"
                run_guest_tests "$gen" "$lib"
            done
        fi
    done
done
# device state through a real frontend: the example net backend (this library only; QEMU 10.0's
# virtio-net migrates a vhost-user backend's state, 7.2's does not)
if [ "$DO_GUEST" = 1 ] && [[ " $FRONTENDS " == *" 10.0 "* ]] && [[ " $LIBS " == *" ours "* ]]; then
    case ",$GUEST_TESTS," in *,net,*|*,netstate,*)
        use_frontend 10.0
        log "guest tests: the example net backend's device state, frontend QEMU 10.0"
        test_netstate ;;
    esac
fi
# leave the slot holding what QEMU shipped
[ "$NEED_CONSUMERS" = 1 ] && for gen in $GENS; do
    case $gen in 7.2) d=$QEMU72_DIR ;; 10.0) d=$QEMU10_DIR ;; esac
    swap_library "$CACHE/src/$d" c-original
done

# ---- stage 2: hand the built consumers to the Rust frontend tests
ENV_FILE=$CACHE/consumers.env
write_consumers_env() {
    local gen lib c t key dir
    {
        echo "# consumer binaries built by tests/consumers/run.sh on $(date -u +%FT%TZ)"
        echo "VU_CONSUMERS_CACHE=$CACHE"
        for gen in $GENS; do
            for lib in $LIBS; do
                dir=$CACHE/bin/$gen/$lib
                key=$(echo "${gen}_$lib" | tr 'a-z.-' 'A-Z__')
                echo "VU_CONSUMER_BIN_DIR_$key=$dir"
                echo "VU_CONSUMER_LIB_PATH_$key=$dir/lib"
                while read -r c t; do
                    [ -x "$dir/$c" ] || continue
                    echo "VU_CONSUMER_${key}_$(echo "$c" | tr 'a-z-' 'A-Z_')=$dir/$c"
                done < <(consumer_targets "$gen")
            done
        done
    } > "$ENV_FILE"
}
write_consumers_env
log "consumer binary paths written to $ENV_FILE"

# Rust frontend tests against those binaries: tests/consumers/rust-stage.sh
if [ "$DO_RUST" = 1 ]; then
    local sel_lib=both sel_gen=both
    [ "$LIBS" = c-original ] || [ "$LIBS" = ours ] && sel_lib=$LIBS
    [ "$GENS" = 7.2 ] || [ "$GENS" = 10.0 ] && sel_gen=$GENS
    # vhost-user-scsi's control-plane test needs an iSCSI target: the guest
    # test's, on loopback, unless the caller named one
    local iscsi_dir=$RUNDIR/rust-iscsi started_iscsi=0
    if [ -z "${VU_ISCSI_URI:-}" ]; then
        mkdir -p "$iscsi_dir"
        truncate -s 16M "$iscsi_dir/disk.img"
        if BACKEND_TIMEOUT=3600 start_iscsi_target "$iscsi_dir" "$iscsi_dir/disk.img" \
            iqn.2026-12.org.example.vu-tier:rust-stage; then
            export VU_ISCSI_URI=$ISCSI_URI
            started_iscsi=1
        else
            log "stage 2: the iSCSI target did not start; vhost-user-scsi's test will skip"
        fi
    fi
    VU_CACHE=$CACHE VU_RESULTS=$RESULTS VU_LOGDIR=$LOGDIR \
        bash "$TIER_DIR/rust-stage.sh" --lib "$sel_lib" --gen "$sel_gen" --env "$ENV_FILE" || true
    if [ "$started_iscsi" = 1 ]; then
        stop_iscsi_target || true
        unset VU_ISCSI_URI
    fi
fi

# ---- results table
/usr/bin/python3 "$TIER_DIR/table.py" --results "$RESULTS" --gens "$GENS" --libs "$LIBS" \
    --frontends "$FRONTENDS" --frontend-version-72 "${QEMU_VERSION_7_2:-not run}" \
    --frontend-version-100 "${QEMU_VERSION_10_0:-not run}" --kernel "${KVER:-not run}" \
    --commit "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --guest "$DO_GUEST" > "$TABLE.tmp" && mv "$TABLE.tmp" "$TABLE"
echo
cat "$TABLE"
echo
log "results table: $TABLE; logs: $LOGDIR; total time $(( $(date +%s) - T_START )) s"

pass=$(awk -F'\t' '$1 == "PASS"' "$RESULTS" | wc -l)
fail=$(awk -F'\t' '$1 == "FAIL"' "$RESULTS" | wc -l)
skip=$(awk -F'\t' '$1 == "SKIP"' "$RESULTS" | wc -l)
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" = 0 ]
}

# one line: bash has read the exit before main runs, so a file edited
# during a run is never read again afterwards
main "$@"; exit $?
