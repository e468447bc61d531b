"""Find — and unless it is a dry run, remove — what crashed recipes left behind.

>>> from rbd_core import Cluster, reconcile
>>> c = Cluster()  # doctest: +SKIP
>>> pools = [c.open_pool(p) for p in ("images", "volumes", "vms")]  # doctest: +SKIP
>>> plan = reconcile.run(pools, backup_target=c.open_pool("backups"))  # a dry run  # doctest: +SKIP
>>> for f in plan.findings:  # doctest: +SKIP
...     print(f.kind.label, f.spec, f.reason)
>>> done = reconcile.run(pools, backup_target=c.open_pool("backups"), dry_run=False)  # doctest: +SKIP
>>> done.removed, done.failed  # doctest: +SKIP
(3, 0)

Reconcile trusts only proof: a provenance marker, or a name only a recipe (or the OpenStack
service it mirrors) creates, plus the absence of anything that still depends on the artifact
(clone children, watchers, backup counterparts). What it cannot prove an orphan is left alone
and listed in ``skipped`` with the reason. One ``FindingKind`` per rule: half-made images
(marker older than ``min_age``), Nova's uuid4-hex temporary snapshots, childless
``.clone_snap`` snapshots, childless ``volume-<id>.deleted`` images, Cinder delete-journal
entries, orphaned ``backup.<bid>.snap.<t>`` source snapshots, snapshot-less backup images and
orphaned ``backup.<bid>.meta`` objects (with ``backup_target``), and stale flatten-slot locks.

``run(pools, backup_target=None, min_age=600.0, dry_run=True, slot_lease=10.0, prefix=None,
filter=None)`` → ``ReconcileReport`` (``findings`` in removal order, each with ``action``
``"planned"``/``"removed"``/``"failed"``; ``skipped``; ``notes``; ``removed``/``failed``
counts). A dry run lists exactly what an apply would remove. ``prefix``/``filter`` (a callable
name → bool) restrict which names are considered. The GIL is released during the run.
"""
from __future__ import annotations

from ._native import RECONCILE_DEFAULT_MIN_AGE as DEFAULT_MIN_AGE
from ._native import Finding, FindingKind, ReconcileReport, Skipped
from ._native import reconcile_run as run

__all__ = ["DEFAULT_MIN_AGE", "Finding", "FindingKind", "ReconcileReport", "Skipped", "run"]
