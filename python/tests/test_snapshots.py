"""Snapshots: typed SnapInfo, create/remove/protect/rename/limits, rollback with progress."""
import datetime

import pytest

import rbd_core

pytestmark = pytest.mark.live
MiB = 1 << 20


def test_snapshot_lifecycle(pool, scratch):
    name = scratch.image(pool, size=8 * MiB, order=22)
    with pool.open(name) as img:
        img.write(b"one", 0)
        img.snap_create("s1")
        with pytest.raises(rbd_core.ImageExists):
            img.snap_create("s1")
        (s,) = img.snapshots()
        assert isinstance(s, rbd_core.SnapInfo)
        assert (s.name, s.size, s.namespace, s.namespace_type, s.protected) == \
            ("s1", 8 * MiB, rbd_core.SnapNamespace.User, 0, False)
        assert s.group is None and s.trash_original_name is None
        assert isinstance(s.timestamp, datetime.datetime) and s.timestamp.tzinfo is not None
        assert abs(s.timestamp - datetime.datetime.now(datetime.timezone.utc)) < datetime.timedelta(minutes=5)
        assert "SnapInfo(" in repr(s) and "SnapNamespace.User" in repr(s)
        assert img.snapshots() == [s]  # __eq__
        assert img.snap_exists("s1") and not img.snap_exists("nope")
        assert img.snap_name(img.snap_id("s1")) == "s1" == s.name and img.snap_id("s1") == s.id
        with pytest.raises(rbd_core.ImageNotFound):
            img.snap_id("nope")

        img.snap_protect("s1")
        assert img.snap_is_protected("s1") and img.snapshots()[0].protected is True
        with pytest.raises(rbd_core.ImageBusy):
            img.snap_protect("s1")
        with pytest.raises(rbd_core.ImageBusy):
            img.snap_remove("s1")
        img.snap_unprotect("s1")
        with pytest.raises(rbd_core.InvalidArgument):
            img.snap_unprotect("s1")

        img.snap_rename("s1", "s2")
        with pytest.raises(rbd_core.ImageNotFound):
            img.snap_rename("s1", "s3")
        assert [x.name for x in img.snapshots()] == ["s2"]

        assert img.snap_limit() is None
        img.snap_set_limit(1)
        assert img.snap_limit() == 1
        with pytest.raises(rbd_core.DiskQuotaExceeded):
            img.snap_create("over")
        img.snap_remove_limit()
        assert img.snap_limit() is None

        img.snap_create("s3", flags=0)  # librbd's default: notify quiesce watchers
        img.snap_remove("s3")
        with pytest.raises(rbd_core.ImageNotFound):
            img.snap_remove("s3")
        img.snap_protect("s2")
        img.snap_remove("s2", flags=rbd_core.SNAP_REMOVE_UNPROTECT)
        assert img.snapshots() == []


def test_rollback_with_progress_and_cancel(pool, scratch):
    name = scratch.image(pool, size=16 * MiB, order=22)
    with pool.open(name) as img:
        img.write(b"A" * 4096, 0)
        img.snap_create("base")
        img.write(b"B" * 4096, 0)
        calls = []
        assert img.snap_rollback("base", on_progress=lambda d, t: calls.append((d, t))) is None
        assert img.read(0, 4) == b"AAAA"
        assert calls and all(t == calls[0][1] for _, t in calls) and calls[-1][0] <= calls[0][1]

        img.write(b"C" * 4096, 0)
        seen = []

        def stop(done, total):
            seen.append(done)
            return False  # cancel at the first report

        with pytest.raises(rbd_core.OperationCanceled) as ei:
            img.snap_rollback("base", on_progress=stop)
        assert ei.value.errno == 125 and len(seen) == 1
        token = rbd_core.CancelToken()
        token.cancel()
        assert token.cancelled and "cancelled=true" in repr(token)
        with pytest.raises(rbd_core.OperationCanceled):
            img.snap_rollback("base", cancel=token)
        with pytest.raises(rbd_core.ImageNotFound):
            img.snap_rollback("nope")


def test_open_at_snapshot(pool, scratch):
    name = scratch.image(pool)
    with pool.open(name) as img:
        img.write(b"old", 0)
        img.snap_create("s")
        img.write(b"new", 0)
        img.set_snap("s")
        assert img.read(0, 3) == b"old" and img.snapshot == "s" and img.read_only
        with pytest.raises(rbd_core.ReadOnlyImage):
            img.write(b"x", 0)
        img.set_snap(None)
        assert img.read(0, 3) == b"new" and not img.read_only
        img.set_snap_by_id(img.snap_id("s"))
        assert img.read(0, 3) == b"old"
        img.set_snap_by_id(None)
        with pytest.raises(rbd_core.ImageNotFound):
            img.set_snap("nope")
    with pool.open(name, snapshot="s") as at:
        assert at.read(0, 3) == b"old" and at.read_only and at.spec.endswith("@s")
        with pytest.raises(rbd_core.ReadOnlyImage):
            at.write(b"x", 0)
    with pytest.raises(rbd_core.ImageNotFound):
        pool.open(name, snapshot="nope")
