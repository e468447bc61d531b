"""rbd_core.nova against the live cluster: is_cloneable, boot from a Glance image (end state,
refusals), the direct instance snapshot (end state and undo), instance disk deletion (prefix
match, ``nova-resize``, busy retries), and the resize snapshot."""
import pytest

import rbd_core
from rbd_core import _native, glance, nova
from recipe_helpers import MiB, names, new_uuid, pattern, read_all, sha  # noqa: F401 - fixture

pytestmark = pytest.mark.live


@pytest.fixture
def images(cluster):
    return cluster.open_pool("images")


@pytest.fixture
def vms(cluster):
    return cluster.open_pool("vms")


@pytest.fixture
def instance(names):
    """A fresh instance uuid whose ``<uuid>_*`` disks in ``vms`` are removed at teardown."""
    uuid = new_uuid()
    names.add("vms", uuid)
    return uuid


def glance_image(images, scratch, tag, data):
    return glance.upload(images, scratch(tag), data, hash="none").location


def test_is_cloneable(cluster, images, scratch):
    loc = glance_image(images, scratch, "cloneable", pattern(1, MiB))
    c = nova.is_cloneable(cluster, loc)
    assert c and c.cloneable and c.location == loc and c.reason is None
    assert nova.is_cloneable(cluster, str(loc), "raw").location == loc
    assert "cloneable=True" in repr(c)

    def why(url, fmt="raw"):
        c = nova.is_cloneable(cluster, url, fmt)
        assert not c and not c.cloneable and c.location is None
        return c

    assert why("http://x/y").reason == nova.NotCloneable.BadLocation
    assert why("rbd://a/b/c").reason == nova.NotCloneable.BadLocation
    assert why(f"rbd://{loc.image}").reason == nova.NotCloneable.Legacy
    other = glance.Location("00000000-0000-0000-0000-000000000000", "images", loc.image, "snap")
    assert why(other).reason == nova.NotCloneable.OtherCluster
    c = why(loc, "qcow2")
    assert c.reason == nova.NotCloneable.NotRaw and "qcow2" in (c.detail or "")
    fsid = cluster.fsid()
    c = why(glance.Location(fsid, "images", loc.image, "nosuch"))
    assert (c.reason, c.error_kind) == (nova.NotCloneable.Unreadable, "NotFound")
    assert why(glance.Location(fsid, "nosuchpool", loc.image, "snap")).reason == nova.NotCloneable.Unreadable


def test_boot_disk_clones_across_pools_and_grows(images, vms, scratch, instance):
    data = pattern(2, 12 * MiB)
    loc = glance_image(images, scratch, "boot", data)
    before = vms.list_images()
    # Refused before anything is created.
    with pytest.raises(rbd_core.InvalidArgument):
        nova.boot_disk(loc, vms, instance, size=8 * MiB)
    with pytest.raises(rbd_core.InvalidArgument):
        nova.boot_disk(loc, vms, "not-a-uuid")
    with pytest.raises(rbd_core.InvalidArgument):
        nova.boot_disk(glance.Location.legacy(loc.image), vms, instance)
    assert vms.list_images() == before

    disk = nova.boot_disk(str(loc), vms, instance, "disk", size=64 * MiB)
    assert (disk.pool, disk.name, disk.parent, disk.size) == (
        "vms", f"{instance}_disk", f"images/{loc.image}@snap", 64 * MiB)
    with vms.open(disk.name) as img:
        p = img.parent()
        assert p is not None and (p.pool, p.image, p.snap) == ("images", loc.image, "snap")
        st = img.stat()
        assert (st.size, st.order) == (64 * MiB, 23)
    back = read_all(vms, disk.name)
    assert sha(back[:len(data)]) == sha(data) and back[len(data):] == bytes(64 * MiB - len(data))

    with pytest.raises(rbd_core.ImageExists):
        nova.boot_disk(loc, vms, instance)
    assert vms.image_exists(disk.name)
    eph = nova.boot_disk(loc, vms, instance, disk_name="disk.eph0")
    assert eph.name == f"{instance}_disk.eph0" and eph.size == len(data)

    # A failed resize removes the clone.
    _native._failpoint_set("nova.boot.resize")
    try:
        with pytest.raises(rbd_core.StepFailed) as ei:
            nova.boot_disk(loc, vms, instance, disk_name="disk.local", size=32 * MiB)
    finally:
        _native._failpoint_clear("nova.boot.resize")
    assert (ei.value.recipe, ei.value.step) == ("nova.boot", "resize")
    assert not vms.image_exists(f"{instance}_disk.local")

    report = nova.delete_instance_disks(vms, instance)
    assert sorted((d.name, d.outcome) for d in report) == [
        (f"{instance}_disk", nova.DiskOutcome.Removed), (f"{instance}_disk.eph0", nova.DiskOutcome.Removed)]


def test_snapshot_instance_makes_a_flat_glance_image(images, vms, scratch, instance):
    data = pattern(3, 10 * MiB)
    loc = glance_image(images, scratch, "snapsrc", data)
    disk = nova.boot_disk(loc, vms, instance, size=16 * MiB)
    with vms.open(disk.name) as img:
        img.write(b"instance data", 11 * MiB)
    expected = read_all(vms, disk.name)
    new_id = scratch("snapimg")
    calls = []
    snap = nova.snapshot_instance(vms, disk.name, "images", new_id, on_progress=lambda d, t: calls.append(d))
    assert snap.location == glance.Location(loc.fsid or "", "images", new_id, "snap")
    assert snap.size == 16 * MiB and len(snap.temp_snap) == 32
    assert calls, "the flatten reported progress"
    with images.open(new_id) as img:
        assert img.parent() is None, "flattened"
        assert [(s.name, s.protected) for s in img.snapshots()] == [("snap", True)]
        assert img.metadata_list() == {}
    assert read_all(images, new_id, "snap") == expected
    with vms.open(disk.name) as d:
        assert d.snapshots() == [], "the temporary snapshot is gone"

    # A failure at the flatten removes the half-made image and the temporary snapshot.
    failed_id = scratch("snapfail")
    _native._failpoint_set("nova.snapshot.flatten")
    try:
        with pytest.raises(rbd_core.StepFailed) as ei:
            nova.snapshot_instance(vms, disk.name, "images", failed_id)
    finally:
        _native._failpoint_clear("nova.snapshot.flatten")
    assert (ei.value.recipe, ei.value.step, ei.value.undo_errors) == ("nova.snapshot", "flatten", [])
    assert "flatten" in nova.SNAPSHOT_STEPS
    assert not images.image_exists(failed_id)
    with vms.open(disk.name) as d:
        assert d.snapshots() == []

    # Cancel from the callback: undone the same way.
    with pytest.raises(rbd_core.OperationCanceled):
        nova.snapshot_instance(vms, disk.name, "images", failed_id, on_progress=lambda d, t: False)
    assert not images.image_exists(failed_id)
    with pytest.raises(rbd_core.ImageExists):
        nova.snapshot_instance(vms, disk.name, "images", new_id)
    glance.delete(images, snap.location)


def test_resize_snapshot_revert_and_confirm(images, vms, scratch, instance):
    loc = glance_image(images, scratch, "resize", pattern(4, 4 * MiB))
    disk = nova.boot_disk(loc, vms, instance, size=8 * MiB).name
    before = read_all(vms, disk)
    nova.resize_snapshot(vms, disk)
    with pytest.raises(rbd_core.ImageExists):
        nova.resize_snapshot(vms, disk)
    with vms.open(disk) as img:
        img.resize(16 * MiB)
        img.write(b"after the resize", 0)
    calls = []
    nova.revert_resize(vms, disk, on_progress=lambda d, t: calls.append((d, t)))
    assert read_all(vms, disk) == before and calls
    with vms.open(disk) as img:
        assert not img.snap_exists(nova.RESIZE_SNAP)
    with pytest.raises(rbd_core.ImageNotFound):
        nova.revert_resize(vms, disk)
    nova.resize_snapshot(vms, disk)
    assert nova.confirm_resize(vms, disk) is True
    assert nova.confirm_resize(vms, disk) is False
    with pytest.raises(rbd_core.ImageNotFound):
        nova.confirm_resize(vms, f"{instance}_nosuch")


def test_delete_instance_disks_matches_the_uuid_and_retries_busy_disks(images, vms, scratch, instance, names):
    loc = glance_image(images, scratch, "del", pattern(5, MiB))
    other = names.add("vms", new_uuid())
    a = nova.boot_disk(loc, vms, instance).name
    b = nova.boot_disk(loc, vms, instance, disk_name="disk.local").name
    keep = nova.boot_disk(loc, vms, other).name
    nova.resize_snapshot(vms, b)
    with pytest.raises(rbd_core.InvalidArgument):
        nova.delete_instance_disks(vms, instance[:8])

    # A disk held open (a watcher) stays busy through every attempt.
    with vms.open(a):
        report = nova.delete_instance_disks(vms, instance, attempts=2, initial=0.05, max=0.1)
    by_name = {d.name: d for d in report}
    assert by_name[a].outcome == nova.DiskOutcome.Busy and by_name[a].attempts == 2
    assert by_name[b].outcome == nova.DiskOutcome.Removed and by_name[b].removed_resize_snap
    assert "DiskDeletion(" in repr(by_name[a])

    report = nova.delete_instance_disks(vms, instance)
    assert [(d.name, d.outcome, d.attempts) for d in report] == [(a, nova.DiskOutcome.Removed, 1)]
    assert nova.delete_instance_disks(vms, instance) == []
    assert vms.image_exists(keep), "another instance's disk is untouched"
    with pytest.raises(ValueError):
        nova.delete_instance_disks(vms, instance, initial=-1.0)
