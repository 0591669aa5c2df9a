#!/bin/bash
# Consumer tier, Rust-frontend stage: runs tests/consumers_frontend.rs
# against the consumer binaries listed in consumers.env (written by
# tests/consumers/run.sh), with VU_REQUIRE_CONSUMERS=1: a missing env file or
# a missing blk consumer is a failure here, not a skip.
#
#   tests/consumers/rust-stage.sh [ENV_FILE]
#
# ENV_FILE defaults to $VU_CONSUMERS_ENV, else $VU_CACHE/consumers.env
# (VU_CACHE default /var/tmp/vu-consumers). Optional filters, passed through:
# VU_CONSUMER_GEN=7.2|10.0, VU_CONSUMER_LIB=c-original|ours; VU_EVDEV and
# VU_ISCSI_URI enable the vhost-user-input / -scsi tests. Exit status is
# cargo's; output ends with cargo's "test result:" line.
# SPDX-License-Identifier: GPL-2.0-or-later
set -u -o pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ENV_FILE=${1:-${VU_CONSUMERS_ENV:-${VU_CACHE:-/var/tmp/vu-consumers}/consumers.env}}
if [ ! -f "$ENV_FILE" ]; then
    echo "rust-stage: $ENV_FILE not found (run tests/consumers/run.sh first)" >&2
    echo "0 passed, 1 failed"
    exit 1
fi
export VU_CONSUMERS_ENV=$ENV_FILE VU_REQUIRE_CONSUMERS=1
exec timeout -k 10 1200 cargo test --manifest-path "$REPO/Cargo.toml" --test consumers_frontend -- --nocapture --test-threads 2
