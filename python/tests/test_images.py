"""Cluster, Pool and Image basics: typed results, buffers, object I/O, trash, namespaces."""
import array
import datetime
import os

import pytest

import rbd_core
from conftest import ceph_conf

pytestmark = pytest.mark.live
MiB = 1 << 20


def test_cluster_facts(cluster):
    st = cluster.stats()
    assert isinstance(st, rbd_core.ClusterStats)
    assert st.total_bytes >= st.avail_bytes > 0
    assert "ClusterStats(" in repr(st)
    assert cluster.client_id == os.environ.get("RBD_TEST_CLIENT_ID", "admin")
    assert cluster.instance_id > 0
    assert cluster.conf_get("rbd_default_order")
    with pytest.raises(rbd_core.ImageNotFound):
        cluster.conf_get("no_such_option_rbdcore")
    out, status = cluster.mon_command('{"prefix": "osd pool get", "pool": "rbd", "var": "size", "format": "json"}')
    assert b'"pool":"rbd"' in out and isinstance(status, str)
    with pytest.raises(rbd_core.ImageNotFound) as ei:
        cluster.mon_command('{"prefix": "osd pool get", "pool": "no-such-pool", "var": "size"}')
    assert "unrecognized pool" in ei.value.detail
    with pytest.raises(rbd_core.ImageNotFound):
        cluster.open_pool("no-such-pool-rbdcore")
    with rbd_core.Cluster(conffile=ceph_conf(),
                          client_id=os.environ.get("RBD_TEST_CLIENT_ID", "admin")) as again:
        assert again.same_connection(cluster)  # the shared connection is reused


def test_pool_image_lifecycle(cluster, pool, scratch):
    name = scratch.image(pool, "a", 16 * MiB, order=22, features=rbd_core.FEATURE_LAYERING)
    assert pool.image_exists(name)
    assert name in pool.list_images()
    spec = next(s for s in pool.image_specs() if s.name == name)
    assert isinstance(spec, rbd_core.ImageSpec) and spec.id
    assert pool.stats().objects >= 0
    with pytest.raises(rbd_core.ImageExists):
        pool.create_image(name, MiB)
    pool.rename_image(name, scratch("b"))
    assert not pool.image_exists(name)
    with pool.open(scratch("b")) as img:
        assert img.name == scratch("b")
        assert img.features() == rbd_core.FEATURE_LAYERING
        info = img.stat()
        assert info.order == 22 and info.size == 16 * MiB and info == img.stat()
        assert img.stripe_unit() == 4 * MiB and img.stripe_count() == 1
        assert img.data_pool_id() == pool.id
        assert img.op_features() == 0 and img.flags() == 0
        assert img.id() == spec.id
        assert [w.id for w in img.watchers()] == [cluster.instance_id]
    with pool.open_by_id(spec.id) as by_id:
        assert by_id.name == scratch("b")
    calls = []
    pool.remove_image(scratch("b"), on_progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1][0] < calls[-1][1]
    with pytest.raises(rbd_core.ImageNotFound):
        pool.remove_image(scratch("b"))


def test_io_accepts_any_buffer_and_returns_bytes(pool, scratch):
    name = scratch.image(pool, size=8 * MiB)
    with pool.open(name) as img:
        assert img.write(b"bytes", 0) == 5
        assert img.write(bytearray(b"ba"), 5) == 2
        assert img.write(memoryview(b"xxmvxx")[2:4], 7) == 2
        assert img.write(array.array("I", [0x64636261]), 9) == 4  # non-byte items: cast to bytes
        data = img.read(0, 13)
        assert isinstance(data, bytes) and data == b"bytesbamvabcd"
        assert img.read(8 * MiB - 2, 10) == b"\0\0"  # short at the end, like python-rbd
        with pytest.raises(rbd_core.InvalidArgument):
            img.read(8 * MiB, 1)
        with pytest.raises(TypeError):
            img.write("text", 0)
        img.write_zeroes(0, 4)
        assert img.read(0, 5) == b"\0\0\0\0s"
        img.discard(0, 8 * MiB)
        img.flush()
        img.invalidate_cache()
        img.resize(16 * MiB)
        assert img.size() == 16 * MiB
        with pytest.raises(rbd_core.InvalidArgument):
            img.resize(MiB, allow_shrink=False)
        img.resize(4 * MiB)
        assert img.size() == 4 * MiB
        assert not img.read_only and img.snapshot is None
    assert img.closed and "closed" in repr(img)
    with pytest.raises(ValueError):
        img.size()
    img.close()  # idempotent


def test_update_features(pool, scratch):
    name = scratch.image(pool, features=rbd_core.FEATURE_LAYERING)
    with pool.open(name) as img:
        img.update_features(rbd_core.FEATURE_EXCLUSIVE_LOCK, True)
        assert img.features() == rbd_core.FEATURE_LAYERING | rbd_core.FEATURE_EXCLUSIVE_LOCK
        with pytest.raises(rbd_core.InvalidArgument):
            img.update_features(rbd_core.FEATURE_LAYERING, False)


def test_object_io(pool, scratch):
    oid = scratch("obj")
    pool.object_write_full(oid, b"hello world")
    pool.object_write(oid, bytearray(b"HE"), 1)
    assert pool.object_read(oid) == b"hHElo world"
    assert pool.object_read(oid, 4, 2) == b"Elo "
    st = pool.object_stat(oid)
    assert st.size == 11
    assert abs(st.mtime - datetime.datetime.now(datetime.timezone.utc)) < datetime.timedelta(minutes=5)
    assert oid in pool.object_list()
    pool.object_remove(oid)
    for op in (lambda: pool.object_read(oid), lambda: pool.object_stat(oid), lambda: pool.object_remove(oid)):
        with pytest.raises(rbd_core.ImageNotFound):
            op()


def test_trash(pool, scratch):
    name = scratch.image(pool, "t")
    pool.trash_move(name, delay=3600)
    assert not pool.image_exists(name)
    entry = next(e for e in pool.trash_list() if e.name == name)
    assert entry.source == rbd_core.TrashSource.User
    assert entry.deferment_end_time - entry.deletion_time >= datetime.timedelta(seconds=3599)
    assert pool.trash_get(entry.id) == entry
    with pytest.raises(rbd_core.PermissionError):  # deferred: needs force
        pool.trash_remove(entry.id)
    pool.trash_restore(entry.id, scratch("restored"))
    assert pool.image_exists(scratch("restored"))
    pool.trash_move(scratch("restored"))
    entry = next(e for e in pool.trash_list() if e.name == scratch("restored"))
    pool.trash_remove(entry.id, on_progress=lambda d, t: None)
    with pytest.raises(rbd_core.ImageNotFound):
        pool.trash_get(entry.id)
    with pytest.raises(rbd_core.ImageNotFound):
        pool.trash_move(scratch("missing"))


def test_namespaces(cluster, pool, scratch):
    ns = scratch("ns")
    pool.namespace_create(ns)
    with pytest.raises(rbd_core.ImageExists):
        pool.namespace_create(ns)
    assert ns in pool.namespace_list() and pool.namespace_exists(ns)
    inner = pool.with_namespace(ns)
    assert inner.namespace == ns and repr(inner).endswith(f"/{ns}>")
    inner.create_image(scratch("in-ns"), MiB)
    assert inner.list_images() == [scratch("in-ns")]
    assert not pool.image_exists(scratch("in-ns"))
    assert cluster.open_pool("rbd", ns).list_images() == [scratch("in-ns")]
    inner.remove_image(scratch("in-ns"))
    pool.namespace_remove(ns)
    with pytest.raises(rbd_core.ImageNotFound):
        pool.namespace_remove(ns)
