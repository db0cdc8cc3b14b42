#!/usr/bin/env python3
"""Assembles a single-layer OCI image archive (an OCI layout in a tar) from local files, without
Docker or a registry. `ctr images import` loads the result under the name given by --name.

Every entry is written with fixed owner, mode and mtime, so the same inputs give the same layer
digest. The archive is cached: when the key (this script, the arguments but not where the sources
lie, and the content of every input file) matches the stamp next to the output, nothing is
rebuilt, so a fresh clone reuses it. Prints the archive path.

  build-image.py --out DIR --name REF [--busybox PATH] [--cacerts PATH]
                 [--file SRC:DEST[:MODE[:UID:GID]]] [--dir DEST[:MODE[:UID:GID]]]
                 [--tree SRC:DEST] [--text DEST:CONTENT] [--user U:G] [--env K=V] [--entrypoint JSON] [--cmd JSON]
                 [--workdir DIR]
"""
import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EPOCH = 0


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="cache directory for the archive")
    p.add_argument("--name", required=True, help="full reference, e.g. docker.io/openbao/openbao:2.7.2")
    p.add_argument("--busybox", help="a static busybox: /bin/busybox plus a link per applet")
    p.add_argument("--cacerts", help="a CA bundle for /etc/ssl/certs/ca-certificates.crt")
    p.add_argument("--file", action="append", default=[])
    p.add_argument("--dir", action="append", default=[])
    p.add_argument("--tree", action="append", default=[],
                   help="SRC:DEST, a directory copied whole (files keep their mode, symlinks stay links)")
    p.add_argument("--text", action="append", default=[])
    p.add_argument("--user", default="")
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--entrypoint", default="null")
    p.add_argument("--cmd", default="null")
    p.add_argument("--workdir", default="/")
    return p.parse_args()


def owner_mode(fields, default_mode):
    mode = int(fields[0], 8) if fields and fields[0] else default_mode
    uid = int(fields[1]) if len(fields) > 1 else 0
    gid = int(fields[2]) if len(fields) > 2 else 0
    return mode, uid, gid


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Layer:
    """Entries of the single layer, keyed by path; parents are created on demand."""

    def __init__(self):
        self.entries = {}

    def dir(self, path, mode=0o755, uid=0, gid=0):
        path = path.strip("/")
        parent = os.path.dirname(path)
        if parent and parent not in self.entries:
            self.dir(parent)
        self.entries[path] = ("dir", None, mode, uid, gid)

    def _parent(self, path):
        parent = os.path.dirname(path)
        if parent and parent not in self.entries:
            self.dir(parent)

    def file(self, path, src, mode=0o644, uid=0, gid=0):
        path = path.strip("/")
        self._parent(path)
        self.entries[path] = ("file", src, mode, uid, gid)

    def text(self, path, content, mode=0o644, uid=0, gid=0):
        path = path.strip("/")
        self._parent(path)
        self.entries[path] = ("text", content.encode(), mode, uid, gid)

    def symlink(self, path, target):
        path = path.strip("/")
        self._parent(path)
        self.entries[path] = ("symlink", target, 0o777, 0, 0)

    def write(self, fileobj):
        with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.entries):
                kind, data, mode, uid, gid = self.entries[path]
                info = tarfile.TarInfo(path)
                info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, EPOCH
                info.uname = info.gname = ""
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif kind == "symlink":
                    info.type, info.linkname = tarfile.SYMTYPE, data
                    tar.addfile(info)
                elif kind == "text":
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                else:
                    info.size = os.path.getsize(data)
                    with open(data, "rb") as src:
                        tar.addfile(info, src)


def tree_entries(src):
    """(relative path, absolute path) of everything under src, parents before children."""
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in dirs + sorted(files):
            path = os.path.join(root, name)
            yield os.path.relpath(path, src), path


def add_tree(layer, src, dest):
    for rel, path in tree_entries(src):
        target = os.path.join(dest, rel)
        if os.path.islink(path):
            layer.symlink(target, os.readlink(path))
        elif os.path.isdir(path):
            layer.dir(target)
        else:
            layer.file(target, path, 0o755 if os.access(path, os.X_OK) else 0o644)


def busybox_applets(busybox):
    out = subprocess.run([busybox, "--list-full"], check=True, capture_output=True, text=True).stdout
    return [line for line in out.split() if line and line != "bin/busybox"]


def build_layer(args):
    layer = Layer()
    for d, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("root", 0o700)):
        layer.dir(d, mode)
    for d in ("dev", "proc", "sys", "var", "usr/bin", "usr/sbin", "sbin"):
        layer.dir(d)
    layer.text("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    layer.text("etc/group", "root:x:0:\nnogroup:x:65534:\n")
    layer.text("etc/nsswitch.conf", "hosts: files dns\n")
    if args.busybox:
        layer.file("bin/busybox", args.busybox, 0o755)
        for applet in busybox_applets(args.busybox):
            layer.symlink(applet, "/bin/busybox")
    if args.cacerts:
        layer.file("etc/ssl/certs/ca-certificates.crt", args.cacerts, 0o644)
    for spec in args.dir:
        dest, *rest = spec.split(":")
        layer.dir(dest, *owner_mode(rest, 0o755))
    for spec in args.file:
        src, dest, *rest = spec.split(":")
        layer.file(dest, src, *owner_mode(rest, 0o755))
    for spec in args.tree:
        src, dest = spec.split(":")
        add_tree(layer, src, dest)
    for spec in args.text:
        dest, content = spec.split(":", 1)
        layer.text(dest, content.replace("\\n", "\n"))
    return layer


def cache_key(args):
    h = hashlib.sha256()
    h.update(open(__file__, "rb").read())
    # Sources count by content, not by path: a fresh clone (another path) reuses the archive.
    located = dict(vars(args))
    located["busybox"], located["cacerts"] = bool(args.busybox), bool(args.cacerts)
    located["file"] = [s.split(":", 1)[1] for s in args.file]
    located["tree"] = [s.split(":", 1)[1] for s in args.tree]
    h.update(json.dumps(located, sort_keys=True).encode())
    inputs = [args.busybox, args.cacerts] + [s.split(":")[0] for s in args.file]
    for path in filter(None, inputs):
        h.update(sha256_file(path).encode())
    for spec in args.tree:
        for rel, path in tree_entries(spec.split(":")[0]):
            h.update(rel.encode())
            if os.path.islink(path):
                h.update(os.readlink(path).encode())
            elif os.path.isfile(path):
                h.update(sha256_file(path).encode())
    return h.hexdigest()


def blob(tar, data):
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size, info.mtime, info.mode = len(data), EPOCH, 0o644
    tar.addfile(info, io.BytesIO(data))
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_archive(args, out_path):
    layer = build_layer(args)
    config_user = {"Env": [PATH_ENV] + args.env, "WorkingDir": args.workdir}
    if args.user:
        config_user["User"] = args.user
    for key, value in (("Entrypoint", json.loads(args.entrypoint)), ("Cmd", json.loads(args.cmd))):
        if value is not None:
            config_user[key] = value
    with tempfile.TemporaryFile(dir=os.path.dirname(out_path)) as layer_file:
        layer.write(layer_file)
        layer_size = layer_file.tell()
        layer_file.seek(0)
        h = hashlib.sha256()
        for chunk in iter(lambda: layer_file.read(1 << 20), b""):
            h.update(chunk)
        layer_digest = f"sha256:{h.hexdigest()}"
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": config_user,
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created_by": "hack/oci/build-image.py", "created": "1970-01-01T00:00:00Z"}],
            "created": "1970-01-01T00:00:00Z",
        }
        tmp = out_path + ".tmp"
        with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
            layout = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
            info = tarfile.TarInfo("oci-layout")
            info.size, info.mtime = len(layout), EPOCH
            tar.addfile(info, io.BytesIO(layout))
            layer_file.seek(0)
            info = tarfile.TarInfo(f"blobs/sha256/{layer_digest[7:]}")
            info.size, info.mtime, info.mode = layer_size, EPOCH, 0o644
            tar.addfile(info, layer_file)
            config_desc = blob(tar, json.dumps(config, sort_keys=True).encode())
            manifest = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest,
                            "size": layer_size}],
            }
            manifest_desc = blob(tar, json.dumps(manifest, sort_keys=True).encode())
            tag = args.name.rsplit(":", 1)[1]
            index = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [{
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    **manifest_desc,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    # containerd names the imported image after the first, other tools after the second.
                    "annotations": {"io.containerd.image.name": args.name,
                                    "org.opencontainers.image.ref.name": tag},
                }],
            }
            data = json.dumps(index, sort_keys=True).encode()
            info = tarfile.TarInfo("index.json")
            info.size, info.mtime = len(data), EPOCH
            tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, out_path)


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    safe = args.name.replace("/", "_").replace(":", "_")
    out_path = os.path.join(args.out, f"{safe}.tar")
    stamp = out_path + ".key"
    key = cache_key(args)
    if os.path.exists(out_path) and os.path.exists(stamp) and open(stamp).read() == key:
        print(f"{args.name} {out_path}")
        return
    print(f"assembling image {args.name}", file=sys.stderr)
    write_archive(args, out_path)
    with open(stamp, "w") as f:
        f.write(key)
    print(f"{args.name} {out_path}")


if __name__ == "__main__":
    main()
