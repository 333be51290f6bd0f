#!/usr/bin/env python3
"""Packs the static binaries into a FROM-scratch image as a docker-archive, deterministically:
fixed timestamps, owners and ordering, a fixed `created` date. The same binaries always give the
same image id (sha256 of the config), so two clean builds can be compared.

The image's entry point is the node daemon, `/kms-node run --config /data/node.toml`; `/kms-simnet`
(setup, the dev issuer, the enclave client, replacements) is next to it.

usage: pack-image.py KMS_SIMNET_BINARY TAG OUT.tar   (kms-node is taken from the same directory;
then: docker load -i OUT.tar)
"""
import hashlib, io, json, os, sys, tarfile

def add(tar, name, data=None, mode=0o644, is_dir=False):
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    if is_dir:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    else:
        info.size, info.mode = len(data), mode
        tar.addfile(info, io.BytesIO(data))

def main(binary, tag, out):
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.USTAR_FORMAT) as t:
        add(t, "data", is_dir=True)
        add(t, "etc", is_dir=True)
        add(t, "etc/hosts", open("docker/etc/hosts", "rb").read())
        add(t, "kms-node", open(os.path.join(os.path.dirname(binary), "kms-node"), "rb").read(), mode=0o755)
        add(t, "kms-simnet", open(binary, "rb").read(), mode=0o755)
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Entrypoint": ["/kms-node"], "Cmd": ["run", "--config", "/data/node.toml"], "WorkingDir": "/data"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "scripts/pack-image.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_id = hashlib.sha256(config_bytes).hexdigest()
    manifest = [{"Config": config_id + ".json", "RepoTags": [tag], "Layers": [config_id + "/layer.tar"]}]
    with tarfile.open(out, mode="w", format=tarfile.USTAR_FORMAT) as t:
        add(t, config_id, is_dir=True)
        add(t, config_id + "/layer.tar", layer_bytes)
        add(t, config_id + ".json", config_bytes)
        add(t, "manifest.json", json.dumps(manifest, sort_keys=True).encode())
    print("sha256:" + config_id)

if __name__ == "__main__":
    main(*sys.argv[1:4])
