"""rbd_core.glance against the live cluster: upload from buffers, paths and file objects (hashes,
thin end state, protected ``snap``), download to paths and file objects and as a reader, delete
(refused with clones, trash fallback), locations, and the undo on every failure (failpoints,
cancel, a failing reader)."""
import hashlib
import io
import os
import threading

import pytest

import rbd_core
from rbd_core import _native, glance
from recipe_helpers import MiB, pattern

pytestmark = pytest.mark.live


@pytest.fixture
def images(cluster):
    return cluster.open_pool("images")


def sparse_input() -> bytes:
    """32 MiB (4 objects of 8 MiB) where only objects 1 and 3 hold data."""
    z = bytes(8 * MiB)
    return z + pattern(1, 8 * MiB) + z + pattern(2, 8 * MiB)


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def assert_glance_image(pool, name: str, size: int, order: int = 23) -> None:
    with pool.open(name) as img:
        st = img.stat()
        assert (st.size, st.order) == (size, order)
        snaps = img.snapshots()
        assert [(s.name, s.protected) for s in snaps] == [("snap", True)]
        assert img.metadata_list() == {}, "no half-made marker left"


def test_upload_is_thin_hashes_everything_and_downloads_back(cluster, images, scratch, tmp_path):
    data = sparse_input()
    name = scratch("up")
    seen = []
    up = glance.upload(images, name, data, hash="sha256", on_progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (len(data), len(data))
    assert isinstance(up.location, glance.Location)
    fsid = cluster.fsid()
    assert str(up.location) == f"rbd://{fsid}/images/{name}/snap"
    assert up.location == glance.Location(fsid, "images", name, "snap")
    assert (up.bytes_written, up.bytes_stored) == (32 * MiB, 16 * MiB)
    assert up.checksum == md5(data)
    assert up.multihash == hashlib.sha256(data).hexdigest()
    assert up.hash_algo == "sha256"
    assert "UploadedImage(" in repr(up)
    assert_glance_image(images, name, 32 * MiB)
    with images.open(name, snapshot="snap") as at:
        assert at.allocated_bytes() == 16 * MiB

    # Download to a path, to a real file object (descriptor path) and to BytesIO (write()).
    dest = tmp_path / "back.raw"
    assert glance.download(images, up.location, dest) == len(data)
    assert dest.read_bytes() == data
    with open(tmp_path / "prefixed.raw", "wb") as f:
        f.write(b"HEADER")  # buffered, not yet flushed: flushed before the descriptor is used
        assert glance.download(images, str(up.location), f) == len(data)
        assert f.tell() == 6 + len(data), "the file object is left after what was written"
        f.write(b"TRAILER")
    assert (tmp_path / "prefixed.raw").read_bytes() == b"HEADER" + data + b"TRAILER"
    class NoPythonWrite(io.FileIO):
        def write(self, b):
            raise AssertionError("write() called: the descriptor path was not used")

    with NoPythonWrite(tmp_path / "fd.raw", "w") as f:
        assert glance.download(images, up.location, f) == len(data)
    assert (tmp_path / "fd.raw").read_bytes() == data
    bio = io.BytesIO()
    progress = []
    glance.download(images, up.location, bio, on_progress=lambda d, t: progress.append(d))
    assert bio.getvalue() == data and progress[-1] == len(data)

    # As a reader: odd-sized reads cross piece boundaries; readinto fills a buffer.
    with glance.open_download(images, up.location) as r:
        assert (r.size, r.data_bytes) == (32 * MiB, 16 * MiB)
        assert r.readable() and not r.seekable() and not r.writable()
        parts = [r.read(3 * MiB + 17)]
        buf = bytearray(5 * MiB)
        assert r.readinto(buf) == len(buf)
        parts.append(bytes(buf))
        mv = memoryview(bytearray(1000))[10:20]
        assert r.readinto(mv) == 10
        parts.append(bytes(mv))
        assert r.tell() == 3 * MiB + 17 + 5 * MiB + 10
        parts.append(r.read())
        assert r.read(10) == b"" and r.readinto(bytearray(4)) == 0
    assert b"".join(parts) == data
    assert r.closed
    with pytest.raises(ValueError):
        r.read(1)
    with pytest.raises(TypeError):
        glance.open_download(images, up.location).readinto(b"readonly")

    out = glance.delete(images, up.location)
    assert out.removed and not out.trashed and out.image_id is None
    assert repr(out) == "DeleteOutcome.Removed"
    assert not images.image_exists(name)
    with pytest.raises(rbd_core.ImageNotFound):
        glance.delete(images, up.location)


def test_upload_from_paths_and_file_objects(images, scratch, tmp_path):
    data = pattern(3, 9 * MiB + 4321)
    src = tmp_path / "src.raw"
    src.write_bytes(b"SKIP" + data)

    def check(tag, source, **kw):
        name = scratch(tag)
        up = glance.upload(images, name, source, hash="none", **kw)
        assert (up.bytes_written, up.checksum, up.multihash) == (len(data), md5(data), None), tag
        with images.open(name, snapshot="snap") as img:
            assert img.size() == len(data)
        glance.delete(images, up.location)

    plain = tmp_path / "plain.raw"
    plain.write_bytes(data)
    check("path", plain)                        # a path (size from the file)
    check("strpath", str(plain))
    with open(src, "rb") as f:                  # a buffered file at an offset (descriptor path)
        assert f.read(4) == b"SKIP"
        f.peek(1 << 20)                         # read-ahead inside the Python buffer
        check("fileobj", f)
        assert f.tell() == 4 + len(data), "the file object is left after what was consumed"
        assert f.read() == b""
    with open(plain, "rb", buffering=0) as f:   # a raw file
        check("raw", f)
    class NoPythonRead(io.FileIO):
        """A real file whose read() must not be called: the descriptor is read in Rust."""

        def read(self, n=-1):
            raise AssertionError("read() called: the descriptor path was not used")

        def readinto(self, b):
            raise AssertionError("readinto() called")

    with NoPythonRead(plain, "r") as f:
        check("fd-only", f)
    check("bytesio", io.BytesIO(data))          # read(n) under the GIL, unknown size: trimmed
    check("bytesio-sized", io.BytesIO(data), size=len(data))
    check("bytearray", bytearray(data))
    check("memoryview", memoryview(data))

    # Pipes: a raw pipe end is read through its descriptor, a buffered one through read(n).
    for tag, buffering in (("pipe-raw", 0), ("pipe-buf", -1)):
        r, w = os.pipe()

        def feed(w=w):
            with open(w, "wb") as wf:
                wf.write(data)

        t = threading.Thread(target=feed)
        t.start()
        with open(r, "rb", buffering=buffering) as rf:
            check(tag, rf)
        t.join()


def test_upload_unknown_size_grows_and_trims(images, scratch):
    for n in (20 * MiB + 12345, 5000, 0):
        data = pattern(n, n)
        name = scratch(f"unk{n}")
        up = glance.upload(images, name, io.BytesIO(data), hash="sha512")
        assert up.bytes_written == n
        assert up.multihash == hashlib.sha512(data).hexdigest() and up.checksum == md5(data)
        assert_glance_image(images, name, n)
        assert glance.open_download(images, up.location).read() == data
        glance.delete(images, up.location)


def test_bad_input_is_refused_before_anything_is_created(images, scratch, tmp_path):
    before = images.list_images()
    for bad in ("", "a/b", "a@b"):
        with pytest.raises(rbd_core.InvalidArgument):
            glance.upload(images, bad, b"x")
    with pytest.raises(rbd_core.InvalidArgument):
        glance.upload(images, scratch("badhash"), b"x", hash="md5")
    with pytest.raises(rbd_core.InvalidArgument):
        glance.upload(images, scratch("badorder"), b"x", order=30)
    (tmp_path / "t.txt").write_text("text")
    with open(tmp_path / "t.txt") as text, pytest.raises(TypeError, match="binary"):
        glance.upload(images, scratch("text"), text)
    with pytest.raises(TypeError):
        glance.upload(images, scratch("int"), 42)
    with pytest.raises(FileNotFoundError):
        glance.upload(images, scratch("nofile"), tmp_path / "missing")
    assert images.list_images() == before

    # An existing image is left alone.
    name = scratch.image(images, "exists", MiB)
    with pytest.raises(rbd_core.ImageExists):
        glance.upload(images, name, b"x")
    assert images.image_exists(name)

    # A declared size that does not match fails the write step and leaves nothing.
    for declared, actual in ((4 * MiB, 4 * MiB + 1), (4 * MiB, MiB), (0, 1)):
        name = scratch(f"mismatch{declared}-{actual}")
        with pytest.raises(rbd_core.InvalidArgument, match="size mismatch") as ei:
            glance.upload(images, name, io.BytesIO(pattern(1, actual)), size=declared)
        assert isinstance(ei.value, rbd_core.StepFailed) and ei.value.step == "write"
        assert ei.value.undo_errors == []
        assert not images.image_exists(name)

    # Locations of another cluster are refused.
    other = glance.Location("00000000-0000-0000-0000-000000000000", "images", name, "snap")
    with pytest.raises(rbd_core.InvalidArgument):
        glance.delete(images, other)
    with pytest.raises(rbd_core.InvalidArgument):
        glance.open_download(images, other)
    with pytest.raises(TypeError):
        glance.delete(images, 42)


def test_injected_failure_at_protect_snap_undoes_everything(images, scratch):
    """The acceptance check: a failure injected at ``glance.upload.protect_snap`` raises the
    kind's class (IOError) that is also a StepFailed, and leaves no image."""
    assert "protect_snap" in glance.UPLOAD_STEPS
    name = scratch("fp")
    _native._failpoint_set("glance.upload.protect_snap")
    try:
        with pytest.raises(rbd_core.IOError) as ei:
            glance.upload(images, name, pattern(4, 2 * MiB), hash="none", checksum=False)
    finally:
        _native._failpoint_clear("glance.upload.protect_snap")
    e = ei.value
    assert isinstance(e, rbd_core.StepFailed)
    assert (e.recipe, e.step, e.undo_errors) == ("glance.upload", "protect_snap", [])
    assert "injected failure" in str(e)
    assert not images.image_exists(name)
    # Disarmed: the same upload now works.
    glance.upload(images, name, pattern(4, 2 * MiB), hash="none", checksum=False)
    assert_glance_image(images, name, 2 * MiB)


def test_failure_at_every_upload_step_leaves_no_image(images, scratch):
    for step in (*glance.UPLOAD_STEPS, "commit"):
        name = scratch(f"fp-{step}")
        _native._failpoint_set(f"glance.upload.{step}")
        try:
            with pytest.raises(rbd_core.StepFailed) as ei:
                glance.upload(images, name, io.BytesIO(pattern(5, 3 * MiB)), hash="none", checksum=False)
        finally:
            _native._failpoint_clear(f"glance.upload.{step}")
        assert (ei.value.recipe, ei.value.step) == ("glance.upload", step)
        assert ei.value.undo_errors == []
        assert not images.image_exists(name), step
    with pytest.raises(ValueError):
        _native._failpoint_set("x.y", "explode")


def test_cancel_callback_errors_and_reader_errors_undo(images, scratch):
    data = pattern(6, 24 * MiB)
    name = scratch("cancel")
    with pytest.raises(rbd_core.OperationCanceled):
        glance.upload(images, name, data, hash="none", on_progress=lambda d, t: d < 8 * MiB)
    assert not images.image_exists(name)

    token = rbd_core.CancelToken()
    token.cancel()
    with pytest.raises(rbd_core.OperationCanceled):
        glance.upload(images, name, data, hash="none", cancel=token)
    assert not images.image_exists(name)

    class Boom(Exception):
        pass

    def bad_progress(done, total):
        if done >= 8 * MiB:
            raise Boom("from the callback")

    with pytest.raises(Boom):
        glance.upload(images, name, data, hash="none", on_progress=bad_progress)
    assert not images.image_exists(name)

    class Flaky(io.RawIOBase):
        """Yields 10 MiB, then the network goes away."""

        def __init__(self):
            self.left = 10 * MiB

        def readable(self):
            return True

        def read(self, n=-1):
            if self.left == 0:
                raise ConnectionResetError("network went away")
            n = min(n, self.left, MiB)
            self.left -= n
            return b"\x07" * n

        def fileno(self):
            raise OSError("no descriptor")

    with pytest.raises(ConnectionResetError, match="network went away") as ei:
        glance.upload(images, name, Flaky(), hash="none")
    notes = getattr(ei.value, "__notes__", [])
    assert any("glance.upload" in n for n in notes), notes
    assert not images.image_exists(name)


def test_delete_is_refused_while_snap_has_clones(cluster, images, scratch):
    name = scratch("parent")
    up = glance.upload(images, name, pattern(7, 4 * MiB), hash="none")
    rbd = cluster.open_pool("rbd")
    child = scratch("child")
    rbd_core.clone(images, name, "snap", rbd, child)
    with pytest.raises(rbd_core.ImageBusy, match="image has dependent clones") as ei:
        glance.delete(images, up.location)
    assert f"rbd/{child}" in str(ei.value)
    assert_glance_image(images, name, 4 * MiB)
    with rbd.open(child) as c:
        c.flatten()
    assert glance.delete(images, up.location).removed
    assert not images.image_exists(name)


def test_delete_moves_an_image_held_by_trash_snapshots_to_the_trash(cluster, images, scratch):
    name = scratch("trash")
    up = glance.upload(images, name, pattern(8, 2 * MiB), hash="none")
    rbd = cluster.open_pool("rbd")
    child = scratch("trash-child")
    with images.open(name) as img:
        img.snap_create("old")
        rbd_core.clone(images, name, "old", rbd, child, clone_format=2)
        img.snap_remove("old")
        assert any(s.namespace == rbd_core.SnapNamespace.Trash for s in img.snapshots())
        image_id = img.id()
    out = glance.delete(images, up.location)
    assert out.trashed and not out.removed and out.image_id == image_id
    assert repr(out) == f'DeleteOutcome.Trashed(image_id="{image_id}")'
    assert not images.image_exists(name)
    assert any(e.id == image_id for e in images.trash_list())
    rbd.remove_image(child)
    images.trash_remove(image_id, force=True)


def test_download_failure_removes_the_created_file(images, scratch, tmp_path):
    up = glance.upload(images, scratch("dl"), pattern(9, MiB), hash="none")
    missing = glance.Location(up.location.fsid or "", "images", scratch("nosuch"), "snap")
    dest = tmp_path / "out.raw"
    with pytest.raises(rbd_core.ImageNotFound):
        glance.download(images, missing, dest)
    assert not dest.exists()

    class Full(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        glance.download(images, up.location, Full())
    with open(tmp_path / "t.txt", "w") as text, pytest.raises(TypeError):
        glance.download(images, up.location, text)


def test_location_parse_format_and_attributes():
    fsid = "29e2ab17-de19-431f-b24f-3a31ece959a1"
    loc = glance.Location.parse(f"rbd://{fsid}/images/c0ffee/snap")
    assert (loc.fsid, loc.pool, loc.image, loc.snap) == (fsid, "images", "c0ffee", "snap")
    assert not loc.is_legacy() and loc.spec() == "images/c0ffee@snap"
    odd = glance.Location("fsid", "my pool", "a/b", "snap")
    assert str(odd) == "rbd://fsid/my%20pool/a%2Fb/snap"
    assert glance.Location.parse(str(odd)) == odd
    assert len({odd, glance.Location.parse(str(odd))}) == 1
    assert repr(odd) == 'Location("rbd://fsid/my%20pool/a%2Fb/snap")'
    legacy = glance.Location.parse("rbd://c0ffee")
    assert legacy.is_legacy() and legacy == glance.Location.legacy("c0ffee")
    assert (legacy.fsid, legacy.pool, legacy.snap) == (None, None, None)
    for bad in ("file:///tmp/x", "rbd://a/b/c", "rbd://a//b/c", "rbd://x/100%/y/z"):
        with pytest.raises(rbd_core.InvalidArgument):
            glance.Location.parse(bad)
