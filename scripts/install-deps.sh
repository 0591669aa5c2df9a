#!/usr/bin/env bash
# Installs what building and testing this repository needs on a fresh Debian 12 machine.
# Idempotent; run as root (CI is root) or through sudo.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# llvm-14-linker-tools puts LLVM's linker plugin into bfd-plugins, as on many Debian machines:
# tests/meson_install.rs proves the static libraries stay ordinary archives (nm, gcc -flto) then.
pkgs=(build-essential gcc g++ binutils pkg-config meson ninja-build libglib2.0-dev valgrind python3
      llvm-14-linker-tools)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo (Rust toolchain) is required" >&2; exit 1; }
# The lint gates of scripts/test-all.sh.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  command -v rustup >/dev/null && rustup component add rustfmt clippy >/dev/null
fi
# The fuzz stage (scripts/fuzz-ci.sh): cargo-fuzz, pinned.
if ! command -v cargo-fuzz >/dev/null; then
  cargo install --locked cargo-fuzz --version 0.13.2
fi
