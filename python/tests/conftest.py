"""Fixtures for tests against the live dev cluster (same contract as tests/common in Rust)."""
from __future__ import annotations

import itertools
import os

import pytest

HOW = ("start one with `scripts/vstart.sh up && eval \"$(scripts/vstart.sh env)\"` "
       "(or run the README test command); see tests/README.md")
_counter = itertools.count()


def unique(tag: str) -> str:
    return f"rbdcore-py-{os.getpid()}-{next(_counter)}-{tag}"


@pytest.fixture(scope="session")
def cluster():
    if os.environ.get("RBD_TEST_NO_CLUSTER"):
        pytest.skip("RBD_TEST_NO_CLUSTER is set (explicit opt-out)")
    conf = os.environ.get("CEPH_CONF")
    if not conf:
        pytest.fail(f"CEPH_CONF is not set: this test needs the dev cluster; {HOW}")
    import rbd_core
    try:
        return rbd_core.Cluster(conffile=conf, client_id=os.environ.get("RBD_TEST_CLIENT_ID", "admin"))
    except rbd_core.Error as e:
        pytest.fail(f"cannot connect to the dev cluster ({e}); {HOW}")
