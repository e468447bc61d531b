"""Cinder consistency groups on native RBD groups: a set of volumes snapshotted together in one
crash-consistent operation, restorable into new volumes.

>>> from rbd_core import Cluster, groups
>>> volumes = Cluster(client_id="cinder").open_pool("volumes")  # doctest: +SKIP
>>> cgs = groups.ConsistencyGroups(volumes)  # doctest: +SKIP
>>> cgs.create("cg-1", name="db", volume_types=["ssd"])  # doctest: +SKIP
>>> cgs.add_volumes("cg-1", ["vol-a", "vol-b"]).volumes  # volume-vol-a, volume-vol-b  # doctest: +SKIP
['vol-a', 'vol-b']
>>> snap = cgs.create_snapshot("cg-1", "cgsnap-1", name="nightly")  # doctest: +SKIP
>>> r = cgs.restore("cg-1", "cgsnap-1", prefix="copy",  # doctest: +SKIP
...                 into_group=("cg-2", groups.GroupSpec("db copy", ["ssd"])))
>>> [v.volume_id for v in r.volumes], r.group_id  # doctest: +SKIP
(['copy-vol-a', 'copy-vol-b'], 'cg-2')
>>> cgs.delete("cg-1", force=True)  # doctest: +SKIP

Names: group ``<id>`` is the RBD group ``group-<id>`` in the pool of its volumes
``volume-<volume id>``; group snapshot ``<snap id>`` is the RBD group snapshot
``group-snapshot-<snap id>``; Cinder's fields (name, description, volume types, snapshot names)
live in the RADOS object ``rbd_core.cg.<id>``. Membership and snapshots are always read from
RBD.

Recipes (failpoints ``groups.<recipe>.<step>``): ``create`` (``CREATE_STEPS``),
``add_volumes``/``remove_volumes`` (refused with ImageBusy "... still has dependent
cgsnapshots." while the group has snapshots), ``create_snapshot`` (one librbd group snapshot: a
write barrier across members), ``delete_snapshot``, ``delete`` (``force`` removes snapshots;
volumes stay), ``restore`` (a copy of each member at the snapshot; Pacific cannot clone from a
group snapshot). Each undoes its completed steps on failure. A missing group raises
``ObjectNotFound`` (an ``ImageNotFound``). Every call releases the GIL.
"""
from __future__ import annotations

from ._native import GROUPS_ADD_STEPS as ADD_STEPS
from ._native import GROUPS_CREATE_STEPS as CREATE_STEPS
from ._native import GROUPS_DELETE_SNAPSHOT_STEPS as DELETE_SNAPSHOT_STEPS
from ._native import GROUPS_DELETE_STEPS as DELETE_STEPS
from ._native import GROUPS_REMOVE_STEPS as REMOVE_STEPS
from ._native import GROUPS_RESTORE_STEPS as RESTORE_STEPS
from ._native import GROUPS_SNAPSHOT_STEPS as SNAPSHOT_STEPS
from ._native import (
    ConsistencyGroup,
    ConsistencyGroups,
    GroupSnapshot,
    GroupSpec,
    MemberSnapshot,
    RestoredGroup,
    RestoredVolume,
)
from ._native import groups_rbd_group_name as rbd_group_name
from ._native import groups_rbd_snap_name as rbd_snap_name

__all__ = [
    "ADD_STEPS", "CREATE_STEPS", "DELETE_SNAPSHOT_STEPS", "DELETE_STEPS", "REMOVE_STEPS",
    "RESTORE_STEPS", "SNAPSHOT_STEPS", "ConsistencyGroup", "ConsistencyGroups", "GroupSnapshot",
    "GroupSpec", "MemberSnapshot", "RestoredGroup", "RestoredVolume", "rbd_group_name",
    "rbd_snap_name",
]
