#!/usr/bin/env bash
# Statically linked release build of kms-simnet (node, dev issuer setup, client) for containers.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\" --remap-path-prefix=$PWD=/src --remap-path-prefix=$HOME/.cargo=/cargo"
export SOURCE_DATE_EPOCH=0
cargo build --locked --release --target x86_64-unknown-linux-gnu -p kms-simnet
echo "${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/kms-simnet"
