"""Cinder's RBD volume driver as undoable recipes: volumes (blank, from a snapshot, from a Glance
image, from another volume), snapshots, delete, extend, revert, manage, and pool capacity.

>>> from rbd_core import Cluster, cinder
>>> volumes = Cluster(client_id="cinder").open_pool("volumes")  # doctest: +SKIP
>>> cinder.create(volumes, "1111", 1 << 30)  # doctest: +SKIP
Volume(pool="volumes", name="volume-1111", size=1073741824, parent=None, depth=0, flattened=False)
>>> v = cinder.create_from_volume(volumes, "1111", "2222", 2 << 30, max_clone_depth=5)  # doctest: +SKIP
>>> v.parent  # doctest: +SKIP
'volumes/volume-1111@volume-2222.clone_snap'
>>> cinder.delete_volume(volumes, "1111").outcome  # doctest: +SKIP
<VolumeDeleteOutcome.Removed: 0>

Names are Cinder's: ``volume-<id>``, ``snapshot-<id>``, ``volume-<dst>.clone_snap`` on the
source of a volume-to-volume clone, ``volume-<id>.deleted`` for a deleted volume kept for its
clones. Keyword arguments are named like the Rust builder setters: ``flatten``,
``clone_format`` (1 or 2; default 2), ``max_clone_depth``, ``depth_rule`` (``DepthRule``),
``on_children`` (``ChildrenPolicy``), ``keep_children_as_clones``, ``trash_delay`` and
``first_wait`` (seconds), ``busy_retries``. Calls that may flatten or copy take
``on_progress``/``cancel``. A failed step raises the error kind's class, also a
``rbd_core.StepFailed`` with ``.recipe`` (``"cinder.create_from_volume"``, ...) and ``.step``,
after the completed steps were undone. Every call releases the GIL.
"""
from __future__ import annotations

from ._native import ChildrenPolicy, DepthRule, PoolCapacity, SnapshotDeletion, Volume, VolumeDeletion
from ._native import VolumeDeleteOutcome as DeleteOutcome
from ._native import VolumeSnapshot
from ._native import cinder_clone_depth as clone_depth
from ._native import cinder_clone_snap_name as clone_snap_name
from ._native import cinder_create as create
from ._native import cinder_create_from_image as create_from_image
from ._native import cinder_create_from_snapshot as create_from_snapshot
from ._native import cinder_create_from_volume as create_from_volume
from ._native import cinder_create_snapshot as create_snapshot
from ._native import cinder_delete_snapshot as delete_snapshot
from ._native import cinder_delete_volume as delete_volume
from ._native import cinder_extend as extend
from ._native import cinder_is_backup_snap as is_backup_snap
from ._native import cinder_manage_existing as manage_existing
from ._native import cinder_pool_capacity as pool_capacity
from ._native import cinder_revert_to_snapshot as revert_to_snapshot
from ._native import cinder_snapshot_name as snapshot_name
from ._native import cinder_volume_info as volume_info
from ._native import cinder_volume_name as volume_name

__all__ = [
    "ChildrenPolicy", "DeleteOutcome", "DepthRule", "PoolCapacity", "SnapshotDeletion", "Volume",
    "VolumeDeletion", "VolumeSnapshot", "clone_depth", "clone_snap_name", "create",
    "create_from_image", "create_from_snapshot", "create_from_volume", "create_snapshot",
    "delete_snapshot", "delete_volume", "extend", "is_backup_snap", "manage_existing",
    "pool_capacity", "revert_to_snapshot", "snapshot_name", "volume_info", "volume_name",
]
