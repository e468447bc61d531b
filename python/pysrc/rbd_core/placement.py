"""Where a new volume goes: Cinder's scheduler over RBD pools — filter backends by free capacity
and capabilities, weigh by free space, try them in order with retries.

>>> from rbd_core import Cluster, placement
>>> c = Cluster(client_id="cinder")  # doctest: +SKIP
>>> fast = placement.Backend("ceph@ssd", c, "volumes", capabilities={"tier": "ssd"}, reserved_percentage=10)  # doctest: +SKIP
>>> slow = placement.Backend("ceph@hdd", c, "vms", capabilities={"tier": "hdd"})  # doctest: +SKIP
>>> sched = placement.Scheduler(max_attempts=3, require={"tier": "<or> ssd <or> hdd"})  # doctest: +SKIP
>>> placed = sched.place_and_create([fast, slow], "vol-1", 10 << 30)  # doctest: +SKIP
>>> placed.backend, placed.pool, placed.image, placed.failed  # doctest: +SKIP
('ceph@ssd', 'volumes', 'volume-vol-1', [])

* ``gather_stats(backend)`` → ``BackendStats``: Cinder's RBD driver figures (``df`` ``stored``
  and ``max_avail``, the pool quota: ``free = min(quota - used, max_avail)``, ``total = free +
  used``; provisioned = the sum of image sizes unless stated).
* ``Scheduler(weight_multiplier=1.0, max_attempts=3, require=None, thick=False)``: Cinder's
  CapacityFilter (reserved space, over-subscription ratio, thin/thick), CapabilitiesFilter
  (with Cinder's operators), CapacityWeigher (positive multiplier spreads, negative stacks).
  ``plan(backends, size)`` → ``Schedule`` (``order`` best first, ``rejected`` with reasons).
* ``Scheduler.place_and_create(backends, volume_id, size, create=None, order=None,
  features=None)`` → ``Placed``: creates ``volume-<volume_id>`` on the best backend, then the
  next ones when creation fails (``failed`` lists them). ``create(backend, pool, image, size)``
  replaces the default image creation; whatever it returns is ``Placed.value``, and it must
  leave nothing behind when it raises (an exception's ``errno`` gives the attempt's ``kind``).
  ``NoSpace`` ("No valid backend was found ...", naming each backend and why) when nothing
  worked. ``place_and_create(...)`` uses a default scheduler.

Stats and creation release the GIL; a ``create`` callable takes it back for its call only.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from ._native import Backend, BackendStats, FailedAttempt, Placed, Rejected, Schedule, Scheduler, Weighed
from ._native import Pool as _Pool
from ._native import placement_gather_stats as gather_stats


def place_and_create(
    backends: Sequence[Backend],
    volume_id: str,
    size: int,
    create: Callable[[Backend, _Pool, str, int], Any] | None = None,
    order: int | None = None,
    features: int | None = None,
) -> Placed:
    """``Scheduler().place_and_create(...)``: spread over backends, 3 attempts."""
    return Scheduler().place_and_create(list(backends), volume_id, size, create, order, features)


__all__ = [
    "Backend", "BackendStats", "FailedAttempt", "Placed", "Rejected", "Schedule", "Scheduler",
    "Weighed", "gather_stats", "place_and_create",
]
