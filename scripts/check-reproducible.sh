#!/usr/bin/env bash
# Two clean builds (separate target directories) must give the same image id. The first build's
# image is also the one CI loads (target/image/kms-node.tar, its id in target/image/id), so the
# static binary is built twice in all, not three times.
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
mkdir -p target/image
mv target/repro-a/image.tar target/image/kms-node.tar
echo "${ids[0]}" > target/image/id
rm -rf target/repro-b
echo "reproducible: ${ids[0]}"
