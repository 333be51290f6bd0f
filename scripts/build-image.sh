#!/usr/bin/env bash
# Builds the static binary, packs the kms-node:dev image deterministically and loads it.
# Prints the image id.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(scripts/build-static.sh | tail -1)
mkdir -p target/image
python3 scripts/pack-image.py "$bin" kms-node:dev target/image/kms-node.tar > target/image/id
docker load -q -i target/image/kms-node.tar >/dev/null
cat target/image/id
