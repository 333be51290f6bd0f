# The node image: one statically linked binary, nothing else (no image can be pulled).
# Build the binary first:  scripts/build-static.sh   (or use scripts/build-image.sh, which also
# packs the image deterministically and loads it as kms-node:dev).
FROM scratch
COPY target/x86_64-unknown-linux-gnu/release/kms-simnet /kms-simnet
COPY docker/etc/hosts /etc/hosts
WORKDIR /data
ENTRYPOINT ["/kms-simnet"]
CMD ["node", "--config", "/data/node.toml"]
