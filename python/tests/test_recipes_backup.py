"""rbd_core.backup against the live clusters: volumes on the main cluster, backups in the
``backups`` pool of the second cluster (RBD_TEST_CEPH_CONF2). Full and incremental backups with
Cinder's names, restores (new volume, rollback onto the source), list, verify, trim, delete
newest-first, and every step boundary of ``backup.create`` undoing to exactly the state before."""
import uuid

import pytest

import rbd_core
from rbd_core import _native, backup
from conftest import unique
from recipe_helpers import MiB, names, pattern, purge_prefix, read_all, sha  # noqa: F401 - fixture

pytestmark = pytest.mark.live


@pytest.fixture
def vols(cluster):
    return cluster.open_pool("volumes")


@pytest.fixture
def bpool(cluster2):
    return cluster2.open_pool("backups")


class Vol:
    """A test volume ``volume-<vid>`` on the main cluster and everything made from it: backup
    images, metadata objects of the backup ids used, restore targets (removed at teardown)."""

    def __init__(self, vols, bpool, names, size: int) -> None:
        self.vols, self.bpool = vols, bpool
        self.vid = unique("bk")
        self.image = f"volume-{self.vid}"
        names.add("volumes", self.image)
        self.bids: list[str] = []
        vols.create_image(self.image, size)

    def bid(self) -> str:
        b = str(uuid.uuid4())
        self.bids.append(b)
        return b

    def write(self, off: int, seed: int, n: int) -> bytes:
        data = pattern(seed, n)
        with self.vols.open(self.image) as img:
            img.write(data, off)
        return data

    def source_snaps(self) -> list[str]:
        with self.vols.open(self.image) as img:
            return sorted(s.name for s in img.snapshots())

    def backup_side(self):
        prefix = f"volume-{self.vid}.backup."
        images = []
        for n in sorted(x for x in self.bpool.list_images() if x.startswith(prefix)):
            with self.bpool.open(n) as img:
                images.append((n, sorted(s.name for s in img.snapshots())))
        metas = sorted(o for o in (backup.meta_object_name(b) for b in self.bids) if _exists(self.bpool, o))
        return images, metas

    def state(self):
        return self.source_snaps(), self.backup_side()

    def cleanup(self) -> list[str]:
        left = purge_prefix(self.bpool, f"volume-{self.vid}.backup.")
        for b in self.bids:
            try:
                self.bpool.object_remove(backup.meta_object_name(b))
            except rbd_core.ImageNotFound:
                pass
        return left


def _exists(pool, oid: str) -> bool:
    try:
        pool.object_stat(oid)
        return True
    except rbd_core.ImageNotFound:
        return False


@pytest.fixture
def vol_factory(vols, bpool, names):
    made: list[Vol] = []

    def make(size: int = 16 * MiB) -> Vol:
        v = Vol(vols, bpool, names, size)
        made.append(v)
        return v

    yield make
    left = [x for v in made for x in v.cleanup()]
    assert not left, f"could not clean up {left}"


def test_full_incremental_restore_verify_delete_across_clusters(vols, bpool, vol_factory, names):
    v = vol_factory(32 * MiB)
    d1 = v.write(0, 1, 8 * MiB)
    b1, b2 = v.bid(), v.bid()
    calls = []
    full = backup.create(vols, v.vid, bpool, b1, on_progress=lambda d, t: calls.append((d, t)),
                         volume_metadata={"version": 2, "volume-base-metadata": {"k": "v"}})
    assert isinstance(full, backup.BackupResult) and calls
    assert (full.kind.name, full.kind.is_incremental, full.image, full.size) == (
        "full", False, f"volume-{v.vid}.backup.{b1}", 32 * MiB)
    assert backup.parse_snap_name(full.snap).backup_id == b1 and full.image == backup.image_name(v.vid, b1)
    assert full.bytes_moved >= 8 * MiB and full.transfer.bytes_written >= 8 * MiB
    assert v.source_snaps() == [full.snap]
    with bpool.open(full.image) as img:
        assert [s.name for s in img.snapshots()] == [full.snap]
        assert img.features() & backup.IMAGE_FEATURES == backup.IMAGE_FEATURES
    assert sha(read_all(bpool, full.image, full.snap)) == sha(read_all(vols, v.image, full.snap))

    d2 = v.write(16 * MiB, 2, 4 * MiB)
    incr = backup.create(vols, v.vid, bpool, b2, parent=b1)
    assert (incr.kind.name, incr.kind.parent, incr.kind.from_snap) == ("incremental", b1, full.snap)
    assert incr.image == full.image, "an incremental goes onto its parent's backup image"
    assert incr.bytes_moved < 16 * MiB, incr

    infos = backup.list_backups(bpool, v.vid)
    assert [(i.backup_id, i.parent, i.is_full) for i in infos] == [(b1, None, True), (b2, b1, False)]
    assert infos[0].metadata["volume-base-metadata"] == {"k": "v"} and infos[0].size == 32 * MiB
    assert backup.verify(bpool, v.vid, b2, vols).matches

    # Restore b1 into a new volume on the main cluster: exactly the data at b1.
    t = f"{v.vid}-r1"
    names.add("volumes", f"volume-{t}")
    r = backup.restore(bpool, v.vid, b1, vols, t)
    assert (r.kind.name, r.created, r.size, r.target) == ("diff", True, 32 * MiB, f"volumes/volume-{t}")
    got = read_all(vols, f"volume-{t}")
    assert got[:8 * MiB] == d1 and got[16 * MiB:20 * MiB] == bytes(4 * MiB)
    # Restore b1 onto the source volume itself: a rollback (b2's data disappears).
    r = backup.restore(bpool, v.vid, b1, vols, v.vid)
    assert (r.kind.name, r.kind.snap, r.created) == ("rollback", full.snap, False)
    assert sha(read_all(vols, v.image)) == sha(got)
    # ... and forward again to b2.
    r = backup.restore(bpool, v.vid, b2, vols, v.vid)
    assert read_all(vols, v.image)[16 * MiB:20 * MiB] == d2

    # Trimming keeps the newest; deleting refuses while a newer incremental depends on it.
    with pytest.raises(rbd_core.InvalidArgument):
        backup.trim_source_snapshots(vols, v.vid, 0)
    with pytest.raises(rbd_core.ImageBusy):
        backup.delete_backup(bpool, v.vid, b1, source=vols)
    for bid in (b2, b1):
        d = backup.delete_backup(bpool, v.vid, bid, source=vols)
        assert isinstance(d, backup.DeleteResult) and d.metadata_removed
    assert v.source_snaps() == [] and v.backup_side() == ([], [])
    with pytest.raises(rbd_core.ImageNotFound):
        backup.delete_backup(bpool, v.vid, b1)
    for bad in ("UPPER", "a.b", "base", ""):
        with pytest.raises(rbd_core.InvalidArgument):
            backup.create(vols, v.vid, bpool, bad)
    assert v.source_snaps() == []


def test_every_create_step_boundary_undoes(vols, bpool, vol_factory, names):
    v = vol_factory()
    v.write(0, 3, 4 * MiB)
    b1 = v.bid()
    assert backup.CREATE_STEPS == ("cleanup", "create_image", "rewind", "snapshot", "transfer", "metadata")
    for step in ("cleanup", "create_image", "snapshot", "transfer", "metadata", "commit"):
        before = v.state()
        fp = f"backup.create.{step}"
        _native._failpoint_set(fp)
        try:
            with pytest.raises(rbd_core.StepFailed) as ei:
                backup.create(vols, v.vid, bpool, b1)
        finally:
            _native._failpoint_clear(fp)
        assert (ei.value.recipe, ei.value.step, ei.value.undo_errors) == ("backup.create", step, [])
        assert v.state() == before, f"after a failure at {step}"
    # Cancelled mid-transfer: undone like a failure.
    before = v.state()
    with pytest.raises(rbd_core.OperationCanceled):
        backup.create(vols, v.vid, bpool, b1, in_flight=1, on_progress=lambda d, t: d == 0)
    assert v.state() == before
    backup.create(vols, v.vid, bpool, b1)

    v.write(4 * MiB, 4, 4 * MiB)
    b2 = v.bid()
    for step in ("cleanup", "rewind", "snapshot", "transfer", "metadata", "commit"):
        before = v.state()
        fp = f"backup.create.{step}"
        _native._failpoint_set(fp)
        try:
            with pytest.raises(rbd_core.StepFailed) as ei:
                backup.create(vols, v.vid, bpool, b2, parent=b1)
        finally:
            _native._failpoint_clear(fp)
        assert ei.value.step == step and isinstance(ei.value, rbd_core.IOError)
        assert v.state() == before, f"after a failure at {step}"
    r2 = backup.create(vols, v.vid, bpool, b2, parent=b1)
    assert r2.kind.is_incremental and backup.verify(bpool, v.vid, b2, vols).matches

    # A restore into a missing volume removes it again on failure.
    t = f"{v.vid}-fp"
    names.add("volumes", f"volume-{t}")
    for step in ("create_image", "transfer", "resize", "commit"):
        fp = f"backup.restore.{step}"
        _native._failpoint_set(fp)
        try:
            with pytest.raises(rbd_core.StepFailed):
                backup.restore(bpool, v.vid, b2, vols, t)
        finally:
            _native._failpoint_clear(fp)
        assert not vols.image_exists(f"volume-{t}"), step
