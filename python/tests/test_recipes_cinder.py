"""rbd_core.cinder against the live cluster: every recipe with its end state (names, parents,
snapshots, sizes, data), the enums, and a recipe failure surfacing as the kind's class with
``.recipe``/``.step`` after the undo."""
import pytest

import rbd_core
from rbd_core import _native, cinder, glance
from conftest import unique
from recipe_helpers import MiB, names, pattern, read_all, sha  # noqa: F401 - fixture

pytestmark = pytest.mark.live


@pytest.fixture
def vols(cluster):
    return cluster.open_pool("volumes")


@pytest.fixture
def vid(names):
    """A volume id prefix: ``vid("a")`` volumes (``volume-<prefix>-a``) are removed at teardown."""
    prefix = unique("cv")
    names.add("volumes", f"volume-{prefix}")
    return lambda tag: f"{prefix}-{tag}"


def write(pool, vol_id: str, data: bytes, off: int = 0) -> None:
    with pool.open(cinder.volume_name(vol_id)) as img:
        img.write(data, off)


def snaps(pool, name: str) -> list[str]:
    with pool.open(name) as img:
        return sorted(s.name for s in img.snapshots())


def test_create_extend_manage_info(vols, vid):
    a = vid("a")
    v = cinder.create(vols, a, 16 * MiB)
    assert isinstance(v, cinder.Volume)
    assert (v.pool, v.volume_id, v.name, v.size, v.parent, v.depth, v.flattened) == (
        "volumes", a, f"volume-{a}", 16 * MiB, None, 0, False)
    assert "Volume(" in repr(v) and v == cinder.volume_info(vols, a)
    with vols.open(v.name) as img:
        assert img.stat().order == 22 and img.snapshots() == []
    with pytest.raises(rbd_core.ImageExists):
        cinder.create(vols, a, MiB)
    for bad_id, size in (("", MiB), ("a/b", MiB), (f"{a}.deleted", MiB), (vid("zero"), 0)):
        with pytest.raises(rbd_core.InvalidArgument):
            cinder.create(vols, bad_id, size)
    with pytest.raises(rbd_core.ImageNotFound):
        cinder.volume_info(vols, vid("missing"))

    assert cinder.extend(vols, a, 32 * MiB).size == 32 * MiB
    assert cinder.extend(vols, a, 32 * MiB).size == 32 * MiB, "the same size is a no-op"
    with pytest.raises(rbd_core.InvalidArgument, match="shrink"):
        cinder.extend(vols, a, 8 * MiB)
    # A failure after the resize shrinks it back.
    _native._failpoint_set("cinder.extend.describe")
    try:
        with pytest.raises(rbd_core.StepFailed) as ei:
            cinder.extend(vols, a, 64 * MiB)
    finally:
        _native._failpoint_clear("cinder.extend.describe")
    assert (ei.value.recipe, ei.value.step) == ("cinder.extend", "describe")
    assert cinder.volume_info(vols, a).size == 32 * MiB

    legacy = f"volume-{vid('legacy')}-raw"  # under the cleanup prefix
    vols.create_image(legacy, 4 * MiB)
    m = cinder.manage_existing(vols, legacy, vid("managed"))
    assert (m.name, m.size) == (f"volume-{vid('managed')}", 4 * MiB)
    assert not vols.image_exists(legacy)
    vols.create_image(legacy, MiB)
    with pytest.raises(rbd_core.ImageExists):
        cinder.manage_existing(vols, legacy, vid("managed"))
    assert vols.image_exists(legacy)

    assert cinder.volume_name("42") == "volume-42" and cinder.snapshot_name("7") == "snapshot-7"
    assert cinder.clone_snap_name("volume-2.deleted") == "volume-2.clone_snap"
    assert cinder.is_backup_snap("backup.4f2a-9c.snap.1511348180.27") and not cinder.is_backup_snap("snapshot-1")


def test_snapshots_and_volumes_from_snapshots(vols, vid):
    a, b, c = vid("a"), vid("b"), vid("c")
    cinder.create(vols, a, 32 * MiB)
    data = pattern(1, 8 * MiB)
    write(vols, a, data)
    s = cinder.create_snapshot(vols, a, "s1")
    assert (s.pool, s.volume, s.name, s.size, s.protected) == ("volumes", f"volume-{a}", "snapshot-s1", 32 * MiB, True)
    with pytest.raises(rbd_core.ImageExists):
        cinder.create_snapshot(vols, a, "s1")

    vb = cinder.create_from_snapshot(vols, a, "s1", b, 48 * MiB)
    assert (vb.parent, vb.size, vb.depth, vb.flattened) == (f"volumes/volume-{a}@snapshot-s1", 48 * MiB, 1, False)
    back = read_all(vols, vb.name)
    assert back[:len(data)] == data and back[32 * MiB:] == bytes(16 * MiB)
    with pytest.raises(rbd_core.InvalidArgument):
        cinder.create_from_snapshot(vols, a, "s1", vid("small"), 8 * MiB)
    with pytest.raises(rbd_core.ImageNotFound):
        cinder.create_from_snapshot(vols, a, "nosuch", vid("x"), 32 * MiB)

    calls = []
    vc = cinder.create_from_snapshot(vols, a, "s1", c, 32 * MiB, flatten=True, clone_format=1,
                                     on_progress=lambda d, t: calls.append(d))
    assert (vc.parent, vc.depth, vc.flattened) == (None, 0, True) and calls
    assert read_all(vols, vc.name)[:len(data)] == data
    with pytest.raises(ValueError):
        cinder.create_from_snapshot(vols, a, "s1", vid("fmt"), 32 * MiB, clone_format=3)

    # Children: refused (nothing changed), then flattened.
    with pytest.raises(rbd_core.ImageBusy, match="clone children") as ei:
        cinder.delete_snapshot(vols, a, "s1", on_children=cinder.ChildrenPolicy.Refuse)
    assert (ei.value.recipe, ei.value.step) == ("cinder.delete_snapshot", "inspect")
    assert "snapshot-s1" in snaps(vols, f"volume-{a}")
    d = cinder.delete_snapshot(vols, a, "s1")
    assert d.removed and d.flattened_children == [f"volumes/volume-{b}"]
    assert d.snapshot == f"volumes/volume-{a}@snapshot-s1"
    with vols.open(vb.name) as img:
        assert img.parent() is None
    assert read_all(vols, vb.name)[:len(data)] == data
    again = cinder.delete_snapshot(vols, a, "s1", cinder.ChildrenPolicy.Refuse)
    assert not again.removed and again.flattened_children == []


def test_volume_from_glance_image(cluster, vols, vid, scratch):
    images = cluster.open_pool("images")
    data = pattern(2, 16 * MiB)
    up = glance.upload(images, scratch("gimg"), data, hash="none")
    a = vid("a")
    v = cinder.create_from_image(vols, up.location, a, 32 * MiB)
    assert (v.parent, v.size, v.depth) == (f"images/{up.location.image}@snap", 32 * MiB, 1)
    back = read_all(vols, v.name)
    assert sha(back[:16 * MiB]) == sha(data) and back[16 * MiB:] == bytes(16 * MiB)
    b = cinder.create_from_image(vols, str(up.location), vid("b"), 16 * MiB, clone_format=1)
    assert b.depth == 1
    with pytest.raises(rbd_core.InvalidArgument):
        cinder.create_from_image(vols, glance.Location.legacy(up.location.image), vid("c"), 32 * MiB)
    with pytest.raises(rbd_core.InvalidArgument):
        cinder.create_from_image(vols, up.location, vid("c"), 8 * MiB)
    other = glance.Location("00000000-0000-0000-0000-000000000000", "images", up.location.image, "snap")
    with pytest.raises(rbd_core.InvalidArgument):
        cinder.create_from_image(vols, other, vid("c"), 32 * MiB)
    for name in (a, b.volume_id):
        assert cinder.delete_volume(vols, name).outcome == cinder.DeleteOutcome.Removed
    assert glance.delete(images, up.location).removed


def test_volumes_from_volumes_and_clone_depth(vols, vid):
    a, b, c, d = vid("a"), vid("b"), vid("c"), vid("d")
    cinder.create(vols, a, 16 * MiB)
    data = pattern(3, 4 * MiB)
    write(vols, a, data)
    vb = cinder.create_from_volume(vols, a, b, 24 * MiB, max_clone_depth=1)
    assert (vb.parent, vb.depth, vb.flattened, vb.size) == (
        f"volumes/volume-{a}@volume-{b}.clone_snap", 1, False, 24 * MiB)
    # b → c is 2 deep: flattened, and the temporary snapshot on b is gone.
    calls = []
    vc = cinder.create_from_volume(vols, b, c, 24 * MiB, max_clone_depth=1, on_progress=lambda x, t: calls.append(x))
    assert (vc.parent, vc.depth, vc.flattened) == (None, 0, True) and calls
    assert f"volume-{c}.clone_snap" not in snaps(vols, f"volume-{b}")
    assert read_all(vols, vc.name)[:len(data)] == data
    # Cinder's rule counts only .clone_snap parents; all ancestors count by default.
    with vols.open(vb.name) as img:
        assert cinder.clone_depth(img) == 1
        assert cinder.clone_depth(img, cinder.DepthRule.CinderCloneSnapOnly) == 1
    vd = cinder.create_from_volume(vols, b, d, 24 * MiB, max_clone_depth=2,
                                   depth_rule=cinder.DepthRule.CinderCloneSnapOnly, clone_format=1)
    assert (vd.depth, vd.flattened) == (2, False)
    with vols.open(f"volume-{b}") as img:
        assert img.snap_is_protected(f"volume-{d}.clone_snap"), "clone v1 protects the temporary snapshot"
    full = cinder.create_from_volume(vols, a, vid("full"), 16 * MiB, max_clone_depth=0)
    assert (full.parent, full.depth) == (None, 0)
    assert read_all(vols, full.name)[:len(data)] == data
    with pytest.raises(rbd_core.ImageExists):
        cinder.create_from_volume(vols, a, b, 24 * MiB)

    # A failure at the flatten (b is 1 deep, so a clone of it must be flattened) undoes
    # everything: no volume, no temporary snapshot on b.
    e = vid("e")
    _native._failpoint_set("cinder.create_from_volume.flatten")
    try:
        with pytest.raises(rbd_core.IOError) as ei:
            cinder.create_from_volume(vols, b, e, 24 * MiB, max_clone_depth=1)
    finally:
        _native._failpoint_clear("cinder.create_from_volume.flatten")
    err = ei.value
    assert isinstance(err, rbd_core.StepFailed)
    assert (err.recipe, err.step, err.undo_errors) == ("cinder.create_from_volume", "flatten", [])
    assert not vols.image_exists(f"volume-{e}")
    assert f"volume-{e}.clone_snap" not in snaps(vols, f"volume-{b}")


def test_delete_volume_paths(vols, vid):
    missing = cinder.delete_volume(vols, vid("missing"))
    assert missing.outcome == cinder.DeleteOutcome.NotFound

    # Backup snapshots go with the volume.
    bk = vid("bk")
    cinder.create(vols, bk, 8 * MiB)
    with vols.open(f"volume-{bk}") as img:
        img.snap_create("backup.b1.snap.1511348180.27")
    d = cinder.delete_volume(vols, bk)
    assert d.outcome == cinder.DeleteOutcome.Removed
    assert d.removed_snapshots == ["backup.b1.snap.1511348180.27"]

    # A real snapshot: moved to the trash.
    tr = vid("tr")
    cinder.create(vols, tr, 8 * MiB)
    cinder.create_snapshot(vols, tr, "keep")
    d = cinder.delete_volume(vols, tr)
    assert d.outcome == cinder.DeleteOutcome.Trashed and d.trash_id
    entry = vols.trash_get(d.trash_id)
    assert entry.name == f"volume-{tr}"
    vols.trash_restore(d.trash_id, entry.name)
    cinder.delete_snapshot(vols, tr, "keep")
    assert cinder.delete_volume(vols, tr).outcome == cinder.DeleteOutcome.Removed

    # Deleting a clone removes its .clone_snap from the parent.
    p, ch = vid("p"), vid("c")
    cinder.create(vols, p, 8 * MiB)
    cinder.create_from_volume(vols, p, ch, 8 * MiB)
    d = cinder.delete_volume(vols, ch)
    assert d.parent_snapshots_removed == [f"volumes/volume-{p}@volume-{ch}.clone_snap"]
    assert snaps(vols, f"volume-{p}") == []

    # A parent with a clone: the child is flattened (progress reported) ...
    data = pattern(4, MiB)
    write(vols, p, data)
    cinder.create_from_volume(vols, p, ch, 8 * MiB)
    calls = []
    d = cinder.delete_volume(vols, p, on_progress=lambda x, t: calls.append(x))
    assert (d.outcome, d.flattened_children) == (cinder.DeleteOutcome.Removed, [f"volumes/volume-{ch}"]) and calls
    with vols.open(f"volume-{ch}") as img:
        assert img.parent() is None
    assert read_all(vols, f"volume-{ch}")[:MiB] == data
    assert cinder.delete_volume(vols, ch).outcome == cinder.DeleteOutcome.Removed

    # ... or kept a clone: renamed .deleted, collected with its last child.
    cinder.create(vols, p, 8 * MiB)
    cinder.create_from_volume(vols, p, ch, 8 * MiB)
    d = cinder.delete_volume(vols, p, keep_children_as_clones=True)
    assert (d.outcome, d.name) == (cinder.DeleteOutcome.RenamedDeleted, f"volume-{p}.deleted")
    assert "DeleteOutcome.RenamedDeleted" in repr(d)
    with vols.open(f"volume-{ch}") as img:
        parent = img.parent()
        assert parent is not None and (parent.image, parent.snap) == (f"volume-{p}.deleted", f"volume-{ch}.clone_snap")
    assert cinder.delete_volume(vols, p).outcome == cinder.DeleteOutcome.NotFound
    d = cinder.delete_volume(vols, ch)
    assert d.collected_parents == [f"volumes/volume-{p}.deleted"]
    assert not [n for n in vols.list_images() if n.startswith(f"volume-{p}")]
    with pytest.raises(ValueError):
        cinder.delete_volume(vols, p, first_wait=-1.0)


def test_revert_to_snapshot_keeps_the_size(vols, vid):
    a = vid("a")
    cinder.create(vols, a, 8 * MiB)
    before = pattern(5, 2 * MiB)
    write(vols, a, before)
    cinder.create_snapshot(vols, a, "s1")
    write(vols, a, pattern(6, 2 * MiB))
    cinder.extend(vols, a, 16 * MiB)
    calls = []
    v = cinder.revert_to_snapshot(vols, a, "s1", on_progress=lambda d, t: calls.append(d))
    assert v.size == 16 * MiB and calls
    back = read_all(vols, v.name)
    assert back[:2 * MiB] == before and back[2 * MiB:] == bytes(14 * MiB)
    with pytest.raises(rbd_core.ImageNotFound):
        cinder.revert_to_snapshot(vols, a, "nosuch")
    cinder.delete_snapshot(vols, a, "s1")


def test_pool_capacity(vols, vid):
    cinder.create(vols, vid("cap"), 64 * MiB)
    cap = cinder.pool_capacity(vols)
    assert cap.pool == "volumes"
    assert cap.total_bytes == cap.free_bytes + cap.used_bytes
    assert cap.provisioned_bytes >= 64 * MiB
    assert cap.quota_bytes is None or cap.quota_bytes > 0
    assert cap.total_gib == round(cap.total_bytes / (1 << 30), 2)
    assert cap.free_gib == round(cap.free_bytes / (1 << 30), 2)
    assert cap.provisioned_gib == round(cap.provisioned_bytes / (1 << 30), 2)
    assert "PoolCapacity(" in repr(cap)


def test_enums():
    assert cinder.DeleteOutcome.Removed != cinder.DeleteOutcome.Trashed
    assert int(cinder.DepthRule.CinderCloneSnapOnly) == 1
    assert {cinder.ChildrenPolicy.Flatten, cinder.ChildrenPolicy.Flatten} == {cinder.ChildrenPolicy.Flatten}
