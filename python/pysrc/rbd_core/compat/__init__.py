"""python-rados / python-rbd compatible modules over rbd_core.

A service switches by changing::

    import rados, rbd

to::

    from rbd_core.compat import rados, rbd

The calls, return shapes (dicts, tuples, iterators of dicts) and exception classes follow
Ceph's Pacific bindings (python3-rados / python3-rbd 16.2.15); ``python/tests/parity_scenarios.py``
runs the same scenarios against both and compares the results. Only the subset that RBD
services use is provided (see each module's docstring for what is missing).
"""
from __future__ import annotations

from . import rados, rbd

__all__ = ["rados", "rbd"]
