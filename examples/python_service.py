#!/usr/bin/env python3
"""A service-style volume workflow written against python-rados/python-rbd names only.

It runs unchanged on Ceph's own bindings (``import rados, rbd``) and on rbd_core's shim
(``from rbd_core.compat import rados, rbd``); the shim is the one imported below:

    .venv/bin/python examples/python_service.py [--conf $CEPH_CONF] [--id admin] [--pool rbd]

Steps (what a Cinder-like driver does): connect, create a volume, write to it, snapshot it,
clone the snapshot into a new volume, flatten the clone with progress, and delete everything.
"""
from __future__ import annotations

import argparse
import os
import sys
import uuid

from rbd_core.compat import rados, rbd

GiB = 1 << 30
MiB = 1 << 20


def log(msg: str) -> None:
    print(f"[service] {msg}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conf", default=os.environ.get("CEPH_CONF"), help="ceph.conf (default: $CEPH_CONF)")
    ap.add_argument("--id", default=os.environ.get("RBD_TEST_CLIENT_ID", "admin"), help="client id (default admin)")
    ap.add_argument("--pool", default="rbd", help="pool for the volumes (default rbd)")
    args = ap.parse_args()

    volume = f"volume-{uuid.uuid4()}"
    clone = f"volume-{uuid.uuid4()}"
    snap = "snapshot-1"
    features = (rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK | rbd.RBD_FEATURE_OBJECT_MAP
                | rbd.RBD_FEATURE_FAST_DIFF | rbd.RBD_FEATURE_DEEP_FLATTEN)

    with rados.Rados(conffile=args.conf, rados_id=args.id) as cluster:
        log(f"connected to cluster {cluster.get_fsid()}")
        stats = cluster.get_cluster_stats()
        log(f"cluster has {stats['kb_avail'] // (1024 * 1024)} GiB available")
        with cluster.open_ioctx(args.pool) as ioctx:
            rbd_inst = rbd.RBD()
            try:
                rbd_inst.create(ioctx, volume, 1 * GiB, order=22, features=features)
                log(f"created {args.pool}/{volume} (1 GiB)")
                with rbd.Image(ioctx, volume) as image:
                    for i in range(8):
                        image.write(bytes([i]) * (4 * MiB), i * 64 * MiB)
                    image.flush()
                    image.create_snap(snap)
                    image.protect_snap(snap)  # works with clone v1 and v2 alike
                    log(f"wrote 32 MiB and took snapshot {snap}: "
                        f"{[s['name'] for s in image.list_snaps()]}")

                rbd_inst.clone(ioctx, volume, snap, ioctx, clone, features=features)
                with rbd.Image(ioctx, clone) as child:
                    pool, parent, parent_snap = child.parent_info()
                    log(f"cloned {pool}/{parent}@{parent_snap} -> {clone}")

                    def on_progress(offset: int, total: int) -> int:
                        if offset + 1 == total or offset % 64 == 0:
                            log(f"flatten {offset + 1}/{total}")
                        return 0

                    child.flatten(on_progress=on_progress)
                    assert child.read(64 * MiB, 4) == bytes([1]) * 4
                    try:
                        child.parent_info()
                    except rbd.ImageNotFound:
                        log(f"{clone} is flattened (no parent)")
            except rbd.Error as e:
                log(f"failed: {type(e).__name__}: {e}")
                return 1
            finally:
                for name in (clone, volume):
                    try:
                        with rbd.Image(ioctx, name) as image:
                            for s in list(image.list_snaps()):
                                if image.is_protected_snap(s["name"]):
                                    image.unprotect_snap(s["name"])
                                image.remove_snap(s["name"])
                        rbd_inst.remove(ioctx, name)
                        log(f"deleted {name}")
                    except rbd.ImageNotFound:
                        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
