# The node image: two statically linked binaries, nothing else (no image can be pulled): the node
# daemon kms-node (the entry point) and kms-simnet (cluster setup, the dev issuer, the enclave
# client, replacements). Build them first:  scripts/build-static.sh   (or use
# scripts/build-image.sh, which also packs the image deterministically and loads it as
# kms-node:dev).
FROM scratch
COPY target/x86_64-unknown-linux-gnu/release/kms-node /kms-node
COPY target/x86_64-unknown-linux-gnu/release/kms-simnet /kms-simnet
COPY docker/etc/hosts /etc/hosts
WORKDIR /data
ENTRYPOINT ["/kms-node"]
CMD ["run", "--config", "/data/node.toml"]
