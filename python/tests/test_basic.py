import uuid

import pytest

import rbd_core
from conftest import unique

pytestmark = pytest.mark.live


def test_fsid(cluster):
    fsid = cluster.fsid()
    assert str(uuid.UUID(fsid)) == fsid
    assert "volumes" in cluster.pool_list()


def test_image_round_trip_and_errors(cluster):
    pool = cluster.open_pool("rbd")
    name = unique("basic")
    pool.create_image(name, 8 << 20, order=22)
    try:
        with pool.open(name) as img:
            assert img.size() == 8 << 20
            assert img.write(bytearray(b"hello"), 4096) == 5
            assert img.read(4096, 5) == b"hello"
            assert img.stat().order == 22
        with pytest.raises(rbd_core.ImageExists) as ei:
            pool.create_image(name, 1 << 20)
        assert ei.value.errno == 17
        assert isinstance(ei.value, rbd_core.OSError) and isinstance(ei.value, rbd_core.Error)
        with pool.open(name, read_only=True) as ro, pytest.raises(rbd_core.ReadOnlyImage):
            ro.write(b"x", 0)
    finally:
        pool.remove_image(name)
    with pytest.raises(rbd_core.ImageNotFound):
        pool.open(name)
