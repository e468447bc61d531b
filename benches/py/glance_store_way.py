#!/usr/bin/python3
"""Upload a raw file the way glance_store's RBD driver does (``glance_store/_drivers/rbd.py``,
``RBDStore.add``; see /work/shared/reference/openstack-recipes.md §1.4), with Debian's
python3-rbd:

connect (a fresh ``rados.Rados`` per upload) -> ``get_fsid`` -> ``open_ioctx`` -> ``RBD().create``
(order 23, ``rbd_default_features`` or layering) -> ``Image.write`` of every 8 MiB chunk in order,
one at a time -> md5 (``checksum``) and sha512 (``os_hash_value``) of every chunk -> ``create_snap``
/ ``protect_snap('snap')`` -> shutdown. ``rbd_thin_provisioning`` is off by default in Glance, so
all-zero chunks are written too (``--thin`` skips whole-zero chunks as Glance does when it is on).

Prints one JSON line: seconds (connect to shutdown), bytes, md5, sha512.
Run with /usr/bin/python3 (python3-rbd is installed for the system interpreter).
"""
import argparse
import hashlib
import json
import os
import time

import rados
import rbd

WRITE_CHUNKSIZE = 8 * 1024 * 1024  # rbd_store_chunk_size = 8 (MiB)
ORDER = 23
SNAP = "snap"


def chunkreadable(f, size):
    while True:
        chunk = f.read(size)
        if not chunk:
            return
        yield chunk


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conf", required=True)
    ap.add_argument("--id", default="admin")
    ap.add_argument("--pool", default="images")
    ap.add_argument("--image", required=True)
    ap.add_argument("--file", required=True)
    ap.add_argument("--no-cache", action="store_true", help="rbd_cache=false")
    ap.add_argument("--thin", action="store_true", help="rbd_thin_provisioning=True")
    a = ap.parse_args()
    conf = {"rbd_cache": "false"} if a.no_cache else {}
    image_size = os.path.getsize(a.file)

    t0 = time.perf_counter()
    os_hash_value = hashlib.new("sha512")
    checksum = hashlib.md5()
    bytes_written = 0
    conn = rados.Rados(conffile=a.conf, rados_id=a.id, conf=conf)
    conn.connect()
    try:
        conn.get_fsid()
        with conn.open_ioctx(a.pool) as ioctx:
            features = conn.conf_get("rbd_default_features")
            if features is None or int(features) == 0:
                features = rbd.RBD_FEATURE_LAYERING
            rbd.RBD().create(ioctx, a.image, image_size, order=ORDER, old_format=False, features=int(features))
            with rbd.Image(ioctx, a.image) as image:
                offset = 0
                with open(a.file, "rb") as f:
                    for chunk in chunkreadable(f, WRITE_CHUNKSIZE):
                        length = len(chunk)
                        bytes_written += length
                        if not (a.thin and not any(chunk)):
                            image.write(chunk, offset)
                        offset += length
                        os_hash_value.update(chunk)
                        checksum.update(chunk)
                image.create_snap(SNAP)
                image.protect_snap(SNAP)
    finally:
        conn.shutdown()
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "bytes": bytes_written, "md5": checksum.hexdigest(),
                      "sha512": os_hash_value.hexdigest()}))


if __name__ == "__main__":
    main()
