"""rbd_core.reconcile against the live clusters: recipes killed (SIGKILL at a failpoint, in a
child process) leave half-made artifacts that a dry run lists and an apply removes — exactly
the listed ones —, while live look-alikes stay; orphaned backup source snapshots are found with
the second cluster's backup pool as the target. Every run is restricted to this test's names
(``filter``), since other tests share the pools."""
import os
import subprocess
import sys
import time
import uuid

import pytest

import rbd_core
from rbd_core import backup, glance, reconcile
from conftest import ceph_conf, unique
from recipe_helpers import MiB, names  # noqa: F401 - fixture

pytestmark = pytest.mark.live

KILLED_UPLOAD = """
import os, sys
import rbd_core
from rbd_core import _native, glance
_native._failpoint_set(sys.argv[2], "kill")
pool = rbd_core.Cluster(conffile=os.environ["CEPH_CONF"], client_id=os.environ.get("RBD_TEST_CLIENT_ID", "admin")).open_pool("images")
glance.upload(pool, sys.argv[1], os.urandom(3 << 20))
print("not killed")
"""


def killed_upload(image_id: str, failpoint: str) -> int:
    env = dict(os.environ, CEPH_CONF=ceph_conf())
    out = subprocess.run([sys.executable, "-c", KILLED_UPLOAD, image_id, failpoint],
                         capture_output=True, text=True, env=env, timeout=120)
    return out.returncode


def test_killed_uploads_are_found_then_removed(cluster, names):
    images = cluster.open_pool("images")
    tok = unique("rcn")
    names.add("images", tok)
    expect = {}
    for step in ("mark", "write", "create_snap", "protect_snap", "commit"):
        image_id = f"{tok}-{step}"
        assert killed_upload(image_id, f"glance.upload.{step}") == -9, step
        expect[step] = images.image_exists(image_id)
    # Killed before the marker (not provable: left alone) or after the recipe finished: nothing.
    assert expect == {"mark": True, "write": True, "create_snap": True, "protect_snap": True, "commit": True}

    # The killed clients' watches last until the OSD times them out: in use, so left alone.
    early = reconcile.run([images], min_age=0, filter=lambda n: tok in n)
    assert early.findings == [] and all("in use" in s.reason for s in early.skipped), early.skipped
    assert len(early.skipped) == 3
    deadline = time.monotonic() + 90
    for step in ("write", "create_snap", "protect_snap"):
        with images.open(f"{tok}-{step}", read_only=True) as img:
            while img.watchers() and time.monotonic() < deadline:
                time.sleep(1)

    dry = reconcile.run([images], min_age=0, filter=lambda n: tok in n)
    assert isinstance(dry, reconcile.ReconcileReport) and dry.dry_run
    found = sorted((f.kind, f.spec, f.action) for f in dry.findings)
    want = sorted((reconcile.FindingKind.HalfMadeImage, f"images/{tok}-{s}", "planned")
                  for s in ("write", "create_snap", "protect_snap"))
    assert found == want, dry.findings
    assert all(f.kind.label == "half-made-image" and f.age is not None and f.error is None for f in dry.findings)
    # Young artifacts are left alone by the default min_age.
    assert reconcile.run([images], filter=lambda n: tok in n).findings == []

    done = reconcile.run([images], min_age=0, dry_run=False, filter=lambda n: tok in n)
    assert [(f.kind, f.spec) for f in done.findings] == [(f.kind, f.spec) for f in dry.findings]
    assert (done.removed, done.failed) == (3, 0) and all(f.action == "removed" for f in done.findings)
    left = sorted(n for n in images.list_images() if n.startswith(tok))
    assert left == [f"{tok}-commit", f"{tok}-mark"], "unmarked and finished images stay"
    glance.delete(images, glance.Location(cluster.fsid(), "images", f"{tok}-commit", glance.SNAP_NAME))
    assert reconcile.run([images], min_age=0, filter=lambda n: tok in n).findings == []


def test_clone_snap_and_backup_orphans_and_look_alikes(cluster, cluster2, names):
    vols = cluster.open_pool("volumes")
    backups = cluster2.open_pool("backups")
    tok = unique("rcv")
    names.add("volumes", f"volume-{tok}")
    a, child = f"volume-{tok}-a", f"volume-{tok}-c"
    vols.create_image(a, 4 * MiB)
    bid = str(uuid.uuid4())
    orphan_backup = backup.parse_snap_name(f"backup.{bid}.snap.{time.time()}")
    assert orphan_backup is not None
    with vols.open(a) as img:
        img.snap_create(f"volume-{tok}-gone.clone_snap")  # its clone is gone: an orphan
        img.snap_create(f"volume-{tok}-c.clone_snap")  # still has its clone: stays
        img.snap_protect(f"volume-{tok}-c.clone_snap")
        img.snap_create(f"backup.{orphan_backup.backup_id}.snap.{orphan_backup.timestamp}")
    rbd_core.clone(vols, a, f"volume-{tok}-c.clone_snap", vols, child)

    def mine(n: str) -> bool:
        return tok in n

    dry = reconcile.run([vols], backup_target=backups, min_age=0, filter=mine)
    got = sorted((f.kind.label, f.snap) for f in dry.findings)
    assert got == [("backup-source-snapshot", f"backup.{orphan_backup.backup_id}.snap.{orphan_backup.timestamp}"),
                   ("clone-snapshot", f"volume-{tok}-gone.clone_snap")], dry.findings
    # Without a target, backup snapshots are not judged (a note says so).
    nt = reconcile.run([vols], min_age=0, filter=mine)
    assert [f.kind.label for f in nt.findings] == ["clone-snapshot"] and nt.notes

    done = reconcile.run([vols], backup_target=backups, min_age=0, dry_run=False, filter=mine)
    assert (done.removed, done.failed) == (2, 0)
    with vols.open(a) as img:
        assert sorted(s.name for s in img.snapshots()) == [f"volume-{tok}-c.clone_snap"]
    with vols.open(child) as img:
        assert img.parent().snap == f"volume-{tok}-c.clone_snap"

    # A filter that raises stops the run with its exception.
    def bad(n: str) -> bool:
        raise RuntimeError("filter broke")

    with pytest.raises(RuntimeError, match="filter broke"):
        reconcile.run([vols], min_age=0, filter=bad)
    assert reconcile.run([vols], min_age=0, prefix=f"volume-{tok}-zzz").findings == []
    assert reconcile.DEFAULT_MIN_AGE == 600.0
