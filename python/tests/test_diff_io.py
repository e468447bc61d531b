"""rbd_core.diff against the live cluster: export-diff / import-diff through paths, real file
objects (descriptor path), BytesIO and pipes; byte-identity with the rbd CLI; the import
contract and the rollback after a truncated stream; the image v2 container; transfer."""
import io
import os
import subprocess
import threading

import pytest

import rbd_core
from rbd_core import diff
from conftest import ceph_conf
from recipe_helpers import MiB, pattern, read_all

pytestmark = pytest.mark.live


@pytest.fixture
def src(pool, scratch):
    """An image with s1 (data in objects 0 and 2) and s2 (more data, a discard), open at s2."""
    name = scratch.image(pool, "src", 16 * MiB, order=22)
    with pool.open(name) as img:
        img.write(pattern(1, MiB), 0)
        img.write(pattern(2, 64 << 10), 9 * MiB)
        img.snap_create("s1")
        img.write(pattern(3, 128 << 10), 4 * MiB + 4096)
        img.discard(8 * MiB, 4 * MiB)
        img.write(pattern(4, 4096), 15 * MiB)
        img.snap_create("s2")
        img.write(b"head only", 0)
    img = pool.open(name, snapshot="s2")
    yield img
    img.close()


def cli(*args: str) -> None:
    client = os.environ.get("RBD_TEST_CLIENT_ID", "admin")
    subprocess.run(["rbd", "-c", ceph_conf(), "--id", client, "--no-progress", *args], check=True,
                   capture_output=True)


def user_snaps(pool, name):
    with pool.open(name) as img:
        return [(s.name, s.protected) for s in sorted(img.snapshots(), key=lambda s: s.id)
                if s.namespace == rbd_core.SnapNamespace.User]


def test_export_import_roundtrip_through_paths_and_file_objects(pool, scratch, src, tmp_path):
    full, inc = tmp_path / "full.diff", tmp_path / "inc.diff"
    src.set_snap("s1")
    calls = []
    st = diff.export_diff(src, full, on_progress=lambda d, t: calls.append((d, t)))
    assert isinstance(st, diff.ExportStats) and st.diffs == 1 and calls and calls[-1][0] == calls[-1][1]
    assert full.read_bytes()[:12] == b"rbd diff v1\n"
    assert st.stream_bytes == full.stat().st_size and st.records == st.write_records + st.zero_records
    src.set_snap("s2")
    with open(inc, "wb") as f:                      # a real file object: its descriptor is used
        f.write(b"PREFIX")
        st2 = diff.export_diff(src, f, from_snap="s1")
        assert f.tell() == 6 + st2.stream_bytes
    assert inc.read_bytes()[:6] == b"PREFIX"

    dst = scratch.image(pool, "dst", MiB)
    with pool.open(dst) as d:
        ist = diff.import_diff(d, full)
        assert (ist.snapshots, ist.from_snap, ist.size) == (["s1"], None, 16 * MiB)
        assert ist.stream_bytes == full.stat().st_size
        with open(inc, "rb") as f:
            assert f.read(6) == b"PREFIX"
            ist2 = diff.import_diff(d, f)
        assert (ist2.from_snap, ist2.snapshots) == ("s1", ["s2"])
    for snap in ("s1", "s2"):
        assert read_all(pool, dst, snap) == read_all(pool, src.name, snap)
    assert user_snaps(pool, dst) == [("s1", False), ("s2", False)]

    # The same through BytesIO (write()/read(n) with the GIL per chunk) and bytes.
    buf = io.BytesIO()
    src.set_snap("s1")
    diff.export_diff(src, buf)
    assert buf.getvalue() == full.read_bytes()
    dst2 = scratch.image(pool, "dst2", MiB)
    with pool.open(dst2) as d:
        diff.import_diff(d, io.BytesIO(buf.getvalue()))
        diff.import_diff(d, inc.read_bytes()[6:])
    assert read_all(pool, dst2, "s2") == read_all(pool, src.name, "s2")


def test_cli_identical_export_matches_the_rbd_cli(pool, src, tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    diff.export_diff(src, ours, from_snap="s1", cli_identical=True)
    cli("export-diff", "--from-snap", "s1", f"rbd/{src.name}@s2", str(theirs))
    assert ours.read_bytes() == theirs.read_bytes()
    src.set_snap("s1")
    diff.export_diff(src, ours, cli_identical=True, whole_object=True)  # truncates ours
    cli("export-diff", "--whole-object", f"rbd/{src.name}@s1", str(tmp_path / "theirs2"))
    assert ours.read_bytes() == (tmp_path / "theirs2").read_bytes()


def test_import_contract_truncation_and_rollback(pool, scratch, src, tmp_path):
    full = tmp_path / "full.diff"
    src.set_snap("s1")
    diff.export_diff(src, full)
    src.set_snap("s2")
    inc = io.BytesIO()
    diff.export_diff(src, inc, from_snap="s1")
    inc_bytes = inc.getvalue()

    dst = scratch.image(pool, "dst", MiB)
    with pool.open(dst) as d:
        with pytest.raises(rbd_core.InvalidArgument, match="s1"):
            diff.import_diff(d, inc_bytes)              # 'f' snapshot missing: nothing written
        diff.import_diff(d, full)
        with pytest.raises(rbd_core.ImageExists):
            diff.import_diff(d, full)                   # 't' snapshot exists
        with pytest.raises(rbd_core.MalformedStream) as ei:
            diff.import_diff(d, b"not a diff stream at all")
        assert not diff.is_truncation(ei.value)
        # Truncated: part of the diff lands on the head; roll back to the from-snapshot.
        with pytest.raises(rbd_core.MalformedStream) as ei:
            diff.import_diff(d, inc_bytes[: len(inc_bytes) - 1000])
        assert diff.is_truncation(ei.value)
        assert not d.snap_exists("s2")
        calls = []
        diff.rollback_to_from_snap(d, "s1", on_progress=lambda x, t: calls.append(x))
        assert calls
        with pytest.raises(rbd_core.ImageNotFound):
            diff.rollback_to_from_snap(d, "nosuch")
        assert read_all(pool, dst) == read_all(pool, src.name, "s1")
        diff.import_diff(d, inc_bytes)
    assert read_all(pool, dst, "s2") == read_all(pool, src.name, "s2")
    with pool.open(dst, read_only=True) as ro, pytest.raises(rbd_core.InvalidArgument):
        diff.import_diff(ro, inc_bytes)


def test_streams_through_pipes(pool, scratch, src):
    """A raw pipe end is used through its descriptor on both sides (no Python call per chunk)."""
    r, w = os.pipe()
    box = {}

    def export():
        with open(w, "wb", buffering=0) as wf:
            box["stats"] = diff.export_diff(src, wf)

    t = threading.Thread(target=export)
    t.start()
    dst = scratch.image(pool, "dst", MiB)
    with open(r, "rb", buffering=0) as rf, pool.open(dst) as d:
        ist = diff.import_diff(d, rf)
    t.join()
    assert ist.stream_bytes == box["stats"].stream_bytes and ist.snapshots == ["s2"]
    assert read_all(pool, dst, "s2") == read_all(pool, src.name, "s2")


def test_export_errors_remove_the_file_and_reraise_writer_errors(pool, src, tmp_path):
    dest = tmp_path / "x.diff"
    with pytest.raises(rbd_core.ImageNotFound):
        diff.export_diff(src, dest, from_snap="nosuch")
    assert not dest.exists()

    class Broken(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            raise BrokenPipeError("reader went away")

    with pytest.raises(BrokenPipeError):
        diff.export_diff(src, Broken())
    with open(tmp_path / "t.txt", "w") as text, pytest.raises(TypeError, match="binary"):
        diff.export_diff(src, text)
    with pytest.raises(TypeError):
        diff.export_diff(src, b"bytes are not a destination")
    with pytest.raises(rbd_core.OperationCanceled):
        diff.export_diff(src, tmp_path / "c.diff", on_progress=lambda d, t: False)
    assert not (tmp_path / "c.diff").exists()
    with pytest.raises(FileNotFoundError):
        with pool.open(src.name) as img:
            diff.import_diff(img, tmp_path / "missing.diff")


def test_image_v2_container_roundtrip(pool, scratch, tmp_path):
    name = scratch.image(pool, "v2src", 8 * MiB)
    with pool.open(name) as img:
        img.write(pattern(7, MiB), 0)
        img.metadata_set("conf_rbd_cache", "false")
        img.snap_create("a")
        img.snap_protect("a")
        img.write(pattern(8, MiB), 4 * MiB)
        img.snap_create("b")
        img.write(b"head", 7 * MiB)
        st = diff.export_image(img, tmp_path / "img.v2")
    assert st.diffs == 3
    calls = []
    restored = scratch("v2dst")
    ist = diff.import_image(pool, restored, tmp_path / "img.v2", on_progress=lambda d, t: calls.append(d))
    assert (ist.snapshots, ist.protected) == (["a", "b"], ["a"]) and calls
    assert user_snaps(pool, restored) == [("a", True), ("b", False)]
    for snap in ("a", "b", None):
        assert read_all(pool, restored, snap) == read_all(pool, name, snap)
    with pool.open(restored) as img:
        assert img.metadata_get("conf_rbd_cache") == "false"
    with pytest.raises(rbd_core.ImageExists):
        diff.import_image(pool, restored, tmp_path / "img.v2")
    # CLI-identical container, read back from a file object, with an order override.
    buf = io.BytesIO()
    with pool.open(name, read_only=True) as img:
        diff.export_image(img, buf, cli_identical=True)
    other = scratch("v2order")
    diff.import_image(pool, other, io.BytesIO(buf.getvalue()), order=23)
    with pool.open(other) as img:
        assert img.stat().order == 23
    assert read_all(pool, other) == read_all(pool, name)
    # A truncated container leaves no image behind.
    bad = scratch("v2bad")
    with pytest.raises(rbd_core.MalformedStream):
        diff.import_image(pool, bad, buf.getvalue()[:-100])
    assert not pool.image_exists(bad)
    with pool.open(name) as img:
        img.snap_unprotect("a")
    with pool.open(restored) as img:
        img.snap_unprotect("a")


def test_transfer_full_and_incremental(cluster, pool, scratch, src):
    vols = cluster.open_pool("volumes")  # across pools
    dst_name = scratch("xfer")
    vols.create_image(dst_name, MiB)
    try:
        with vols.open(dst_name) as dst:
            src.set_snap("s1")
            calls = []
            st = diff.transfer(src, dst, in_flight=4, on_progress=lambda d, t: calls.append(d))
            assert isinstance(st, diff.TransferStats) and st.bytes_written > 0 and calls
            assert dst.snap_exists("s1")
            src.set_snap("s2")
            st2 = diff.transfer(src, dst, from_snap="s1")
            assert st2.bytes_written < st.bytes_written + (1 * MiB)
            assert dst.snap_exists("s2")
            for snap in ("s1", "s2"):
                assert read_all(vols, dst_name, snap) == read_all(pool, src.name, snap)
            # Checks before anything is written.
            with pytest.raises(rbd_core.ImageExists):
                diff.transfer(src, dst, from_snap="s1")
            with pytest.raises(rbd_core.ImageNotFound):
                diff.transfer(src, dst, from_snap="nosuch", to_snap="s3")
            with pytest.raises(ValueError):
                diff.transfer(src, dst, to_snap="x", create_snap=False)
            # Another name, and no snapshot at all.
            diff.transfer(src, dst, from_snap="s2", to_snap="s2-again")
            assert dst.snap_exists("s2-again")
            before = [s.name for s in dst.snapshots()]
            diff.transfer(src, dst, from_snap="s2", create_snap=False)
            assert [s.name for s in dst.snapshots()] == before
    finally:
        with vols.open(dst_name) as dst:
            for s in dst.snapshots():
                dst.snap_remove(s.name)
        vols.remove_image(dst_name)
