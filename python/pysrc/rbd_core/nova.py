"""Nova (compute) recipes: boot an instance disk from a Glance image, snapshot an instance into
Glance, delete an instance's disks, and the resize snapshot.

>>> from rbd_core import Cluster, nova
>>> c = Cluster(client_id="cinder")  # doctest: +SKIP
>>> vms = c.open_pool("vms")  # doctest: +SKIP
>>> url = "rbd://29e2ab17-.../images/0f5e2a8b/snap"
>>> if nova.is_cloneable(c, url, "raw"):  # doctest: +SKIP
...     disk = nova.boot_disk(url, vms, "cbf44290-f142-41f8-86e1-d63c902b38ed", size=20 << 30)
>>> img = nova.snapshot_instance(vms, disk.name, "images", "6a1b6bd4-...")  # doctest: +SKIP
>>> [d.outcome for d in nova.delete_instance_disks(vms, "cbf44290-f142-41f8-86e1-d63c902b38ed")]  # doctest: +SKIP
[<DiskOutcome.Removed: 0>]

* ``is_cloneable(cluster, location, disk_format="raw")`` answers with a ``Cloneability`` (true
  with the parsed ``location``, or false with a ``reason`` (``NotCloneable``) and ``detail``).
* ``boot_disk(location, pool, instance_uuid, disk_name="disk", size=None, features=None)``:
  clone ``images/<image>@snap`` to ``<uuid>_<disk>``, grow to ``size``; a failure removes it.
* ``snapshot_instance(pool, disk, glance_pool, new_image_id, ...)``: temporary snapshot, clone,
  flatten (``on_progress``), ``snap`` protected; a failure at any step removes everything.
* ``delete_instance_disks(pool, instance_uuid, attempts=12, initial=1.0, max=5.0)``: every
  ``<uuid>_*`` image, busy ones retried with backoff (seconds); results per disk, never raises
  for one disk.
* ``resize_snapshot`` / ``revert_resize`` / ``confirm_resize``: the ``nova-resize`` snapshot.

Locations are ``glance.Location`` objects or ``rbd://`` strings. Every call releases the GIL.
"""
from __future__ import annotations

from ._native import NOVA_BOOT_STEPS as BOOT_STEPS
from ._native import NOVA_RESIZE_SNAP as RESIZE_SNAP
from ._native import NOVA_SNAPSHOT_STEPS as SNAPSHOT_STEPS
from ._native import BootedDisk, Cloneability, DiskDeletion, DiskOutcome, Location, NotCloneable, SnapshotImage
from ._native import nova_boot_disk as boot_disk
from ._native import nova_confirm_resize as confirm_resize
from ._native import nova_delete_instance_disks as delete_instance_disks
from ._native import nova_is_cloneable as is_cloneable
from ._native import nova_resize_snapshot as resize_snapshot
from ._native import nova_revert_resize as revert_resize
from ._native import nova_snapshot_instance as snapshot_instance

__all__ = [
    "BOOT_STEPS", "RESIZE_SNAP", "SNAPSHOT_STEPS", "BootedDisk", "Cloneability", "DiskDeletion",
    "DiskOutcome", "Location", "NotCloneable", "SnapshotImage", "boot_disk", "confirm_resize",
    "delete_instance_disks", "is_cloneable", "resize_snapshot", "revert_resize", "snapshot_instance",
]
