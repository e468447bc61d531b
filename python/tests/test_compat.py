"""rbd_core.compat specifics that the parity scenarios do not cover: what the shim does
differently (documented), and that it only uses the native API."""
import os

import pytest

from rbd_core.compat import rados, rbd
from conftest import ceph_conf

pytestmark = pytest.mark.live


def test_constants_and_exceptions_match_python_rbd():
    assert (rbd.RBD_FEATURE_LAYERING, rbd.RBD_FEATURE_STRIPINGV2, rbd.RBD_FEATURE_EXCLUSIVE_LOCK,
            rbd.RBD_FEATURE_OBJECT_MAP, rbd.RBD_FEATURE_FAST_DIFF, rbd.RBD_FEATURE_DEEP_FLATTEN,
            rbd.RBD_FEATURE_JOURNALING, rbd.RBD_FEATURE_DATA_POOL) == (1, 2, 4, 8, 16, 32, 64, 128)
    assert (rbd.RBD_LOCK_MODE_EXCLUSIVE, rbd.RBD_LOCK_MODE_SHARED) == (0, 1)
    assert rbd.ECANCELED == 125
    import rbd_core
    assert rbd.ImageNotFound is rbd_core.ImageNotFound  # one hierarchy: except clauses work for both
    assert issubclass(rados.ObjectNotFound, rados.OSError) and issubclass(rados.OSError, rados.Error)
    assert str(rados.ObjectNotFound("x", errno=2)) == "[errno 2] x"


def test_conf_set_after_connect_changes_the_running_client():
    """python-rados allows conf_set on a connected handle (runtime options); so does the shim.
    (The parity scenarios compare outcomes with python-rados; this checks the effect.)"""
    r = rados.Rados(conffile=ceph_conf(), rados_id=os.environ.get("RBD_TEST_CLIENT_ID", "admin"),
                    clustername="ceph")
    r.connect()
    try:
        r.conf_set("rbd_default_clone_format", "1")
        assert r.conf_get("rbd_default_clone_format") == "1"
        r.conf_set("rbd_default_clone_format", "auto")
        assert r.conf_get("rbd_default_clone_format") == "auto"
        with pytest.raises(rados.ObjectNotFound):
            r.conf_set("no_such_option_rbdcore", "1")
        ret, out, _ = r.mon_command('{"prefix": "mon_status", "format": "json"}', b"", target=0)
        assert ret == 0 and b"quorum" in out
    finally:
        r.shutdown()


def test_name_and_connect_error():
    r = rados.Rados(name="client." + os.environ.get("RBD_TEST_CLIENT_ID", "admin"), conffile=ceph_conf(),
                    conf={"mon_host": "127.0.0.1:9"})
    with pytest.raises(rados.TimedOut):
        r.connect(timeout=1)
    assert r.state == "configuring"
    with pytest.raises(rados.Error):
        rados.Rados(rados_id="a", name="client.b")


def test_ioctx_required():
    with pytest.raises(TypeError):
        rbd.RBD().list(object())
