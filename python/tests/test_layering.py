"""Layering: clone(), parent, children, flatten with a progress callable (cancel, exceptions,
CancelToken, Ctrl-C), clone depth, copies."""
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import rbd_core
from conftest import ceph_conf

pytestmark = pytest.mark.live
MiB = 1 << 20


def make_parent(pool, scratch, size=16 * MiB, objects=4):
    name = scratch.image(pool, "parent", size, order=22)
    with pool.open(name) as img:
        for i in range(objects):
            img.write(bytes([65 + i]) * 4096, i * 4 * MiB)
        img.snap_create("base")
    return name


def test_clone_parent_children(cluster, pool, scratch):
    parent = make_parent(pool, scratch)
    volumes = cluster.open_pool("volumes")
    child = scratch("child")
    rbd_core.clone(pool, parent, "base", volumes, child)  # v2: no protection needed
    with pytest.raises(rbd_core.ImageExists):
        rbd_core.clone(pool, parent, "base", volumes, child)
    with pytest.raises(rbd_core.ImageNotFound):
        rbd_core.clone(pool, parent, "nope", volumes, scratch("x"))
    with pytest.raises(rbd_core.InvalidArgument) as ei:  # v1 needs a protected snapshot
        rbd_core.clone(pool, parent, "base", pool, scratch("v1"), clone_format=1)
    assert "protected" in str(ei.value)
    with pytest.raises(ValueError):
        rbd_core.clone(pool, parent, "base", pool, scratch("v3"), clone_format=3)

    with volumes.open(child) as c:
        p = c.parent()
        assert isinstance(p, rbd_core.ParentInfo)
        assert (p.pool, p.pool_namespace, p.image, p.snap, p.snap_namespace, p.trash) == \
            ("rbd", "", parent, "base", rbd_core.SnapNamespace.User, False)
        assert c.parent() == p and hash(c.parent()) == hash(p)
        assert c.clone_depth() == 1 and c.overlap() == 16 * MiB
        assert c.read(4 * MiB, 2) == b"BB"
        grandchild = scratch("grandchild")
        c.snap_create("c1")
        rbd_core.clone(volumes, child, "c1", pool, grandchild, order=23)
    with pool.open(grandchild) as g:
        assert g.clone_depth() == 2 and g.stat().order == 23
    with pool.open(parent) as img:
        kids = img.children()
        assert [(k.pool, k.image, k.trash) for k in kids] == [("volumes", child, False)]
        assert isinstance(kids[0], rbd_core.ChildInfo) and kids[0].image_id
        assert img.children_of_snap("base") == kids
        assert img.snap_has_children("base")
        assert {d.image for d in img.descendants()} == {child, grandchild}
        assert img.clone_depth() == 0 and img.parent() is None


def test_flatten_reports_progress_and_detaches(pool, scratch):
    parent = make_parent(pool, scratch)
    child = scratch("child")
    rbd_core.clone(pool, parent, "base", pool, child)
    calls = []
    threads = set()

    def on_progress(done, total):
        calls.append((done, total))
        threads.add(threading.get_ident())

    with pool.open(child) as c:
        c.flatten(on_progress=on_progress)
        assert c.parent() is None and c.clone_depth() == 0
        assert c.read(12 * MiB, 1) == b"D"
        with pytest.raises(rbd_core.InvalidArgument):
            c.flatten()
    assert sorted(calls) == [(i, 4) for i in range(4)]


def test_flatten_cancel_by_returning_false(pool, scratch):
    parent = make_parent(pool, scratch)
    child = scratch("child")
    rbd_core.clone(pool, parent, "base", pool, child)
    calls = []
    with pool.open(child) as c:
        with pytest.raises(rbd_core.OperationCanceled):
            c.flatten(on_progress=lambda d, t: calls.append(d) or False)
        assert c.parent() is not None  # still a clone
        assert len(calls) == 1
        c.flatten(on_progress=lambda d, t: True)  # True / None continue
        assert c.parent() is None


class Boom(Exception):
    pass


def test_flatten_reraises_callback_exception(pool, scratch):
    parent = make_parent(pool, scratch)
    child = scratch("child")
    rbd_core.clone(pool, parent, "base", pool, child)
    calls = []

    def bad(done, total):
        calls.append(done)
        raise Boom(f"at {done}")

    with pool.open(child) as c:
        with pytest.raises(Boom, match="at 0"):
            c.flatten(on_progress=bad)
        assert calls == [0]  # the operation stopped at the first exception
        assert c.parent() is not None


def test_flatten_cancel_token_from_another_thread(pool, scratch):
    parent = make_parent(pool, scratch, size=64 * MiB, objects=16)
    child = scratch("child")
    rbd_core.clone(pool, parent, "base", pool, child)
    token = rbd_core.CancelToken()
    started = threading.Event()

    def slow(done, total):
        started.set()
        threading.Event().wait(0.05)

    with pool.open(child) as c:
        t = threading.Timer(0.2, token.cancel)
        t.start()
        with pytest.raises(rbd_core.OperationCanceled):
            c.flatten(on_progress=slow, cancel=token)
        t.join()
        assert started.is_set() and c.parent() is not None


CTRL_C = textwrap.dedent("""
    import os, signal, sys, threading, rbd_core
    pool = rbd_core.Cluster(conffile=os.environ["CEPH_CONF"],
                            client_id=os.environ.get("RBD_TEST_CLIENT_ID", "admin")).open_pool("rbd")
    calls, threads = [], set()
    def slow(done, total):
        calls.append(done)
        threads.add(threading.current_thread() is threading.main_thread())
        threading.Event().wait(0.05)   # the whole flatten would take 64 x 50 ms
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pool.open(sys.argv[1]) as c:
        try:
            c.flatten(on_progress=slow)
        except KeyboardInterrupt:
            print("interrupted", len(calls) < 64, c.parent() is not None, threads == {False})
        else:
            print("finished", len(calls))
""")


def test_flatten_ctrl_c(pool, scratch):
    """SIGINT during flatten raises KeyboardInterrupt and stops it. The callback runs on a
    librbd thread, where check_signals cannot see signals: the waiting (main) thread's
    periodic check_signals catches it and cancels the operation."""
    parent = make_parent(pool, scratch, size=256 * MiB, objects=64)
    child = scratch("child")
    rbd_core.clone(pool, parent, "base", pool, child)
    env = {**os.environ, "CEPH_CONF": ceph_conf()}
    out = subprocess.run([sys.executable, "-c", CTRL_C, child], capture_output=True, text=True, timeout=120, env=env)
    assert out.stdout.split() == ["interrupted", "True", "True", "True"], out


def test_copy_and_deep_copy(cluster, pool, scratch):
    src = make_parent(pool, scratch)
    volumes = cluster.open_pool("volumes")
    with pool.open(src) as img:
        calls = []
        img.copy_to(volumes, scratch("copy"), order=23, on_progress=lambda d, t: calls.append(d))
        assert calls
        with pytest.raises(rbd_core.ImageExists):
            img.copy_to(volumes, scratch("copy"))
        img.deep_copy_to(volumes, scratch("deep"))
        img.sparsify()
        with pytest.raises(rbd_core.InvalidArgument):
            img.sparsify(512)
    with volumes.open(scratch("copy")) as c:
        assert c.stat().order == 23 and c.read(8 * MiB, 1) == b"C" and c.snapshots() == []
    with volumes.open(scratch("deep")) as d:
        assert [s.name for s in d.snapshots()] == ["base"] and d.read(12 * MiB, 1) == b"D"
