"""Helpers shared by the recipe and diff tests: cleanup of names the conftest ``scratch`` fixture
does not match (``volume-<id>`` volumes, ``<uuid>_disk`` disks, the ``vms`` pool), content
digests, and small image builders."""
from __future__ import annotations

import hashlib
import os
import uuid
from typing import Iterator

import pytest

import rbd_core
from conftest import unique

MiB = 1 << 20


def _try(fn, default=None):
    try:
        return fn()
    except rbd_core.Error:
        return default


def purge_prefix(pool, prefix: str) -> list[str]:
    """Removes every image (with its snapshots, clones first), trash entry and RADOS object of
    ``pool`` whose name starts with ``prefix``; returns the images left."""
    for _ in range(5):  # clones before parents: repeat until nothing is left
        names = [n for n in _try(pool.list_images, []) if n.startswith(prefix)]
        if not names:
            break
        for n in sorted(names, reverse=True):
            try:
                with pool.open(n) as img:
                    for s in img.snapshots():
                        if s.namespace == rbd_core.SnapNamespace.User:
                            _try(lambda: img.snap_remove(s.name, flags=rbd_core.SNAP_REMOVE_FORCE))
                        else:
                            _try(lambda: img.snap_remove_by_id(s.id))
            except rbd_core.Error:
                pass
            _try(lambda: pool.remove_image(n))
    for e in _try(pool.trash_list, []):
        if e.name.startswith(prefix):
            if _try(lambda: pool.trash_remove(e.id, force=True), False) is False:
                # Snapshots keep a trashed image: restore, purge, remove.
                if _try(lambda: pool.trash_restore(e.id), False) is None:
                    purge_prefix(pool, e.name)
    return [n for n in _try(pool.list_images, []) if n.startswith(prefix)]


class Names:
    """Prefixes removed from the given pools at teardown (also when the test fails)."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster
        self.entries: list[tuple[str, str]] = []

    def add(self, pool_name: str, prefix: str) -> str:
        self.entries.append((pool_name, prefix))
        return prefix

    def cleanup(self) -> list[str]:
        left: list[str] = []
        # Children (vms, volumes) before their Glance parents (images).
        order = {"vms": 0, "rbd": 1, "volumes": 2, "images": 3}
        for pname, prefix in sorted(self.entries, key=lambda e: order.get(e[0], 9)):
            pool = self.cluster.open_pool(pname)
            left += [f"{pname}/{n}" for n in purge_prefix(pool, prefix)]
        return left


@pytest.fixture
def names(cluster) -> Iterator[Names]:
    n = Names(cluster)
    yield n
    left = n.cleanup()
    assert not left, f"could not clean up {left}"


def new_uuid() -> str:
    return str(uuid.uuid4())


def volume_ids(tag: str) -> str:
    """A unique volume id prefix: ``volume-<it>`` names start with ``volume-<prefix>``."""
    return unique(tag)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_all(pool, name: str, snap: str | None = None) -> bytes:
    with pool.open(name, snapshot=snap, read_only=True) as img:
        size = img.size()
        out = bytearray()
        off = 0
        while off < size:
            n = min(8 * MiB, size - off)
            out += img.read(off, n)
            off += n
        return bytes(out)


def pattern(seed: int, n: int) -> bytes:
    """Deterministic non-zero bytes, different in every 4 KiB block."""
    blocks = (hashlib.sha512(f"{seed}/{i}".encode()).digest() * 64 for i in range(n // 4096 + 1))
    return b"".join(blocks)[:n]


def random_bytes(n: int) -> bytes:
    return os.urandom(n)
