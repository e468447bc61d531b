"""The GIL is released around every blocking call: two threads doing ~1 s of blocking work each
finish in clearly less than twice the time of one (a call holding the GIL would serialise
them: 2x). Progress callbacks take the GIL back only while they run.

Timings are printed (``pytest -s``); each measurement is the best of a few attempts because
the machine is shared with other test runs.
"""
import os
import threading
import time

import pytest

import rbd_core
from conftest import ceph_conf

pytestmark = pytest.mark.live
MiB = 1 << 20


def best_of(n, fn):
    return min(fn() for _ in range(n))


def timed(fn):
    def run():
        t = time.monotonic()
        fn()
        return time.monotonic() - t
    return run


def in_threads(fn, n=2):
    def run():
        errors = []

        def wrap():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        ts = [threading.Thread(target=wrap) for _ in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors, errors
    return run


def test_two_blocking_connects_overlap():
    """A connect that waits ~1 s for an unreachable monitor: pure waiting, no CPU."""
    def connect():
        with pytest.raises(rbd_core.Timeout):
            rbd_core.Cluster(conffile=ceph_conf(), conf={"mon_host": "127.0.0.1:9"}, timeout=1)

    one = best_of(2, timed(connect))
    two = best_of(2, timed(in_threads(connect)))
    print(f"\nconnect timeout: one thread {one:.2f}s, two threads {two:.2f}s, ratio {two / one:.2f}")
    assert one >= 0.9
    assert two < 1.5 * one


def test_two_image_writers_overlap(pool, scratch):
    """Two threads each write 256 MiB in 4 MiB Image.write calls to their own image.

    The connection delays every OSD reply (``ms_inject_delay_*``, client-side only): each write
    then waits ~15 ms for the network, not for the CPU, so the machine's load (the OSD shares
    two cores with other test runs) does not blur the result. If a write held the GIL, the two
    threads' waits would add up (2x); released, they overlap (1x). A throttle such as librbd
    QoS would not do: its token buckets refill while a thread waits for the GIL.
    """
    names = [scratch.image(pool, f"w{i}", 256 * MiB) for i in range(2)]
    chunk = os.urandom(4 * MiB)

    def writer(img):
        for off in range(0, 256 * MiB, 4 * MiB):
            img.write(chunk, off)

    for n in names:  # allocate the objects first (undelayed), so every pass costs the same
        with pool.open(n) as img:
            writer(img)
    slow = rbd_core.Cluster(conffile=ceph_conf(), shared=False, conf={
        "ms_inject_delay_type": "osd", "ms_inject_delay_max": "0.03", "ms_inject_delay_probability": "1"})
    handles = [slow.open_pool("rbd").open(n) for n in names]
    try:

        def two_threads():
            ts = [threading.Thread(target=writer, args=(h,)) for h in handles]
            t = time.monotonic()
            for th in ts:
                th.start()
            for th in ts:
                th.join()
            return time.monotonic() - t

        one = best_of(2, timed(lambda: writer(handles[0])))
        two = best_of(2, two_threads)
        print(f"\n256 MiB in 4 MiB writes: one thread {one:.2f}s, two threads {two:.2f}s, ratio {two / one:.2f}")
        assert one >= 0.8
        assert two < 1.5 * one
    finally:
        for h in handles:
            h.close()


def test_progress_callbacks_do_not_starve_other_threads(pool, scratch):
    """A flatten whose Python callback runs per object, in a worker thread, while the main
    thread keeps running Python code: the main thread is never blocked for long."""
    parent = scratch.image(pool, "parent", 256 * MiB)
    with pool.open(parent) as p:
        chunk = os.urandom(4 * MiB)
        for off in range(0, 256 * MiB, 4 * MiB):
            p.write(chunk, off)
        p.snap_create("base")
    child = scratch("child")
    rbd_core.clone(pool, parent, "base", pool, child)
    calls = []
    done = threading.Event()

    def flatten():
        with pool.open(child) as c:
            c.flatten(on_progress=lambda d, t: calls.append(d))
        done.set()

    worker = threading.Thread(target=flatten)
    ticks = []
    start = time.monotonic()
    worker.start()
    while not done.is_set():
        ticks.append(time.monotonic())
        sum(range(1000))  # pure Python work needing the GIL
    worker.join()
    elapsed = time.monotonic() - start
    gaps = [b - a for a, b in zip(ticks, ticks[1:])] or [elapsed]
    print(f"\nflatten {elapsed:.2f}s, {len(calls)} callbacks, {len(ticks)} main-thread ticks, "
          f"longest main-thread stall {max(gaps) * 1000:.1f} ms")
    assert len(calls) == 64
    assert len(ticks) > 100
    assert max(gaps) < max(0.1, elapsed / 4)
