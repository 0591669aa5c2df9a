#!/bin/bash
# Stage 2 of the consumer tier: the repository's Rust frontend tests
# (tests/consumers_*.rs and tests/consumer_*.rs, rust-vmm `vhost` frontend)
# against the consumer binaries that tests/consumers/run.sh built.
#
#   tests/consumers/rust-stage.sh [--lib ours|c-original|both] [--gen 7.2|10.0|both]
#                                 [--env ENV_FILE]
#
# Runs each such cargo test once per (generation, library) with
#   VU_CONSUMERS_ENV=ENV_FILE (default $VU_CONSUMERS_ENV, else
#   $VU_CACHE/consumers.env)  VU_REQUIRE_CONSUMERS=1
#   VU_CONSUMER_GEN=<gen>  VU_CONSUMER_LIB=<lib>
# (a missing binary is then a failure, not a skip); VU_EVDEV and VU_ISCSI_URI
# pass through to enable the vhost-user-input / -scsi tests.  Called by run.sh, which
# passes VU_RESULTS so the results land in its table; standalone it prints
# its own "N passed, N failed" line.
# SPDX-License-Identifier: GPL-2.0-or-later

main() {
    set -u -o pipefail
    local TIER_DIR REPO CACHE
    TIER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    REPO=$(cd "$TIER_DIR/../.." && pwd)
    CACHE=${VU_CACHE:-/var/tmp/vu-consumers}
    local LIBS="c-original ours" GENS="7.2 10.0"
    local env_file=${VU_CONSUMERS_ENV:-$CACHE/consumers.env}
    while [ $# -gt 0 ]; do
        case $1 in
            --lib) shift; case ${1:-} in both) ;; ours|c-original) LIBS=$1 ;; *) exit 2 ;; esac ;;
            --gen) shift; case ${1:-} in both) ;; 7.2|10.0) GENS=$1 ;; *) exit 2 ;; esac ;;
            --env) shift; env_file=${1:-} ;;
            *) sed -n '2,17p' "$0"; exit 2 ;;
        esac
        shift
    done
    local standalone=0
    if [ -z "${VU_RESULTS:-}" ]; then
        standalone=1
        VU_RESULTS=$(mktemp)
    fi
    RESULTS=$VU_RESULTS
    LOGDIR=${VU_LOGDIR:-$CACHE/run/logs}
    mkdir -p "$LOGDIR"
    # shellcheck source=lib/common.sh
    . "$TIER_DIR/lib/common.sh"

    local tests=() f name gen lib
    for f in "$REPO"/tests/consumers_*.rs "$REPO"/tests/consumer_*.rs; do
        [ -f "$f" ] && tests+=("$(basename "$f" .rs)")
    done
    if [ ${#tests[@]} = 0 ]; then
        log "stage 2: no tests/consumers_*.rs in the repository; nothing to run"
    elif ! command -v cargo > /dev/null 2>&1; then
        result SKIP "rust-frontend" "cargo not found"
    elif [ ! -f "$env_file" ]; then
        result FAIL "rust-frontend" "$env_file missing: run tests/consumers/run.sh first"
    else
        for name in "${tests[@]}"; do
            for gen in $GENS; do
                for lib in $LIBS; do
                    local lg=$LOGDIR/rust-$name-$gen-$lib.log summary
                    log "stage 2: cargo test --test $name ($gen, $lib)"
                    if VU_CONSUMERS_ENV=$env_file VU_REQUIRE_CONSUMERS=1 VU_CONSUMER_GEN=$gen \
                       VU_CONSUMER_LIB=$lib timeout -k 10 1500 \
                       cargo test --manifest-path "$REPO/Cargo.toml" --test "$name" \
                       -- --nocapture --test-threads 2 > "$lg" 2>&1; then
                        summary=$(grep -E '^test result:' "$lg" | tail -1)
                        result PASS "rust/$gen/$lib/$name" "$summary" rust-frontend "$gen" "$lib"
                    else
                        summary=$(grep -E '^test result:|^error|panicked' "$lg" | tail -1)
                        result FAIL "rust/$gen/$lib/$name" "cargo test failed: $summary (see $lg)" rust-frontend "$gen" "$lib"
                        tail -n 40 "$lg"
                    fi
                done
            done
        done
    fi
    if [ "$standalone" = 1 ]; then
        local pass fail skip
        pass=$(awk -F'\t' '$1 == "PASS"' "$RESULTS" | wc -l)
        fail=$(awk -F'\t' '$1 == "FAIL"' "$RESULTS" | wc -l)
        skip=$(awk -F'\t' '$1 == "SKIP"' "$RESULTS" | wc -l)
        rm -f "$RESULTS"
        echo "$pass passed, $fail failed, $skip skipped"
        [ "$fail" = 0 ]
    fi
}

main "$@"; exit $?
