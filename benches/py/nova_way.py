#!/usr/bin/python3
"""Boot-from-image clones the way Nova's RBD driver makes them (``nova/storage/rbd_utils.py``),
with Debian's python3-rbd: every operation connects, opens its ioctx, works, and shuts down.

Modes:
  driver-clone  ``RBDDriver.clone``: ``RADOSClient(src pool)`` and ``RADOSClient(dest pool)``
                (two connects), ``RBD().clone(src_ioctx, image, snap, dest_ioctx, name,
                features=rbd_default_features or layering)``, two shutdowns.
  boot          the whole ``Rbd.create_image`` path without a resize: ``is_cloneable``
                (``get_fsid``: connect; ``exists``: connect + open image@snap read-only), then
                ``driver.clone`` (two connects), ``exists`` and ``size`` of the new disk (one connect
                each): six connects per boot.
  shared        one connection and two ioctxs for all clones (what python-rbd can do at best).

Prints one JSON line: seconds (all clones), count, names. Clones are removed afterwards (not
timed) unless --keep.
"""
import argparse
import json
import time

import rados
import rbd


class Driver:
    def __init__(self, conf, rados_id, dest_pool):
        self.conf = conf
        self.rados_id = rados_id
        self.pool = dest_pool

    def _connect_to_rados(self, pool=None):
        client = rados.Rados(rados_id=self.rados_id, conffile=self.conf)
        try:
            client.connect(timeout=5)  # rbd_connect_timeout (ignored by python-rados)
            ioctx = client.open_ioctx(str(pool or self.pool))
            return client, ioctx
        except rados.Error:
            client.shutdown()
            raise

    @staticmethod
    def _disconnect(client, ioctx):
        ioctx.close()
        client.shutdown()

    def features(self, client):
        features = client.conf_get("rbd_default_features")
        if features is None or int(features) == 0:
            features = rbd.RBD_FEATURE_LAYERING
        return int(features)

    def get_fsid(self):
        client, ioctx = self._connect_to_rados()
        try:
            return client.get_fsid()
        finally:
            self._disconnect(client, ioctx)

    def exists(self, name, pool=None, snapshot=None):
        client, ioctx = self._connect_to_rados(pool)
        try:
            with rbd.Image(ioctx, name, snapshot=snapshot, read_only=True):
                return True
        except rbd.ImageNotFound:
            return False
        finally:
            self._disconnect(client, ioctx)

    def size(self, name):
        client, ioctx = self._connect_to_rados()
        try:
            with rbd.Image(ioctx, name, read_only=True) as vol:
                return vol.size()
        finally:
            self._disconnect(client, ioctx)

    def clone(self, src_pool, image, snap, dest_name, dest_pool=None):
        sc, sio = self._connect_to_rados(src_pool)
        try:
            dc, dio = self._connect_to_rados(dest_pool)
            try:
                rbd.RBD().clone(sio, image, snap, dio, str(dest_name), features=self.features(sc))
            finally:
                self._disconnect(dc, dio)
        finally:
            self._disconnect(sc, sio)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conf", required=True)
    ap.add_argument("--id", default="admin")
    ap.add_argument("--src-pool", default="images")
    ap.add_argument("--image", required=True)
    ap.add_argument("--snap", default="snap")
    ap.add_argument("--dst-pool", default="vms")
    ap.add_argument("--prefix", required=True, help="clone names are <prefix><i>_disk")
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--mode", choices=["driver-clone", "boot", "shared"], default="driver-clone")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    d = Driver(a.conf, a.id, a.dst_pool)
    names = ["%s%d_disk" % (a.prefix, i) for i in range(a.count)]

    t0 = time.perf_counter()
    if a.mode == "shared":
        client = rados.Rados(rados_id=a.id, conffile=a.conf)
        client.connect()
        sio = client.open_ioctx(a.src_pool)
        dio = client.open_ioctx(a.dst_pool)
        feats = d.features(client)
        for n in names:
            rbd.RBD().clone(sio, a.image, a.snap, dio, n, features=feats)
        sio.close()
        dio.close()
        client.shutdown()
    else:
        for n in names:
            if a.mode == "boot":
                d.get_fsid()
                if not d.exists(a.image, pool=a.src_pool, snapshot=a.snap):
                    raise SystemExit("image not cloneable")
            d.clone(a.src_pool, a.image, a.snap, n, a.dst_pool)
            if a.mode == "boot":
                assert d.exists(n)
                d.size(n)
    seconds = time.perf_counter() - t0

    if not a.keep:
        client = rados.Rados(rados_id=a.id, conffile=a.conf)
        client.connect()
        with client.open_ioctx(a.dst_pool) as dio:
            for n in names:
                try:
                    rbd.RBD().remove(dio, n)
                except rbd.ImageNotFound:
                    pass
        client.shutdown()
    print(json.dumps({"seconds": seconds, "count": a.count, "mode": a.mode, "names": names}))


if __name__ == "__main__":
    main()
