"""The flatten gate every recipe flattens through, and the cluster-wide flatten throttle.

>>> from rbd_core import Cluster, cinder, flatten
>>> volumes = Cluster(client_id="cinder").open_pool("volumes")  # doctest: +SKIP
>>> throttle = flatten.FlattenThrottle(volumes, slots=2, wait=600)  # doctest: +SKIP
>>> with throttle:  # every recipe's flatten in this block waits for one of 2 slots  # doctest: +SKIP
...     cinder.create_from_snapshot(volumes, "src", "s1", "new", 10 << 30, flatten=True)
>>> throttle.install()  # or for the whole process  # doctest: +SKIP
>>> with throttle.acquire(timeout=30) as slot:  # or hold a slot explicitly  # doctest: +SKIP
...     print(slot.slot, slot.image_spec)
>>> [s.holder for s in throttle.slots()]  # doctest: +SKIP
[None, None]

Recipes never flatten directly: they call the process-wide default gate, which flattens at
once unless a ``FlattenThrottle`` is installed (``with throttle:`` for a block — the previous
gate comes back at its end —, ``throttle.install()`` or ``set_default_gate(throttle)`` for
good, ``set_default_gate(None)`` to go back to direct flattens; ``default_gate()`` returns the
installed throttle or None).

A throttle bounds flattens across every process and host that uses the same pool, ``prefix``
and slot count: slots are tiny images ``<prefix>.<i>`` (default prefix ``SLOT_PREFIX``) whose
exclusive lock the holder owns while it flattens, with a heartbeat in the image metadata
(``HEARTBEAT_KEY``). A holder whose heartbeat stays unchanged for ``lease`` seconds is fenced
(blocklisted) and its slot taken over, so a crashed holder never blocks a slot for long. The
slot is taken on the flattened image's own connection, so a fenced holder's flatten stops
(ConnectionShutdown). ``wait`` bounds how long a flatten waits for a slot (Timeout after).

``flatten(image, gate=None, on_progress=None, cancel=None)`` flattens a clone through ``gate``
or the default gate. Waiting and flattening release the GIL; Ctrl-C and ``cancel`` stop both.
"""
from __future__ import annotations

from ._native import FLATTEN_HEARTBEAT_KEY as HEARTBEAT_KEY
from ._native import FLATTEN_MAX_SLOTS as MAX_SLOTS
from ._native import FLATTEN_SLOT_PREFIX as SLOT_PREFIX
from ._native import FlattenThrottle, SlotGuard, SlotState
from ._native import flatten_default_gate as default_gate
from ._native import flatten_image as flatten
from ._native import flatten_set_default_gate as set_default_gate

__all__ = [
    "HEARTBEAT_KEY", "MAX_SLOTS", "SLOT_PREFIX", "FlattenThrottle", "SlotGuard", "SlotState",
    "default_gate", "flatten", "set_default_gate",
]
