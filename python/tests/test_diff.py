"""Diff extents, diff_iterate with a callable, allocated bytes, read_iterate."""
import pytest

import rbd_core

pytestmark = pytest.mark.live
MiB = 1 << 20


@pytest.fixture
def img(pool, scratch):
    name = scratch.image(pool, size=16 * MiB, order=22)
    with pool.open(name) as img:
        img.write(b"a" * 4096, 0)
        img.write(b"b" * 4096, 9 * MiB)
        img.snap_create("s1")
        img.write(b"c" * 4096, 4096)
        img.discard(8 * MiB, 4 * MiB)  # a whole object (smaller discards may be ignored)
        yield img


def test_diff_extents(img):
    E = rbd_core.DiffExtent
    full = img.diff_extents()
    assert full == [E(0, 8192, True)]
    since = img.diff_extents(from_snap="s1")
    # The removed object is reported over the range the snapshot had data in.
    assert since == [E(4096, 4096, True), E(8 * MiB, MiB + 4096, False)]
    assert since[1].end == 9 * MiB + 4096 and "exists=False" in repr(since[1])
    assert img.diff_extents(whole_object=True) == [E(0, 4 * MiB, True)]
    assert img.diff_extents(offset=8 * MiB, length=4 * MiB) == []
    assert img.allocated_bytes() == 8192
    assert len({E(1, 2), E(1, 2, True)}) == 1  # hashable, equal
    with pytest.raises(rbd_core.ImageNotFound):
        img.diff_extents(from_snap="nope")
    img.set_snap("s1")
    assert img.diff_extents() == [E(0, 4096, True), E(8 * MiB, MiB + 4096, True)]


def test_diff_iterate_callable(img):
    seen = []
    assert img.diff_iterate(seen.append, from_snap="s1") is None
    assert sorted(seen, key=lambda e: e.offset) == img.diff_extents(from_snap="s1")

    first = []
    img.diff_iterate(lambda e: first.append(e) or False, from_snap="s1")  # False stops
    assert len(first) == 1

    class Stop(Exception):
        pass

    def bad(e):
        raise Stop(e.offset)

    with pytest.raises(Stop):
        img.diff_iterate(bad)

    # The callback may use the same image (no deadlock on the handle's lock).
    reads = []
    img.diff_iterate(lambda e: reads.append(img.read(e.offset, 1)))
    assert reads == [b"a"]


def test_read_iterate(img):
    chunks = []
    img.read_iterate(lambda off, n, data: chunks.append((off, n, data)))
    assert chunks == [(0, 8192, b"a" * 4096 + b"c" * 4096), (8192, 16 * MiB - 8192, None)]  # hole: not read
    stopped = []
    img.read_iterate(lambda *c: stopped.append(c) or False)
    assert len(stopped) == 1
