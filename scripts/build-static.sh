#!/usr/bin/env bash
# Statically linked release builds of kms-node (the node daemon) and kms-simnet (cluster setup, the
# dev issuer, the enclave client, replacements) for containers, in one cargo build. Prints the
# kms-simnet path last; kms-node is next to it.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\" --remap-path-prefix=$PWD=/src --remap-path-prefix=$HOME/.cargo=/cargo"
export SOURCE_DATE_EPOCH=0
cargo build --locked --release --target x86_64-unknown-linux-gnu -p kms-simnet -p kms-node
echo "${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/kms-simnet"
