"""rbd_core.flatten against the live cluster: the cluster-wide throttle's slots are exclusive
across connections and visible; a flatten through a slot keeps the data; ``with throttle:``
makes the Cinder recipes flatten through it (a recipe that cannot get a slot in time undoes its
clone); two Python threads flattening at once overlap (the GIL is released)."""
import os
import threading
import time

import pytest

import rbd_core
from rbd_core import cinder, flatten
from conftest import ceph_conf, unique
from recipe_helpers import MiB, names, pattern, read_all, sha  # noqa: F401 - fixture

pytestmark = pytest.mark.live
CLIENT = os.environ.get("RBD_TEST_CLIENT_ID", "admin")


@pytest.fixture
def other(cluster):
    """A second connection of the same client: another holder as far as slots go."""
    return rbd_core.Cluster(conffile=ceph_conf(), client_id=CLIENT, shared=False, conf={"rbd_cache": "true"})


@pytest.fixture
def throttle(pool, scratch):
    t = flatten.FlattenThrottle(pool, 1, prefix=scratch("slot"), wait=30.0, label="pytest")
    yield t
    t.remove_slots()


def parent_with_clone(pool, scratch, size=32 * MiB, tag="p"):
    parent = scratch.image(pool, tag, size)
    with pool.open(parent) as p:
        p.write(pattern(7, size), 0)
        p.snap_create("base")
    child = scratch(f"{tag}-child")
    rbd_core.clone(pool, parent, "base", pool, child)
    return parent, child


def test_slots_are_exclusive_and_visible(pool, other, throttle):
    assert (throttle.slot_count, throttle.pool_name, throttle.slot_image(0)) == (1, "rbd", f"{throttle.prefix}.0")
    assert [(s.slot, s.exists, s.held) for s in throttle.slots()] == [(0, False, False)]
    with throttle.acquire(timeout=10) as slot:
        assert (slot.slot, slot.image_spec, slot.lost, slot.released) == (0, f"rbd/{throttle.prefix}.0", False, False)
        st = throttle.slots()[0]
        assert st.exists and st.owner == slot.owner and st.holder.endswith(":pytest") and st.since is not None
        # Another connection cannot take it: no slot without waiting, Timeout with a short wait.
        t2 = flatten.FlattenThrottle(other.open_pool("rbd"), 1, prefix=throttle.prefix)
        assert t2.try_acquire() is None
        t0 = time.monotonic()
        with pytest.raises(rbd_core.Timeout):
            t2.acquire(timeout=0.5)
        assert time.monotonic() - t0 < 5
        with pytest.raises(rbd_core.ImageBusy):
            throttle.remove_slots()
    assert slot.released and not throttle.slots()[0].held
    g = t2.try_acquire()
    assert g is not None
    g.release()
    g.release()  # idempotent
    with pytest.raises(rbd_core.InvalidArgument):
        flatten.FlattenThrottle(pool, 0)
    with pytest.raises(rbd_core.InvalidArgument):
        flatten.FlattenThrottle(pool, 1, prefix=throttle.prefix, lease=2, heartbeat=1).acquire(timeout=1)


def test_flatten_through_a_slot_keeps_the_data(pool, scratch, throttle):
    parent, child = parent_with_clone(pool, scratch)
    want = sha(read_all(pool, parent, "base"))
    plain = scratch.image(pool, "plain", MiB)
    with pool.open(plain) as img:
        with pytest.raises(rbd_core.InvalidArgument):
            throttle.flatten(img)  # not a clone: refused before waiting
    calls = []
    with pool.open(child) as img:
        throttle.flatten(img, on_progress=lambda d, t: calls.append(d))
        assert img.parent() is None
    assert calls and sha(read_all(pool, child)) == want
    assert not throttle.slots()[0].held, "released after the flatten"


def test_installed_gate_bounds_cinder_flattens_and_undoes(cluster, other, throttle, names):
    vols = cluster.open_pool("volumes")
    prefix = unique("fl")
    names.add("volumes", f"volume-{prefix}")
    src, new = f"{prefix}-src", f"{prefix}-new"
    cinder.create(vols, src, 16 * MiB)
    with vols.open(f"volume-{src}") as img:
        img.write(pattern(3, 16 * MiB), 0)
    cinder.create_snapshot(vols, src, "s1")
    assert flatten.default_gate() is None

    # The only slot is held elsewhere: inside `with`, the recipe's flatten waits 0.3 s, times
    # out, and the recipe removes its clone again.
    short = flatten.FlattenThrottle(throttle_pool(cluster), 1, prefix=throttle.prefix, wait=0.3)
    held = flatten.FlattenThrottle(other.open_pool("rbd"), 1, prefix=throttle.prefix).acquire(timeout=10)
    try:
        with short:
            assert flatten.default_gate() is short
            with pytest.raises(rbd_core.Timeout) as ei:
                cinder.create_from_snapshot(vols, src, "s1", new, 16 * MiB, flatten=True)
            assert isinstance(ei.value, rbd_core.StepFailed) and ei.value.step == "flatten"
        assert flatten.default_gate() is None, "the previous gate is back"
        assert not vols.image_exists(f"volume-{new}")
    finally:
        held.release()

    # Installed for good: the recipe flattens through a slot and the data is the snapshot's.
    throttle.install()
    try:
        assert flatten.default_gate() is throttle
        v = cinder.create_from_snapshot(vols, src, "s1", new, 16 * MiB, flatten=True)
        assert (v.parent, v.flattened) == (None, True)
        assert sha(read_all(vols, v.name)) == sha(read_all(vols, f"volume-{src}", "snapshot-s1"))
        assert not throttle.slots()[0].held
    finally:
        flatten.set_default_gate(None)
    assert flatten.default_gate() is None
    cinder.delete_volume(vols, new)
    cinder.delete_snapshot(vols, src, "s1")


def throttle_pool(cluster):
    return cluster.open_pool("rbd")


# Every OSD reply is delayed (client side only) and flattens copy one object at a time, so a
# flatten waits for the network rather than the CPU: the ratio measures the overlap.
SLOW = {"ms_inject_delay_type": "osd", "ms_inject_delay_max": "0.03", "ms_inject_delay_probability": "1",
        "rbd_concurrent_management_ops": "1"}


def test_two_threads_flattening_at_once_overlap(pool, scratch):
    slow = rbd_core.Cluster(conffile=ceph_conf(), client_id=CLIENT, shared=False, conf=SLOW).open_pool("rbd")
    parent = scratch.image(pool, "gp", 64 * MiB)
    with pool.open(parent) as p:
        chunk = os.urandom(4 * MiB)
        for off in range(0, 64 * MiB, 4 * MiB):
            p.write(chunk, off)
        p.snap_create("base")
    clones = [scratch(f"gc{i}") for i in range(3)]
    for c in clones:
        rbd_core.clone(pool, parent, "base", pool, c)

    def flat(name):
        with slow.open(name) as img:
            flatten.flatten(img)

    t = time.monotonic()
    flat(clones[0])
    one = time.monotonic() - t
    errors = []

    def worker(name):
        try:
            flat(name)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(c,)) for c in clones[1:]]
    t = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    two = time.monotonic() - t
    print(f"\n64 MiB flatten (delayed OSD replies): one {one:.2f}s, two threads {two:.2f}s, ratio {two / one:.2f}")
    assert not errors, errors
    for c in clones:
        with pool.open(c) as img:
            assert img.parent() is None
    assert one >= 0.5, "too fast to measure anything"
    assert two < 1.6 * one, f"two concurrent flattens took {two / one:.2f}x one: the GIL serialises them"
