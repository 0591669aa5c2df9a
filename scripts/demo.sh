#!/usr/bin/env bash
# The README's first command: build everything, then serve a disk image from the example C
# backend (built against this library) to a real vhost-user frontend and report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --workspace
export VU_LIB_DIR="$PWD/target/release" VU_INCLUDE_DIR="$PWD/include"
cargo run --release --example blk_demo
