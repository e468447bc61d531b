"""Metadata (KeyError on missing keys), config, QoS, pool metadata."""
import pytest

import rbd_core

pytestmark = pytest.mark.live


def test_image_metadata(pool, scratch):
    name = scratch.image(pool)
    with pool.open(name) as img:
        with pytest.raises(KeyError):
            img.metadata_get("k")
        with pytest.raises(KeyError):
            img.metadata_remove("k")
        img.metadata_set("k", "v")
        img.metadata_set("a", "")
        assert img.metadata_get("k") == "v"
        assert img.metadata_list() == {"a": "", "k": "v"}
        img.metadata_remove("k")
        assert img.metadata_list() == {"a": ""}
        with pytest.raises(rbd_core.InvalidArgument):
            img.metadata_set("conf_rbd_no_such_option", "1")


def test_qos_and_config(pool, scratch):
    name = scratch.image(pool)
    with pool.open(name) as img:
        assert img.qos() == rbd_core.QosLimits()
        limits = rbd_core.QosLimits(iops=500, write_bps=10 << 20)
        img.set_qos(limits)
        assert img.qos() == limits and "iops=500" in repr(limits)
        assert img.metadata_get("conf_rbd_qos_iops_limit") == "500"
        opts = {c.name: c for c in img.config_list()}
        assert opts["rbd_qos_iops_limit"].value == "500"
        assert opts["rbd_qos_iops_limit"].source == rbd_core.ConfigSource.Image
        assert opts["rbd_qos_bps_limit"].source == rbd_core.ConfigSource.Config
        img.set_qos(rbd_core.QosLimits(iops=None))
        assert img.qos() == rbd_core.QosLimits()


def test_pool_metadata(pool, scratch):
    key = scratch("key")
    with pytest.raises(KeyError):
        pool.pool_metadata_get(key)
    pool.pool_metadata_set(key, "v")
    try:
        assert pool.pool_metadata_get(key) == "v"
        assert pool.pool_metadata_list()[key] == "v"
    finally:
        pool.pool_metadata_remove(key)
    with pytest.raises(KeyError):
        pool.pool_metadata_remove(key)
