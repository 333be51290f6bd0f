#!/usr/bin/env bash
# Two clean builds (separate target directories) must give the same image id.
set -euo pipefail
cd "$(dirname "$0")/.."
ids=()
for dir in target/repro-a target/repro-b; do
    rm -rf "$dir"
    bin=$(CARGO_TARGET_DIR=$dir scripts/build-static.sh | tail -1)
    ids+=("$(python3 scripts/pack-image.py "$bin" kms-node:dev "$dir/image.tar")")
    echo "$dir: ${ids[-1]}"
done
if [ "${ids[0]}" != "${ids[1]}" ]; then
    echo "NOT REPRODUCIBLE: ${ids[0]} != ${ids[1]}"
    exit 1
fi
echo "reproducible: ${ids[0]}"
