"""Fixtures for tests against the live dev cluster (same contract as tests/common in Rust).

* ``cluster``: a session-wide ``rbd_core.Cluster`` (fails loudly without CEPH_CONF).
* ``cluster2``: the second dev cluster (RBD_TEST_CEPH_CONF2; backups across clusters), failing
  loudly when it is not configured.
* ``unique(tag)``: a name no other test or run uses (``rbdcore-py-<pid>-<n>-<tag>``).
* ``scratch``: a per-test name prefix; everything named with it (images with their
  snapshots, clones, trash entries, groups, namespaces, RADOS objects) in the test pools is
  removed after the test, also when it fails.
"""
from __future__ import annotations

import itertools
import os
from typing import Iterator

import pytest

HOW = ("start one with `scripts/vstart.sh up && eval \"$(scripts/vstart.sh env)\"` "
       "(or run the README test command); see tests/README.md")
POOLS = ("rbd", "images", "volumes")
_counter = itertools.count()


def unique(tag: str) -> str:
    return f"rbdcore-py-{os.getpid()}-{next(_counter)}-{tag}"


def ceph_conf() -> str:
    conf = os.environ.get("CEPH_CONF")
    if not conf:
        pytest.fail(f"CEPH_CONF is not set: this test needs the dev cluster; {HOW}")
    return conf


@pytest.fixture(scope="session")
def cluster():
    if os.environ.get("RBD_TEST_NO_CLUSTER"):
        pytest.skip("RBD_TEST_NO_CLUSTER is set (explicit opt-out)")
    conf = ceph_conf()
    import rbd_core
    try:
        return rbd_core.Cluster(conffile=conf, client_id=os.environ.get("RBD_TEST_CLIENT_ID", "admin"))
    except rbd_core.Error as e:
        pytest.fail(f"cannot connect to the dev cluster ({e}); {HOW}")


HOW2 = ("start the second dev cluster with `RBD_DEV_DIR=.ceph-dev/shared2 RBD_DEV_MON_PORT=40920 "
        "scripts/vstart.sh up` and export RBD_TEST_CEPH_CONF2=<its ceph.conf> (the README test command "
        "does both)")


@pytest.fixture(scope="session")
def cluster2(cluster):
    conf = os.environ.get("RBD_TEST_CEPH_CONF2")
    if not conf:
        pytest.fail(f"RBD_TEST_CEPH_CONF2 is not set: this test needs a second cluster; {HOW2}")
    import rbd_core
    try:
        c2 = rbd_core.Cluster(conffile=conf, client_id=os.environ.get("RBD_TEST_CLIENT_ID", "admin"))
    except rbd_core.Error as e:
        pytest.fail(f"cannot connect to the second dev cluster at {conf} ({e}); {HOW2}")
    assert c2.fsid() != cluster.fsid(), "CEPH_CONF and RBD_TEST_CEPH_CONF2 must be two clusters"
    return c2


@pytest.fixture
def pool(cluster):
    return cluster.open_pool("rbd")


class Scratch:
    """Names under one prefix, all removed at teardown."""

    def __init__(self, cluster, prefix: str) -> None:
        self.cluster = cluster
        self.prefix = prefix

    def __call__(self, tag: str = "img") -> str:
        return f"{self.prefix}-{tag}"

    def image(self, pool, tag: str = "img", size: int = 8 << 20, **kw) -> str:
        name = self(tag)
        pool.create_image(name, size, **kw)
        return name

    def cleanup(self) -> list[str]:
        """Removes everything under the prefix; returns what could not be removed."""
        import rbd_core
        left: list[str] = []
        for pname in POOLS:
            try:
                pool = self.cluster.open_pool(pname)
            except rbd_core.Error:
                continue
            for g in [g for g in _try(pool.group_list, []) if g.startswith(self.prefix)]:
                grp = pool.group(g)
                for m in _try(grp.images, []):
                    _try(lambda: grp.remove_image(pool, m.name), None)
                _try(lambda: pool.group_remove(g), None)
            for _ in range(4):  # clones before parents: repeat until nothing is left
                names = [n for n in _try(pool.list_images, []) if n.startswith(self.prefix)]
                if not names:
                    break
                for n in sorted(names, reverse=True):
                    try:
                        with pool.open(n) as img:
                            for s in img.snapshots():
                                if s.namespace == rbd_core.SnapNamespace.User:
                                    _try(lambda: img.snap_remove(s.name, flags=rbd_core.SNAP_REMOVE_FORCE), None)
                                else:
                                    _try(lambda: img.snap_remove_by_id(s.id), None)
                    except rbd_core.Error:
                        pass
                    _try(lambda: pool.remove_image(n), None)
            for e in _try(pool.trash_list, []):
                if e.name.startswith(self.prefix):
                    _try(lambda: pool.trash_remove(e.id, force=True), None)
            for ns in [x for x in _try(pool.namespace_list, []) if x.startswith(self.prefix)]:
                _try(lambda: pool.namespace_remove(ns), None)
            for o in [o for o in _try(pool.object_list, []) if o.startswith(self.prefix)]:
                _try(lambda: pool.object_remove(o), None)
            left += [f"{pname}/{n}" for n in _try(pool.list_images, []) if n.startswith(self.prefix)]
        return left


def _try(fn, default):
    import rbd_core
    try:
        return fn()
    except rbd_core.Error:
        return default


@pytest.fixture
def scratch(cluster, request) -> Iterator[Scratch]:
    s = Scratch(cluster, unique(request.node.name.replace("[", "-").replace("]", "")[:40]))
    yield s
    left = s.cleanup()
    assert not left, f"could not clean up {left}"
