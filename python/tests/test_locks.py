"""Locks: the managed exclusive lock as a context manager, owners and break (fencing), and
advisory locks."""
import os

import pytest

import rbd_core
from conftest import ceph_conf

pytestmark = pytest.mark.live


def connect():
    """A private connection (breaking a lock blocklists its owner: never the shared one)."""
    return rbd_core.Cluster(conffile=ceph_conf(),
                            client_id=os.environ.get("RBD_TEST_CLIENT_ID", "admin"), shared=False)


def test_exclusive_lock_context_manager_and_break(pool, scratch):
    name = scratch.image(pool)  # default features include exclusive-lock
    a, b = connect(), connect()
    img_a = a.open_pool("rbd").open(name)
    img_b = b.open_pool("rbd").open(name)
    try:
        lock = img_a.exclusive_lock()
        assert not lock.held and "held=False" in repr(lock)
        with pytest.raises(rbd_core.ConnectionShutdown):
            with lock:
                assert lock.held and img_a.is_exclusive_lock_owner()
                img_a.write(b"mine", 0)
                with pytest.raises(rbd_core.ReadOnlyImage):  # the other client is fenced off
                    img_b.write(b"theirs", 0)
                with pytest.raises(rbd_core.ReadOnlyImage):
                    img_b.lock_acquire()
                (owner,) = img_b.lock_owners()
                assert isinstance(owner, rbd_core.LockOwner) and owner.mode == rbd_core.LockMode.Exclusive
                img_b.lock_break(owner.mode, owner.owner)  # blocklists client a
                img_b.lock_acquire()
                img_b.write(b"theirs", 0)
                img_a.write(b"late", 0)  # fenced: ConnectionShutdown, and __exit__ keeps it
        assert not lock.held
        assert img_b.read(0, 6) == b"theirs"
    finally:
        img_b.close()
        img_a.close()


def test_lock_acquire_release(pool, scratch):
    name = scratch.image(pool)
    with pool.open(name) as img:
        img.lock_acquire()
        assert img.is_exclusive_lock_owner()
        assert len(img.lock_owners()) == 1
        img.lock_release()
        with pytest.raises(rbd_core.InvalidArgument):
            img.lock_release()
        with img.exclusive_lock() as lock:
            assert lock.held
        assert not img.is_exclusive_lock_owner()
        with pytest.raises(rbd_core.InvalidArgument):  # the release error surfaces on exit
            with img.exclusive_lock():
                img.lock_release()
        with pytest.raises(rbd_core.ImageNotFound):
            img.lock_break(rbd_core.LockMode.Exclusive, "nobody")
    plain = scratch.image(pool, "plain", features=rbd_core.FEATURE_LAYERING)
    with pool.open(plain) as img, pytest.raises(rbd_core.InvalidArgument):
        with img.exclusive_lock():
            pass


def test_advisory_locks(pool, scratch):
    name = scratch.image(pool, features=rbd_core.FEATURE_LAYERING)
    with pool.open(name) as img:
        assert len(img.list_lockers()) == 0
        with img.advisory_lock("backup-1") as lk:
            assert lk.held and lk.cookie == "backup-1" and lk.tag is None
            lockers = img.list_lockers()
            assert isinstance(lockers, rbd_core.Lockers) and lockers.exclusive and lockers.tag == ""
            (holder,) = lockers.lockers
            assert holder.cookie == "backup-1" and holder.client.startswith("client.")
            with pytest.raises(rbd_core.ImageExists):
                img.lock_exclusive("backup-1")
            with pytest.raises(rbd_core.ImageNotFound):
                img.unlock("other")
        assert len(img.list_lockers()) == 0
        with img.advisory_lock("c", tag="t"):
            lockers = img.list_lockers()
            assert not lockers.exclusive and lockers.tag == "t"
        img.lock_shared("c2", "t2")
        img.unlock("c2")
        with pytest.raises(rbd_core.ImageNotFound):  # no such locker: nothing is blocklisted
            img.break_lock("client.1", "c")


def test_break_advisory_lock(pool, scratch):
    """break_lock blocklists the holder (by default), so the holder is a private connection."""
    name = scratch.image(pool, features=rbd_core.FEATURE_LAYERING)
    holder_conn, breaker_conn = connect(), connect()
    held = holder_conn.open_pool("rbd").open(name)
    other = breaker_conn.open_pool("rbd").open(name)
    try:
        held.lock_exclusive("job-1")
        with pytest.raises(rbd_core.ImageBusy):  # advisory: another client cannot take it
            other.lock_exclusive("job-2")
        (holder,) = other.list_lockers().lockers
        assert holder.cookie == "job-1" and holder.addr == holder_conn.addrs()
        other.break_lock(holder.client, holder.cookie)
        assert len(other.list_lockers()) == 0
        other.lock_exclusive("job-2")
        other.unlock("job-2")
    finally:
        other.close()
        try:
            held.close()
        except rbd_core.ConnectionShutdown:
            pass  # the holder was fenced
