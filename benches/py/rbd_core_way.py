#!/usr/bin/env python3
"""The upload and clone recipes through rbd_core from Python (run with .venv/bin/python), to
measure what the Python layer costs against the same calls in Rust (benches/compare/python.rs).

  --what probe    which paths exist: the recipe bindings (rbd_core.glance / rbd_core.nova, or the
                  native glance_upload / nova_boot_disk) or only the core API
  --what upload   upload --file as image --image: the Glance recipe (``upload(pool, id, fileobj)``)
                  or, without recipe bindings, the core API path: create (order 23), then
                  ``Image.write`` of 8 MiB pieces in order
  --what clones   --count boots of --image@--snap into --dst-pool: the Nova recipe
                  (``boot_disk(location, pool, uuid)``) or, without it, ``rbd_core.clone``

The connection is made before the timing and warmed up with one small untimed operation of the
same kind (the Rust side runs in a process whose connection already did the same work), so that
the comparison is of the calls, not of a cold process. Prints one JSON line.
"""
import argparse
import importlib
import json
import os
import time
import uuid

import rbd_core

CHUNK = 8 * 1024 * 1024


def find(*paths):
    """The first function that exists, as (function, "module.name"), e.g. "glance.upload"."""
    for p in paths:
        mod, _, attr = p.rpartition(".")
        try:
            m = importlib.import_module("rbd_core." + mod)
        except ImportError:
            continue
        f = getattr(m, attr, None)
        if callable(f):
            return f, p
    return None, None


def upload_fn():
    return find("glance.upload", "glance.glance_upload", "_native.glance_upload")


def boot_fn():
    return find("nova.boot_disk", "nova.nova_boot_disk", "_native.nova_boot_disk")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--what", choices=["probe", "upload", "clones"], required=True)
    ap.add_argument("--conf")
    ap.add_argument("--id", default="admin")
    ap.add_argument("--pool", default="images")
    ap.add_argument("--image")
    ap.add_argument("--file")
    ap.add_argument("--no-hash", action="store_true")
    ap.add_argument("--api", choices=["recipe", "core"], default="recipe")
    ap.add_argument("--snap", default="snap")
    ap.add_argument("--location")
    ap.add_argument("--dst-pool", default="vms")
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--prefix", default="")
    a = ap.parse_args()

    up, up_name = upload_fn()
    boot, boot_name = boot_fn()
    if a.what == "probe":
        print(json.dumps({"upload": up_name, "boot": boot_name, "version": getattr(rbd_core, "__version__", "?")}))
        return

    cluster = rbd_core.Cluster(conffile=a.conf, client_id=a.id, shared=False)
    pool = cluster.open_pool(a.pool)
    if a.what == "upload":
        size = os.path.getsize(a.file)
        warm = a.image + "-warm"
        if a.api == "recipe" and up is not None:
            w = up(pool, warm, b"\x01" * (1 << 20))
            importlib.import_module("rbd_core.glance").delete(pool, w.location)
        else:
            pool.create_image(warm, 1 << 20, order=23)
            with pool.open(warm) as img:
                img.write(b"\x01" * (1 << 20), 0)
            pool.remove_image(warm)
        t0 = time.perf_counter()
        if a.api == "recipe":
            if up is None:
                raise SystemExit("no upload recipe binding")
            kw = {"hash": "none", "checksum": False} if a.no_hash else {}
            with open(a.file, "rb") as f:
                up(pool, a.image, f, **kw)
        else:
            pool.create_image(a.image, size, order=23)
            with pool.open(a.image) as img, open(a.file, "rb") as f:
                off = 0
                while True:
                    chunk = f.read(CHUNK)
                    if not chunk:
                        break
                    img.write(chunk, off)
                    off += len(chunk)
        seconds = time.perf_counter() - t0
        print(json.dumps({"seconds": seconds, "bytes": size, "api": up_name if a.api == "recipe" else "core"}))
    else:
        dst = cluster.open_pool(a.dst_pool)
        names = []
        if a.api == "recipe" and boot is not None:
            d = boot(a.location, dst, str(uuid.uuid4()))
            dst.remove_image(getattr(d, "name", None) or d["name"])
        else:
            rbd_core.clone(pool, a.image, a.snap, dst, a.prefix + "warm_disk")
            dst.remove_image(a.prefix + "warm_disk")
        t0 = time.perf_counter()
        if a.api == "recipe":
            if boot is None:
                raise SystemExit("no boot recipe binding")
            for _ in range(a.count):
                d = boot(a.location, dst, str(uuid.uuid4()))
                names.append(getattr(d, "name", None) or d["name"])
        else:
            for i in range(a.count):
                n = "%s%d_disk" % (a.prefix, i)
                rbd_core.clone(pool, a.image, a.snap, dst, n)
                names.append(n)
        seconds = time.perf_counter() - t0
        for n in names:
            dst.remove_image(n)
        print(json.dumps({"seconds": seconds, "count": a.count, "api": boot_name if a.api == "recipe" else "core"}))


if __name__ == "__main__":
    main()
