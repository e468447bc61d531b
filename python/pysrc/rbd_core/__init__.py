"""rbd_core: the Ceph RBD lifecycle library from Python.

>>> import rbd_core
>>> with rbd_core.Cluster(conffile="/etc/ceph/ceph.conf", client_id="admin") as c:  # doctest: +SKIP
...     pool = c.open_pool("volumes")
...     pool.create_image("vol-1", 1 << 30)
...     with pool.open("vol-1") as img:
...         img.write(b"hello", 0)
...         img.snap_create("base")
...         rbd_core.clone(pool, "vol-1", "base", pool, "vol-2")
...     with pool.open("vol-2") as child:
...         child.flatten(on_progress=lambda done, total: print(done, total))

The API is typed (``SnapInfo``, ``ParentInfo``, ``DiffExtent``, ...), releases the GIL around
every librbd/librados call, and raises python-rbd's exception classes (``rbd_core.errors``).
``rbd_core.compat`` offers ``rados`` and ``rbd`` modules with python-rbd's interface.

Logging: library events go to the ``rbd_core.*`` loggers of the ``logging`` module (DEBUG
records name each operation with its pool/image/snapshot). Logger levels are cached on first
use; call ``rbd_core.reset_logging()`` after changing them at run time.
"""
from __future__ import annotations

from . import backup, cinder, diff, errors, flatten, glance, groups, nova, placement, reconcile  # noqa: F401 - recipe and diff-engine submodules
from ._native import (
    AdvisoryLock,
    CancelToken,
    ChildInfo,
    Cluster,
    ClusterStats,
    ConfigOption,
    ConfigSource,
    DiffExtent,
    ExclusiveLock,
    Group,
    GroupImage,
    GroupImageState,
    GroupRef,
    GroupSnap,
    GroupSnapRef,
    GroupSnapState,
    Image,
    ImageInfo,
    ImageSpec,
    Locker,
    Lockers,
    LockMode,
    LockOwner,
    ObjectStat,
    ParentInfo,
    Pool,
    PoolStats,
    QosLimits,
    SnapInfo,
    SnapNamespace,
    TrashEntry,
    TrashSource,
    Watcher,
    clone,
    librbd_version,
    reset_logging,
)
from .errors import *  # noqa: F401,F403

#: Feature bits (``RBD_FEATURE_*``).
FEATURE_LAYERING = 1
FEATURE_STRIPINGV2 = 2
FEATURE_EXCLUSIVE_LOCK = 4
FEATURE_OBJECT_MAP = 8
FEATURE_FAST_DIFF = 16
FEATURE_DEEP_FLATTEN = 32
FEATURE_JOURNALING = 64
FEATURE_DATA_POOL = 128
FEATURE_OPERATIONS = 256
FEATURE_MIGRATING = 512
FEATURE_NON_PRIMARY = 1024

#: ``Image.snap_create(flags=...)`` / ``Group.snap_create(flags=...)`` bits.
SNAP_CREATE_SKIP_QUIESCE = 1
SNAP_CREATE_IGNORE_QUIESCE_ERROR = 2
#: ``Image.snap_remove(flags=...)`` bits.
SNAP_REMOVE_UNPROTECT = 1
SNAP_REMOVE_FLATTEN = 2
SNAP_REMOVE_FORCE = 3

__all__ = [
    "AdvisoryLock", "CancelToken", "ChildInfo", "Cluster", "ClusterStats", "ConfigOption",
    "ConfigSource", "DiffExtent", "ExclusiveLock", "Group", "GroupImage", "GroupImageState",
    "GroupRef", "GroupSnap", "GroupSnapRef", "GroupSnapState", "Image", "ImageInfo", "ImageSpec",
    "Locker", "Lockers", "LockMode", "LockOwner", "ObjectStat", "ParentInfo", "Pool", "PoolStats",
    "QosLimits", "SnapInfo", "SnapNamespace", "TrashEntry", "TrashSource", "Watcher", "clone",
    "librbd_version", "reset_logging", "errors",
    "FEATURE_LAYERING", "FEATURE_STRIPINGV2", "FEATURE_EXCLUSIVE_LOCK", "FEATURE_OBJECT_MAP",
    "FEATURE_FAST_DIFF", "FEATURE_DEEP_FLATTEN", "FEATURE_JOURNALING", "FEATURE_DATA_POOL",
    "FEATURE_OPERATIONS", "FEATURE_MIGRATING", "FEATURE_NON_PRIMARY",
    "SNAP_CREATE_SKIP_QUIESCE", "SNAP_CREATE_IGNORE_QUIESCE_ERROR",
    "SNAP_REMOVE_UNPROTECT", "SNAP_REMOVE_FLATTEN", "SNAP_REMOVE_FORCE",
    *errors.__all__,
]
