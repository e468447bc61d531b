"""rbd_core.placement against the live cluster: three pools created for the test with byte
quotas of 64, 256 and 128 MiB; stats follow Cinder's quota-aware formula; the weigher spreads
(most free first) or stacks; the capabilities filter uses Cinder's operators; a backend where
creation fails (a name clash, a Python ``create`` that raises) is left as it was and the next one
is used; a KeyboardInterrupt in ``create`` stops the placement; "no valid backend" is NoSpace
naming every backend."""
import json
import time

import pytest

import rbd_core
from rbd_core import cinder, placement
from conftest import unique

pytestmark = pytest.mark.live
MiB = 1 << 20
QUOTAS = (64 * MiB, 256 * MiB, 128 * MiB)
LABELS = ("small", "large", "medium")


def mon(cluster, **cmd) -> bytes:
    out, _ = cluster.mon_command(json.dumps(cmd))
    return out


@pytest.fixture(scope="module")
def pools(cluster):
    made = []
    try:
        for i, q in enumerate(QUOTAS):
            name = unique(f"pl{i}")
            mon(cluster, prefix="osd pool create", pool=name, pg_num=8)
            made.append(name)
            mon(cluster, prefix="osd pool application enable", pool=name, app="rbd")
            mon(cluster, prefix="osd pool set-quota", pool=name, field="max_bytes", val=str(q))
        # `df` comes from the mgr's PG map, which lists a new pool a moment later.
        deadline = time.monotonic() + 60
        while True:
            df = json.loads(mon(cluster, prefix="df", format="json"))
            if set(made) <= {p["name"] for p in df["pools"]}:
                break
            assert time.monotonic() < deadline, "new pools never appeared in df"
            time.sleep(0.2)
        yield made
    finally:
        for name in made:
            mon(cluster, prefix="osd pool delete", pool=name, pool2=name, yes_i_really_really_mean_it=True)


@pytest.fixture
def backends(cluster, pools):
    return [placement.Backend(label, cluster, pool, capabilities={"storage_protocol": "ceph", "tier": label})
            for label, pool in zip(LABELS, pools)]


def test_stats_weigher_filters_and_retries(cluster, pools, backends):
    for b, q in zip(backends, QUOTAS):
        s = placement.gather_stats(b)
        assert (s.name, s.quota_bytes, s.provisioned_bytes) == (b.name, q, 0)
        assert s.free_bytes <= q and s.total_bytes == s.free_bytes + s.used_bytes
    assert backends[0].capabilities == {"storage_protocol": "ceph", "tier": "small"}

    sch = placement.Scheduler().plan(backends, 8 * MiB)
    assert [w.name for w in sch.order] == ["large", "medium", "small"] and sch.rejected == []
    assert sch.order[0].weight == 1.0

    # Spread (default): most free first.
    v1 = unique("plv")
    p = placement.place_and_create(backends, v1, 8 * MiB)
    assert (p.backend, p.pool, p.image, p.value, p.failed, p.rejected) == ("large", pools[1], f"volume-{v1}", None, [], [])
    large = cluster.open_pool(pools[1])
    with large.open(p.image) as img:
        assert img.size() == 8 * MiB
    assert placement.gather_stats(backends[1]).provisioned_bytes == 8 * MiB
    # Stack: least free first.
    p = placement.Scheduler(weight_multiplier=-1.0).place_and_create(backends, unique("plv"), 8 * MiB)
    assert p.backend == "small" and cluster.open_pool(pools[0]).image_exists(p.image)
    # Capabilities with Cinder's operators.
    picky = placement.Scheduler(require={"capabilities:tier": "<or> medium <or> nvme", "storage_protocol": "ceph"})
    p = picky.place_and_create(backends, unique("plv"), MiB)
    assert p.backend == "medium" and len(p.rejected) == 2
    assert all("capability tier" in r.reason for r in p.rejected), p.rejected

    # A name clash on the best backend: that attempt fails, the clash is left alone, the next
    # backend takes the volume.
    v3 = unique("plv")
    large.create_image(f"volume-{v3}", 3 * MiB)
    p = placement.place_and_create(backends, v3, 4 * MiB)
    assert p.backend == "medium"
    assert [(f.backend, f.kind) for f in p.failed] == [("large", "Exists")]
    with large.open(f"volume-{v3}") as img:
        assert img.size() == 3 * MiB

    # A Python create: its value is returned; an exception moves on; a recipe as the create.
    seen = []

    def create(backend, pool, image, size):
        seen.append((backend.name, pool.name if hasattr(pool, "name") else None, image, size))
        if backend.name == "large":
            raise RuntimeError("backend down")
        return cinder.create(pool, image[len("volume-"):], size)

    v4 = unique("plv")
    p = placement.place_and_create(backends, v4, 2 * MiB, create=create)
    assert p.backend == "medium" and isinstance(p.value, cinder.Volume) and p.value.size == 2 * MiB
    assert [(f.backend, f.kind) for f in p.failed] == [("large", "Other")]
    assert "RuntimeError: backend down" in p.failed[0].error
    assert [s[0] for s in seen] == ["large", "medium"] and seen[0][2:] == (f"volume-{v4}", 2 * MiB)
    assert not large.image_exists(f"volume-{v4}")

    def interrupted(backend, pool, image, size):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        placement.place_and_create(backends, unique("plv"), MiB, create=interrupted)

    # No retry with max_attempts=1.
    v5 = unique("plv")
    large.create_image(f"volume-{v5}", MiB)
    with pytest.raises(rbd_core.NoSpace, match="max attempts 1") as ei:
        placement.Scheduler(max_attempts=1).place_and_create(backends, v5, MiB)
    assert "large: creation failed" in str(ei.value)

    # No valid backend: too big for every pool judged thick; thin over-subscription fits.
    with pytest.raises(rbd_core.NoSpace) as ei:
        placement.Scheduler(thick=True).place_and_create(backends, unique("plv"), 512 * MiB)
    for label in LABELS:
        assert f"{label}: insufficient free space" in str(ei.value)
    assert placement.place_and_create(backends, unique("plv"), 512 * MiB).backend == "large"
    with pytest.raises(rbd_core.InvalidArgument):
        placement.place_and_create(backends, "a/b", MiB)
