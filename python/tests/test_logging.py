"""Library events reach Python's logging under the "rbd_core" logger names, including from
librbd's threads, without deadlocks."""
import logging
import threading

import pytest

import rbd_core

pytestmark = pytest.mark.live
MiB = 1 << 20


@pytest.fixture
def debug_logs(caplog):
    caplog.set_level(logging.DEBUG, logger="rbd_core")
    rbd_core.reset_logging()  # pyo3-log caches levels: pick up the new one
    yield caplog
    caplog.set_level(logging.WARNING, logger="rbd_core")
    rbd_core.reset_logging()


def test_operations_log_under_rbd_core(pool, scratch, debug_logs):
    name = scratch.image(pool)
    with pool.open(name) as img:
        img.snap_create("s1")
    records = [r for r in debug_logs.records if name in r.getMessage()]
    loggers = {r.name for r in records}
    assert "rbd_core.pool" in loggers  # create_image span: "++ create_image; pool=rbd image=..."
    assert "rbd_core.snapshot" in loggers
    assert all(r.levelno == logging.DEBUG for r in records)
    create = next(r for r in records if r.name == "rbd_core.pool")
    assert "create_image" in create.getMessage() and "pool=rbd" in create.getMessage()
    assert not [r for r in debug_logs.records if r.name.startswith("tracing")]  # span enter/exit dropped


def test_warning_reaches_logging(pool, scratch, caplog):
    """A WARNING with the default levels (no reset needed): when the block of
    ``with exclusive_lock()`` raises and releasing the lock fails too (here: it was already
    released), the block's exception propagates and the release error is logged."""
    caplog.set_level(logging.WARNING, logger="rbd_core")
    name = scratch.image(pool)
    with pool.open(name) as img:
        with pytest.raises(RuntimeError, match="block failed"):
            with img.exclusive_lock():
                img.lock_release()
                raise RuntimeError("block failed")
    (rec,) = [r for r in caplog.records if r.name == "rbd_core.python"]
    assert rec.levelno == logging.WARNING and name in rec.getMessage() and "exclusive lock" in rec.getMessage()


def test_no_deadlock_logging_from_librbd_threads(pool, scratch, debug_logs):
    """With DEBUG enabled every operation forwards records (taking the GIL) while other
    threads run Python code and progress callbacks run on librbd threads."""
    parent = scratch.image(pool, "parent", 32 * MiB)
    with pool.open(parent) as p:
        for off in range(0, 32 * MiB, 4 * MiB):
            p.write(b"z" * 4096, off)
        p.snap_create("base")
    errors = []

    def work(i):
        try:
            child = scratch(f"child{i}")
            rbd_core.clone(pool, parent, "base", pool, child)
            with pool.open(child) as c:
                c.flatten(on_progress=lambda d, t: logging.getLogger("test").debug("progress %d/%d", d, t))
                c.snap_create("s")
                c.diff_extents()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "deadlock: worker threads did not finish"
    assert not errors
    assert sum(1 for r in debug_logs.records if r.name == "rbd_core.layering") >= 8
