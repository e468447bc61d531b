"""Incremental backups of RBD volumes into a backup pool (on this or another cluster), in the
layout of Cinder's Ceph backup driver: either side can restore or delete the other's backups.

>>> from rbd_core import Cluster, backup
>>> volumes = Cluster(client_id="cinder").open_pool("volumes")  # doctest: +SKIP
>>> backups = Cluster(conffile="/etc/ceph/backup.conf", client_id="cinder-backup").open_pool("backups")  # doctest: +SKIP
>>> full = backup.create(volumes, "0f5e2a8b", backups, "b1")  # doctest: +SKIP
>>> full.kind.name, full.image  # doctest: +SKIP
('full', 'volume-0f5e2a8b.backup.b1')
>>> incr = backup.create(volumes, "0f5e2a8b", backups, "b2", parent="b1", keep_source_snapshots=2)  # doctest: +SKIP
>>> [b.backup_id for b in backup.list_backups(backups, "0f5e2a8b")]  # doctest: +SKIP
['b1', 'b2']
>>> backup.restore(backups, "0f5e2a8b", "b2", volumes, "new-volume-id").kind.name  # doctest: +SKIP
'diff'
>>> backup.verify(backups, "0f5e2a8b", "b2", volumes).matches  # doctest: +SKIP
True
>>> backup.delete_backup(backups, "0f5e2a8b", "b2", source=volumes).image_removed  # doctest: +SKIP
False

Names (Cinder's): the source volume is ``volume-<volume_id>`` (``image=`` names another image);
a full backup creates ``volume-<vid>.backup.<bid>`` in the backup pool; an incremental one goes
onto its parent's backup image. The backup snapshot ``backup.<bid>.snap.<unix time>`` exists on
the source and on the backup image; ``backup.<bid>.meta`` holds the metadata JSON.

* ``create(volumes, volume_id, backups, backup_id, parent=None, image=None,
  keep_source_snapshots=None, in_flight=16, features=None, volume_metadata=None, on_progress=None,
  cancel=None)`` → ``BackupResult`` (``kind``: ``BackupKind`` with ``name`` ``full`` /
  ``incremental`` / ``full-forced``). Steps ``CREATE_STEPS``; any failure or cancel undoes
  everything (failpoints ``backup.create.<step>``).
* ``restore(backups, volume_id, backup_id, target_pool, target_volume_id, target_image=None,
  size=None, create_missing=True, ...)`` → ``RestoreResult`` (``kind.name``: ``diff``,
  ``rollback``, ``rollback-diff`` or ``full``).
* ``list_backups(backups, volume_id)`` → ``[BackupInfo]``, oldest first.
* ``delete_backup(backups, volume_id, backup_id, source=None, source_image=None)`` →
  ``DeleteResult``; ImageBusy while a newer incremental depends on it.
* ``verify(backups, volume_id, backup_id, source, source_image=None, ...)`` → ``VerifyResult``.
* ``trim_source_snapshots(volumes, volume_id, keep, image=None)`` → ``TrimReport``.

A failed step raises the kind's class, also a ``rbd_core.StepFailed`` with ``.recipe``
(``"backup.create"``, ...) and ``.step``. Data moves in process (no ``rbd export-diff |
import-diff`` pipe) with the GIL released; ``on_progress(done, total)`` and ``cancel`` work as
for the core calls.
"""
from __future__ import annotations

from ._native import BACKUP_CREATE_STEPS as CREATE_STEPS
from ._native import BACKUP_DELETE_STEPS as DELETE_STEPS
from ._native import BACKUP_IMAGE_FEATURES as IMAGE_FEATURES
from ._native import BACKUP_RESTORE_STEPS as RESTORE_STEPS
from ._native import BackupDeletion as DeleteResult
from ._native import BackupInfo, BackupKind, BackupResult, BackupSnapName
from ._native import BackupRestore as RestoreResult
from ._native import BackupRestoreKind as RestoreKind
from ._native import BackupTrimReport as TrimReport
from ._native import BackupVerification as VerifyResult
from ._native import backup_create as create
from ._native import backup_delete as delete_backup
from ._native import backup_image_name as image_name
from ._native import backup_list as list_backups
from ._native import backup_meta_object_name as meta_object_name
from ._native import backup_parse_snap_name as parse_snap_name
from ._native import backup_restore as restore
from ._native import backup_trim_source_snapshots as trim_source_snapshots
from ._native import backup_verify as verify

__all__ = [
    "CREATE_STEPS", "DELETE_STEPS", "IMAGE_FEATURES", "RESTORE_STEPS", "BackupInfo", "BackupKind",
    "BackupResult", "BackupSnapName", "DeleteResult", "RestoreKind", "RestoreResult", "TrimReport",
    "VerifyResult", "create", "delete_backup", "image_name", "list_backups", "meta_object_name",
    "parse_snap_name", "restore", "trim_source_snapshots", "verify",
]
