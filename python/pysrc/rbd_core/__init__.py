"""rbd_core: the Ceph RBD lifecycle library from Python.

>>> import rbd_core
>>> with rbd_core.Cluster(conffile="/etc/ceph/ceph.conf", client_id="admin") as c:  # doctest: +SKIP
...     print(c.fsid())
"""
from __future__ import annotations

from . import errors
from ._native import Cluster, Image, Pool, librbd_version
from .errors import *  # noqa: F401,F403

__all__ = ["Cluster", "Pool", "Image", "librbd_version", "errors", *errors.__all__]
