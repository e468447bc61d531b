"""rbd_core.groups against the live cluster: a consistency group's life (create, add, one group
snapshot across members, restore into new volumes with the members' content at the snapshot,
refusals while snapshots exist, delete), and every step boundary of create / snapshot / restore
undoing to exactly the state before."""
import pytest

import rbd_core
from rbd_core import _native, groups
from conftest import unique
from recipe_helpers import MiB, names, pattern, read_all, sha  # noqa: F401 - fixture

pytestmark = pytest.mark.live


@pytest.fixture
def vols(cluster):
    return cluster.open_pool("volumes")


@pytest.fixture
def env(vols, names):
    """(ConsistencyGroups, new group id, new volume id); groups and their metadata objects are
    removed at teardown, volumes ``volume-<prefix>*`` too."""
    cgs = groups.ConsistencyGroups(vols)
    prefix = unique("cg")
    names.add("volumes", f"volume-{prefix}")
    made: list[str] = []

    def gid(tag: str) -> str:
        made.append(f"{prefix}-{tag}")
        return made[-1]

    yield cgs, gid, lambda tag: f"{prefix}-{tag}"
    for g in made:
        try:
            cgs.delete(g, force=True)
        except rbd_core.ImageNotFound:
            pass
        try:
            vols.object_remove(f"rbd_core.cg.{g}")
        except rbd_core.ImageNotFound:
            pass


def volume(vols, vid: str, seed: int, size: int = 8 * MiB) -> bytes:
    vols.create_image(f"volume-{vid}", size)
    data = pattern(seed, 2 * MiB)
    with vols.open(f"volume-{vid}") as img:
        img.write(data, MiB)
    return read_all(vols, f"volume-{vid}")


def state(cgs, vols, gids, vid_prefix):
    """Groups (members, snapshots, metadata object) and volumes with their snapshots."""
    g = {}
    for gid in gids:
        try:
            cg = cgs.get(gid)
            g[gid] = (cg.volumes, [s.id for s in cgs.snapshots(gid)], vols.object_read(f"rbd_core.cg.{gid}", 1 << 16))
        except rbd_core.ImageNotFound:
            g[gid] = None
    v = {}
    for n in sorted(x for x in vols.list_images() if x.startswith(f"volume-{vid_prefix}")):
        with vols.open(n) as img:
            v[n] = sorted(s.name for s in img.snapshots())
    return g, v


def test_consistency_group_lifecycle_and_restore(vols, env):
    cgs, gid, vid = env
    a, b = vid("a"), vid("b")
    da, db = volume(vols, a, 1), volume(vols, b, 2)
    g = gid("g1")
    cg = cgs.create(g, name="db", volume_types=["ssd"], description="d")
    assert (cg.id, cg.rbd_group, cg.pool, cg.name, cg.volume_types, cg.volumes) == (
        g, groups.rbd_group_name(g), "volumes", "db", ["ssd"], [])
    assert g in cgs.list() and f"group-{g}" in vols.group_list()
    with pytest.raises(rbd_core.ImageExists):
        cgs.create(g, name="db", volume_types=["ssd"])
    with pytest.raises(rbd_core.InvalidArgument):
        cgs.create(gid("novt"), name="x", volume_types=[])
    assert cgs.add_volumes(g, [a, b]).volumes == sorted([a, b])

    s = cgs.create_snapshot(g, "s1", name="nightly", description="n")
    assert (s.id, s.group_id, s.rbd_snap, s.name, s.complete) == ("s1", g, groups.rbd_snap_name("s1"), "nightly", True)
    assert [m.volume_id for m in s.members] == sorted([a, b]) and all(m.size == 8 * MiB for m in s.members)
    assert cgs.snapshot(g, "s1") == s and cgs.snapshots(g) == [s]
    # Changes after the snapshot do not reach restored volumes.
    with vols.open(f"volume-{a}") as img:
        img.write(b"\xff" * MiB, 0)
    with pytest.raises(rbd_core.ImageBusy, match="dependent cgsnapshots"):
        cgs.remove_volumes(g, [a])
    with pytest.raises(rbd_core.ImageBusy, match="dependent cgsnapshots"):
        cgs.delete(g)

    g2 = gid("g2")
    calls = []
    r = cgs.restore(g, "s1", prefix=vid("r"), into_group=(g2, groups.GroupSpec("copy", ["ssd"])),
                    on_progress=lambda d, t: calls.append(d))
    assert isinstance(r, groups.RestoredGroup) and r.group_id == g2 and calls
    assert [(x.source_volume_id, x.volume_id, x.size) for x in r.volumes] == [
        (a, f"{vid('r')}-{a}", 8 * MiB), (b, f"{vid('r')}-{b}", 8 * MiB)]
    assert sha(read_all(vols, r.volumes[0].image)) == sha(da)
    assert sha(read_all(vols, r.volumes[1].image)) == sha(db)
    assert cgs.get(g2).volumes == sorted(x.volume_id for x in r.volumes)
    with pytest.raises(rbd_core.ImageExists):
        cgs.restore(g, "s1", prefix=vid("r"))
    with pytest.raises(ValueError):
        cgs.restore(g, "s1")
    r2 = cgs.restore(g, "s1", names={a: vid("m-a"), b: vid("m-b")})
    assert [x.volume_id for x in r2.volumes] == [vid("m-a"), vid("m-b")] and r2.group_id is None

    cgs.delete_snapshot(g, "s1")
    assert cgs.snapshots(g) == []
    assert cgs.remove_volumes(g, [a]).volumes == [b]
    cgs.delete(g)
    with pytest.raises(rbd_core.ObjectNotFound):
        cgs.get(g)
    assert vols.image_exists(f"volume-{b}"), "member volumes stay"


def test_every_step_boundary_undoes(vols, env):
    cgs, gid, vid = env
    a, b = vid("a"), vid("b")
    volume(vols, a, 3, 4 * MiB)
    volume(vols, b, 4, 4 * MiB)
    g, g2 = gid("f"), gid("fn")

    def fail_at(recipe: str, steps, fn, gids) -> None:
        for step in (*steps, "commit"):
            before = state(cgs, vols, gids, vid(""))
            fp = f"groups.{recipe}.{step}"
            _native._failpoint_set(fp)
            try:
                with pytest.raises(rbd_core.StepFailed) as ei:
                    fn()
            finally:
                _native._failpoint_clear(fp)
            assert (ei.value.recipe, ei.value.step) == (f"groups.{recipe}", step)
            assert state(cgs, vols, gids, vid("")) == before, fp

    fail_at("create", groups.CREATE_STEPS, lambda: cgs.create(g, name="f", volume_types=["t"]), [g])
    cgs.create(g, name="f", volume_types=["t"])
    fail_at("add", groups.ADD_STEPS, lambda: cgs.add_volumes(g, [a, b]), [g])
    cgs.add_volumes(g, [a, b])
    fail_at("snapshot", groups.SNAPSHOT_STEPS, lambda: cgs.create_snapshot(g, "s", "n", "d"), [g])
    cgs.create_snapshot(g, "s", "n", "d")
    fail_at("restore", groups.RESTORE_STEPS,
            lambda: cgs.restore(g, "s", prefix=vid("r"), into_group=(g2, groups.GroupSpec("n", ["t"]))), [g, g2])
    # A cancelled restore undoes like a failed one.
    before = state(cgs, vols, [g, g2], vid(""))
    token = rbd_core.CancelToken()
    token.cancel()
    with pytest.raises(rbd_core.OperationCanceled):
        cgs.restore(g, "s", prefix=vid("r"), cancel=token)
    assert state(cgs, vols, [g, g2], vid("")) == before
