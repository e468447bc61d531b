"""Consistency groups: members, group snapshots, rollback; group errors are
ObjectNotFound/ObjectExists (python-rbd's group table)."""
import pytest

import rbd_core

pytestmark = pytest.mark.live


def test_group_snapshots(pool, scratch):
    a = scratch.image(pool, "a")
    b = scratch.image(pool, "b")
    for n in (a, b):
        with pool.open(n) as img:
            img.write(b"before", 0)
    grp = pool.group_create(scratch("g"))
    assert isinstance(grp, rbd_core.Group) and grp.name == scratch("g") and grp.pool.name == "rbd"
    with pytest.raises(rbd_core.ObjectExists):
        pool.group_create(scratch("g"))
    assert scratch("g") in pool.group_list()
    with pytest.raises(rbd_core.ObjectNotFound):
        grp.add_image(pool, scratch("missing"))
    grp.add_image(pool, a)
    grp.add_image(pool, b)
    members = grp.images()
    assert sorted(m.name for m in members) == sorted([a, b])
    assert all(m.state == rbd_core.GroupImageState.Attached and m.pool == pool.id for m in members)
    with pool.open(a) as img:
        ref = img.group()
        assert isinstance(ref, rbd_core.GroupRef) and (ref.pool, ref.name) == (pool.id, scratch("g"))

    grp.snap_create("gs")
    with pytest.raises(rbd_core.ObjectExists):
        grp.snap_create("gs")
    (gs,) = grp.snaps()
    assert gs.name == "gs" and gs.state == rbd_core.GroupSnapState.Complete
    with pool.open(a) as img:
        (s,) = img.snapshots()
        assert s.namespace == rbd_core.SnapNamespace.Group and s.group.group == scratch("g")
        assert s.group.snap == "gs" and s.protected is None
        img.write(b"after!", 0)
    calls = []
    grp.snap_rollback("gs", on_progress=lambda d, t: calls.append(d))
    assert calls
    with pool.open(a) as img:
        assert img.read(0, 6) == b"before"
    with pytest.raises(rbd_core.ObjectNotFound):
        grp.snap_rollback("nope")
    grp.snap_rename("gs", "gs2")
    with pytest.raises(rbd_core.ObjectNotFound):
        grp.snap_remove("gs")
    grp.snap_remove("gs2")
    assert grp.snaps() == []
    grp.remove_image(pool, b)
    assert [m.name for m in grp.images()] == [a]
    pool.group_rename(scratch("g"), scratch("g2"))
    with pytest.raises(rbd_core.ObjectNotFound):
        pool.group_rename(scratch("g"), scratch("g3"))
    pool.group_remove(scratch("g2"))
    pool.group_remove(scratch("g2"))  # a missing group is not an error (Pacific)
    assert pool.group(scratch("g2")).images() == []
    with pytest.raises(rbd_core.ObjectNotFound):
        pool.group(scratch("g2")).snap_create("x")
