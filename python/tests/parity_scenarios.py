"""Scenarios that run the same python-rados/python-rbd calls against a module pair and print a
JSON list of ``[scenario, outcome]``: ``{"ok": value}`` or ``{"raises": ExceptionClassName}``.

    /usr/bin/python3 parity_scenarios.py real     # Debian's python3-rados / python3-rbd
    .venv/bin/python parity_scenarios.py compat   # rbd_core.compat

test_compat_parity.py runs both and compares the outputs. Values are normalised so two runs
compare equal: this run's name prefix becomes ``<P>``, ids/addresses/timestamps are reduced
to their type or shape. Everything created is named ``<P>...`` (the prefix has the pid) and
removed at the end, also on failure. Needs CEPH_CONF (and RBD_TEST_CLIENT_ID, default admin).
"""
from __future__ import annotations

import datetime
import json
import os
import re
import sys
import time
import uuid
from typing import Any, Callable

MODE = sys.argv[1] if len(sys.argv) > 1 else "compat"
if MODE == "real":
    import rados  # type: ignore[import-not-found]
    import rbd  # type: ignore[import-not-found]
elif MODE == "compat":
    from rbd_core.compat import rados, rbd  # type: ignore[no-redef]
else:
    sys.exit(f"usage: {sys.argv[0]} real|compat")

CONF = os.environ["CEPH_CONF"]
CLIENT = os.environ.get("RBD_TEST_CLIENT_ID", "admin")
POOL = "rbd"
P = f"rbdcore-parity-{os.getpid()}-"
MiB = 1 << 20

results: list[list[Any]] = []


def norm(v: Any) -> Any:
    """Makes a value comparable across runs and JSON-serialisable."""
    if isinstance(v, str):
        return v.replace(P, "<P>")
    if isinstance(v, bytes):
        return {"bytes": v.replace(P.encode(), b"<P>").hex()}
    if isinstance(v, (bool, int, float)) or v is None:
        return v
    if isinstance(v, datetime.datetime):
        return "<datetime>"
    if isinstance(v, time.struct_time):
        return "<struct_time>"
    if isinstance(v, dict):
        return {str(k): norm(x) for k, x in sorted(v.items())}
    if isinstance(v, (list, tuple)):
        return [norm(x) for x in v]
    return f"<{type(v).__name__}>"


def rec(name: str, fn: Callable[[], Any]) -> Any:
    """Runs one scenario and records its outcome; returns the value (None on error)."""
    try:
        v = fn()
    except Exception as e:  # noqa: BLE001 - the class name is the outcome
        results.append([name, {"raises": type(e).__name__}])
        return None
    results.append([name, {"ok": norm(v)}])
    return v


def keys(d: dict[str, Any]) -> list[str]:
    return sorted(d)


def is_uuid(s: str) -> bool:
    try:
        return str(uuid.UUID(s)) == s
    except ValueError:
        return False


def mon_name(r: Any) -> str:
    """The first monitor's name (from ``mon dump``)."""
    _, out, _ = r.mon_command(json.dumps({"prefix": "mon dump", "format": "json"}), b"")
    return str(json.loads(out)["mons"][0]["name"])


def snaps_view(img: Any) -> list[Any]:
    out = []
    for s in img.list_snaps():
        d = dict(s)
        d["id"] = type(d["id"]).__name__
        if d.get("namespace") in (1, 2):  # group / trash snapshots have generated names
            d["name"] = "<generated>"
        if "group" in d:
            d["group"] = {"keys": keys(d["group"]), "name": d["group"]["name"],
                          "snap_name": d["group"]["snap_name"]}
        out.append(d)
    return out


def main() -> None:  # noqa: C901, PLR0915 - one linear script
    # ---------------------------------------------------------------- Rados ---------------
    r = rados.Rados(conffile=CONF, rados_id=CLIENT, conf={"rbd_cache": "false"})
    rec("rados.state_before_connect", lambda: r.state)
    rec("rados.open_ioctx_before_connect", lambda: r.open_ioctx(POOL))
    rec("rados.conf_get_override_before_connect", lambda: r.conf_get("rbd_cache"))
    rec("rados.conf_set_before_connect", lambda: r.conf_set("rbd_default_clone_format", "2"))
    rec("rados.connect", lambda: r.connect())
    rec("rados.state_connected", lambda: r.state)
    rec("rados.connect_again", lambda: r.connect())
    rec("rados.get_fsid_is_uuid", lambda: is_uuid(r.get_fsid()))
    rec("rados.conf_get_override", lambda: r.conf_get("rbd_cache"))
    rec("rados.conf_get_set_before_connect", lambda: r.conf_get("rbd_default_clone_format"))
    rec("rados.conf_get_unknown", lambda: r.conf_get("no_such_option_rbdcore"))
    rec("rados.get_cluster_stats", lambda: {k: type(v).__name__ for k, v in r.get_cluster_stats().items()})

    def mon_ok() -> Any:
        ret, out, outs = r.mon_command(json.dumps({"prefix": "osd pool get", "pool": POOL, "var": "size",
                                                   "format": "json"}), b"")
        return ret, sorted(json.loads(out)), outs

    rec("rados.mon_command_ok", mon_ok)
    rec("rados.mon_command_error", lambda: r.mon_command(json.dumps({"prefix": "osd pool get",
                                                                     "pool": "no-such-pool-rbdcore",
                                                                     "var": "size"}), b""))
    rec("rados.mon_command_bad_prefix", lambda: r.mon_command(json.dumps({"prefix": "no such command"}),
                                                              b"")[0])
    rec("rados.open_ioctx_missing", lambda: r.open_ioctx("no-such-pool-rbdcore"))

    # mon_command's full signature: timeout (ignored), target (a monitor's name or rank).
    def mon_target(target: Any) -> Any:
        ret, out, _ = r.mon_command(json.dumps({"prefix": "mon_status", "format": "json"}), b"", target=target)
        return ret, sorted(json.loads(out))[:3] if ret == 0 else out

    rec("rados.mon_command_target_name", lambda: mon_target(mon_name(r)))
    rec("rados.mon_command_target_rank", lambda: mon_target(0))
    rec("rados.mon_command_target_unknown", lambda: mon_target("no-such-mon-rbdcore")[0])
    rec("rados.mon_command_target_bad_rank", lambda: mon_target(7)[0])
    rec("rados.mon_command_timeout_kw", lambda: r.mon_command(cmd=json.dumps({"prefix": "osd pool get", "pool": POOL,
                                                                              "var": "size"}),
                                                              inbuf=b"", timeout=5, target=None)[0])
    # conf_set on a connected handle changes the running client.
    rec("rados.conf_set_after_connect", lambda: r.conf_set("rbd_default_order", "22"))
    rec("rados.conf_get_after_conf_set", lambda: r.conf_get("rbd_default_order"))
    rec("rados.conf_set_after_connect_unknown", lambda: r.conf_set("no_such_option_rbdcore", "1"))
    rec("rados.conf_set_after_connect_bad_value", lambda: r.conf_set("rbd_cache", "notabool"))

    def other_clustername() -> Any:
        r4 = rados.Rados(conffile=CONF, rados_id=CLIENT, clustername="rbdcoreother")
        r4.connect()
        try:
            return r4.state, is_uuid(r4.get_fsid()), r4.get_fsid() == r.get_fsid(), r4.conf_get("cluster")
        finally:
            r4.shutdown()

    rec("rados.clustername_other", other_clustername)

    def ctx_manager() -> Any:
        with rados.Rados(conffile=CONF, rados_id=CLIENT) as r2:
            inside = (r2.state, is_uuid(r2.get_fsid()))
        return inside, r2.state

    rec("rados.context_manager", ctx_manager)

    def after_shutdown() -> Any:
        r3 = rados.Rados(conffile=CONF, rados_id=CLIENT)
        r3.connect()
        r3.shutdown()
        return r3.state, r3.get_fsid()

    rec("rados.get_fsid_after_shutdown", after_shutdown)

    io = r.open_ioctx(POOL)
    R = rbd.RBD()
    try:
        scenarios(r, io, R)
    finally:
        cleanup(io, R)
        io.close()
        r.shutdown()


def scenarios(r: Any, io: Any, R: Any) -> None:  # noqa: C901, PLR0915
    # ---------------------------------------------------------------- Ioctx ---------------
    obj = P + "obj"
    rec("ioctx.get_pool_name", lambda: io.get_pool_name())
    rec("ioctx.write_full", lambda: io.write_full(obj, b"hello world"))
    rec("ioctx.write_offset", lambda: io.write(obj, b"HE", 1))
    rec("ioctx.read", lambda: io.read(obj))
    rec("ioctx.read_length_offset", lambda: io.read(obj, 4, 2))
    rec("ioctx.stat", lambda: io.stat(obj))
    rec("ioctx.write_str", lambda: io.write_full(obj, "text"))  # type: ignore[arg-type]
    rec("ioctx.remove_object", lambda: io.remove_object(obj))
    rec("ioctx.read_missing", lambda: io.read(obj))
    rec("ioctx.stat_missing", lambda: io.stat(obj))
    rec("ioctx.remove_missing", lambda: io.remove_object(obj))

    def closed_ioctx() -> Any:
        with r.open_ioctx(POOL) as io2:
            pass
        return io2.read(obj)

    rec("ioctx.read_after_close", closed_ioctx)

    # ---------------------------------------------------------------- RBD.create ----------
    a = P + "a"
    rec("rbd.create", lambda: R.create(io, a, 16 * MiB, order=22))
    rec("rbd.create_exists", lambda: R.create(io, a, MiB))
    rec("rbd.create_bad_order", lambda: R.create(io, P + "bad", MiB, order=5))
    rec("rbd.create_old_format_features", lambda: R.create(io, P + "old", MiB, old_format=True, features=1))
    rec("rbd.create_old_format", lambda: R.create(io, P + "old", MiB, old_format=True))
    rec("rbd.create_striped", lambda: R.create(io, P + "striped", MiB, stripe_unit=65536, stripe_count=4))

    def striped() -> Any:
        with rbd.Image(io, P + "striped") as s:
            return s.stripe_unit(), s.stripe_count(), bool(s.features() & rbd.RBD_FEATURE_STRIPINGV2)

    rec("image.stripe_unit_count", striped)
    rec("rbd.create_layering_only", lambda: R.create(io, P + "plain", 8 * MiB, order=22,
                                                     features=rbd.RBD_FEATURE_LAYERING))
    rec("rbd.list", lambda: sorted(n for n in R.list(io) if n.startswith(P)))
    rec("rbd.rename", lambda: R.rename(io, P + "old", P + "old2"))
    rec("rbd.rename_missing", lambda: R.rename(io, P + "old", P + "old3"))
    rec("rbd.rename_to_existing", lambda: R.rename(io, P + "old2", a))
    calls: list[Any] = []
    rec("rbd.remove_with_progress", lambda: R.remove(io, P + "old2", on_progress=lambda d, t: calls.append((d, t)) or 0))
    rec("rbd.remove_progress_calls", lambda: calls)
    rec("rbd.remove_missing", lambda: R.remove(io, P + "old2"))

    # ---------------------------------------------------------------- Image basics --------
    rec("image.open_missing", lambda: rbd.Image(io, P + "missing"))
    img = rbd.Image(io, a)
    rec("image.get_name", lambda: img.get_name())
    rec("image.size", lambda: img.size())
    rec("image.stat", lambda: {k: (v if k != "block_name_prefix" else "<prefix>") for k, v in img.stat().items()})
    rec("image.features", lambda: img.features())
    rec("image.old_format", lambda: img.old_format())
    rec("image.write", lambda: img.write(b"a" * 4096, 0))
    rec("image.write_far", lambda: img.write(b"b" * 4096, 9 * MiB))
    rec("image.write_bytearray", lambda: img.write(bytearray(b"x"), 0))  # type: ignore[arg-type]
    rec("image.write_past_end", lambda: img.write(b"x", 16 * MiB))
    rec("image.read", lambda: img.read(4090, 12))
    rec("image.read_straddle_end", lambda: img.read(16 * MiB - 4, 10))
    rec("image.read_past_end", lambda: img.read(16 * MiB, 10))
    rec("image.discard", lambda: img.discard(0, 4096))
    rec("image.read_after_discard", lambda: img.read(0, 8))
    rec("image.write_again", lambda: img.write(b"a" * 4096, 0))
    rec("image.flush", lambda: img.flush())
    rec("image.resize_grow", lambda: img.resize(32 * MiB))
    rec("image.size_after_grow", lambda: img.size())
    rec("image.resize_shrink_disallowed", lambda: img.resize(16 * MiB, allow_shrink=False))
    rec("image.resize_shrink", lambda: img.resize(16 * MiB))
    rec("image.watchers_list", lambda: [keys(w) for w in img.watchers_list()])
    rec("image.id_type", lambda: type(img.id()).__name__)
    rec("image.block_name_prefix", lambda: img.block_name_prefix().startswith("rbd_data."))
    rec("image.op_features_flags", lambda: (img.op_features(), img.flags()))
    rec("image.data_pool_id", lambda: img.data_pool_id() == io.get_pool_id())
    rec("image.stripe", lambda: (img.stripe_unit(), img.stripe_count()))
    rec("image.config_list_qos", lambda: sorted((c["name"], c["value"], c["source"]) for c in img.config_list()
                                               if c["name"] == "rbd_qos_iops_limit"))
    rec("image.write_zeroes", lambda: img.write_zeroes(8 * MiB, 4096))
    rec("image.read_after_write_zeroes", lambda: img.read(8 * MiB, 4))
    rec("image.sparsify_too_small", lambda: img.sparsify(512))
    rec("rbd.list2", lambda: sorted((sorted(d), d["name"]) for d in R.list2(io) if d["name"].startswith(P)))

    # ---------------------------------------------------------------- diff ----------------
    def diff(*args: Any, **kw: Any) -> Any:
        ext: list[Any] = []
        img.diff_iterate(*args, lambda o, n, e: ext.append((o, n, e)), **kw)
        return sorted(ext)

    rec("image.diff_iterate", lambda: diff(0, 16 * MiB, None))
    rec("image.diff_iterate_whole_object", lambda: diff(0, 16 * MiB, None, whole_object=True))
    rec("image.diff_iterate_range", lambda: diff(8 * MiB, 4 * MiB, None))
    rec("image.diff_iterate_cb_negative", lambda: img.diff_iterate(0, 16 * MiB, None, lambda o, n, e: -5))
    rec("image.diff_iterate_cb_raises", lambda: img.diff_iterate(0, 16 * MiB, None, lambda o, n, e: 1 // 0))
    count: list[int] = []
    rec("image.diff_iterate_cb_positive", lambda: img.diff_iterate(0, 16 * MiB, None, lambda o, n, e: count.append(1) or 1))
    rec("image.diff_iterate_cb_positive_count", lambda: len(count))
    rec("image.diff_iterate_from_missing", lambda: img.diff_iterate(0, 16 * MiB, "nosnap", lambda *x: None))

    # ---------------------------------------------------------------- snapshots -----------
    rec("snap.create", lambda: img.create_snap("s1"))
    rec("snap.create_duplicate", lambda: img.create_snap("s1"))
    rec("snap.list", lambda: snaps_view(img))
    rec("snap.exists", lambda: (img.snap_exists("s1"), img.snap_exists("nosnap")))
    rec("snap.get_id_type", lambda: type(img.snap_get_id("s1")).__name__)
    rec("snap.get_id_missing", lambda: img.snap_get_id("nosnap"))
    rec("snap.get_timestamp", lambda: img.get_snap_timestamp(img.snap_get_id("s1")))
    rec("image.write_after_snap", lambda: img.write(b"c" * 4096, 4096))
    rec("image.diff_iterate_from_snap", lambda: diff(0, 16 * MiB, "s1"))
    rec("snap.rename", lambda: img.rename_snap("s1", "s2"))
    rec("snap.rename_missing", lambda: img.rename_snap("s1", "s3"))
    rec("snap.protect", lambda: img.protect_snap("s2"))
    rec("snap.protect_again", lambda: img.protect_snap("s2"))
    rec("snap.protect_missing", lambda: img.protect_snap("nosnap"))
    rec("snap.is_protected", lambda: img.is_protected_snap("s2"))
    rec("snap.is_protected_missing", lambda: img.is_protected_snap("nosnap"))
    rec("snap.remove_protected", lambda: img.remove_snap("s2"))
    rec("snap.unprotect", lambda: img.unprotect_snap("s2"))
    rec("snap.unprotect_unprotected", lambda: img.unprotect_snap("s2"))
    rec("snap.remove_missing", lambda: img.remove_snap("nosnap"))
    rec("snap.get_limit_default", lambda: img.get_snap_limit())
    rec("snap.set_limit", lambda: img.set_snap_limit(1))
    rec("snap.create_over_limit", lambda: img.create_snap("s3"))
    rec("snap.get_limit", lambda: img.get_snap_limit())
    rec("snap.remove_limit", lambda: img.remove_snap_limit())
    rec("snap.rollback", lambda: img.rollback_to_snap("s2"))
    rec("snap.read_after_rollback", lambda: img.read(4096, 4))
    rec("snap.rollback_missing", lambda: img.rollback_to_snap("nosnap"))
    rec("snap.set_snap", lambda: img.set_snap("s2"))
    rec("snap.write_at_snap", lambda: img.write(b"z", 0))
    rec("snap.set_snap_none", lambda: img.set_snap(None))
    rec("snap.set_snap_missing", lambda: img.set_snap("nosnap"))

    def open_at_snap() -> Any:
        with rbd.Image(io, a, snapshot="s2") as s:
            first = rec_inline(lambda: s.write(b"z", 0))
            s.set_snap(None)
            return first, s.write(b"a", 0)

    rec("image.open_at_snapshot_then_head", open_at_snap)
    rec("image.open_missing_snapshot", lambda: rbd.Image(io, a, snapshot="nosnap"))

    def read_only() -> Any:
        with rbd.Image(io, a, read_only=True) as ro:
            return ro.read(0, 2), rec_inline(lambda: ro.write(b"x", 0)), rec_inline(lambda: ro.create_snap("x"))

    rec("image.read_only", read_only)

    # ---------------------------------------------------------------- layering ------------
    c = P + "clone"
    rec("layering.parent_info_not_clone", lambda: img.parent_info())
    rec("layering.flatten_not_clone", lambda: img.flatten())
    rec("layering.clone", lambda: R.clone(io, a, "s2", io, c))
    rec("layering.clone_exists", lambda: R.clone(io, a, "s2", io, c))
    rec("layering.clone_missing_snap", lambda: R.clone(io, a, "nosnap", io, P + "clone2"))
    rec("layering.clone_missing_parent", lambda: R.clone(io, P + "missing", "s2", io, P + "clone2"))
    rec("layering.list_children", lambda: img.list_children())
    rec("layering.remove_parent_with_snaps", lambda: R.remove(io, a))
    with rbd.Image(io, c) as ci:
        rec("layering.parent_info", lambda: ci.parent_info())
        rec("layering.get_parent_image_spec", lambda: ci.get_parent_image_spec())
        rec("layering.parent_id_type", lambda: type(ci.parent_id()).__name__)
        rec("layering.overlap", lambda: ci.overlap())
        rec("layering.list_children2", lambda: [{k: (v if k != "id" else "<id>") for k, v in d.items()}
                                                for d in img.list_children2()])
        rec("layering.list_descendants", lambda: [d["image"] for d in img.list_descendants()])
        rec("layering.clone_stat", lambda: {k: (v if k != "block_name_prefix" else "<prefix>") for k, v in ci.stat().items()})
        rec("layering.clone_read_parent_data", lambda: ci.read(0, 4))
        calls2: list[Any] = []
        rec("layering.flatten_cb_negative", lambda: ci.flatten(on_progress=lambda d, t: calls2.append((d, t)) or -1))
        rec("layering.flatten_cb_negative_calls", lambda: calls2)
        rec("layering.parent_info_after_abort", lambda: ci.parent_info()[2])
        calls3: list[Any] = []
        rec("layering.flatten", lambda: ci.flatten(on_progress=lambda d, t: calls3.append((d, t)) or 0))
        rec("layering.flatten_calls", lambda: sorted(calls3))
        rec("layering.parent_info_after_flatten", lambda: ci.parent_info())
        rec("layering.flatten_again", lambda: ci.flatten())
        rec("layering.read_after_flatten", lambda: ci.read(0, 4))
    rec("layering.clone2", lambda: R.clone(io, a, "s2", io, P + "clone2"))
    rec("layering.remove_snap_with_clone_v2_child", lambda: img.remove_snap("s2"))
    rec("layering.snaps_after_remove_with_child", lambda: snaps_view(img))
    with rbd.Image(io, P + "clone2") as c2:
        rec("layering.parent_of_trashed_snap", lambda: (c2.parent_info()[0], c2.parent_info()[1]))
        rec("layering.flatten_cb_raises", lambda: c2.flatten(on_progress=lambda d, t: 1 // 0))
        rec("layering.parent_after_flatten_cb_raises", lambda: c2.parent_info())
    rec("layering.snaps_after_child_flattened", lambda: snaps_view(img))

    # ---------------------------------------------------------------- copy / features -----
    rec("image.copy", lambda: img.copy(io, P + "copy"))
    rec("image.copy_exists", lambda: img.copy(io, P + "copy"))

    def copy_data() -> Any:
        with rbd.Image(io, P + "copy") as cp:
            return cp.size(), cp.read(0, 4), cp.read(9 * MiB, 4), len(list(cp.list_snaps()))

    rec("image.copy_data", copy_data)
    rec("image.deep_copy", lambda: img.deep_copy(io, P + "deep"))

    def deep_copy_data() -> Any:
        with rbd.Image(io, P + "deep") as cp:
            return cp.size(), cp.read(0, 4), [x["name"] for x in cp.list_snaps()]

    rec("image.deep_copy_data", deep_copy_data)
    rec("snap.create_for_by_id", lambda: img.create_snap("byid"))
    rec("snap.set_snap_by_id", lambda: img.set_snap_by_id(img.snap_get_id("byid")))
    rec("snap.set_snap_by_id_write", lambda: img.write(b"q", 0))
    rec("snap.set_snap_by_id_none", lambda: img.set_snap_by_id(None))
    rec("snap.get_name", lambda: img.snap_get_name(img.snap_get_id("byid")))
    rec("snap.protect_for_remove2", lambda: img.protect_snap("byid"))
    rec("snap.remove_snap2_unprotect", lambda: img.remove_snap2("byid", rbd.RBD_SNAP_REMOVE_UNPROTECT))
    rec("snap.list_after_remove2", lambda: snaps_view(img))
    plain = rbd.Image(io, P + "plain")
    rec("features.layering_only", lambda: plain.features())
    rec("locks.lock_acquire_without_feature", lambda: plain.lock_acquire(rbd.RBD_LOCK_MODE_EXCLUSIVE))
    rec("features.update_enable_exclusive_lock", lambda: plain.update_features(rbd.RBD_FEATURE_EXCLUSIVE_LOCK, True))
    rec("features.after_update", lambda: plain.features())
    rec("features.update_disable_layering", lambda: plain.update_features(rbd.RBD_FEATURE_LAYERING, False))
    rec("features.update_disable_exclusive_lock", lambda: plain.update_features(rbd.RBD_FEATURE_EXCLUSIVE_LOCK, False))

    # ---------------------------------------------------------------- advisory locks ------
    def lockers() -> Any:
        lk = plain.list_lockers()
        if not lk:
            return lk
        return {"tag": lk["tag"], "exclusive": lk["exclusive"],
                "lockers": [(cl.startswith("client."), re.sub(r"^auto \d+$", "auto <n>", ck), type(ad).__name__)
                            for cl, ck, ad in lk["lockers"]]}

    rec("locks.list_lockers_none", lockers)
    rec("locks.lock_exclusive", lambda: plain.lock_exclusive("c1"))
    rec("locks.lock_exclusive_again", lambda: plain.lock_exclusive("c1"))

    rec("locks.list_lockers_exclusive", lockers)
    rec("locks.unlock_wrong_cookie", lambda: plain.unlock("c2"))
    rec("locks.break_lock_wrong", lambda: plain.break_lock("client.1", "c2"))
    rec("locks.unlock", lambda: plain.unlock("c1"))
    rec("locks.lock_shared", lambda: plain.lock_shared("c1", "tag1"))
    rec("locks.list_lockers_shared", lockers)
    rec("locks.unlock_shared", lambda: plain.unlock("c1"))
    plain.close()

    # ---------------------------------------------------------------- managed lock --------
    rec("locks.lock_get_owners_before_acquire", lambda: [(o["mode"], type(o["owner"]).__name__)
                                                         for o in img.lock_get_owners()])
    rec("locks.lock_acquire", lambda: img.lock_acquire(rbd.RBD_LOCK_MODE_EXCLUSIVE))
    rec("locks.is_exclusive_lock_owner", lambda: img.is_exclusive_lock_owner())
    rec("locks.lock_get_owners", lambda: [(o["mode"], type(o["owner"]).__name__) for o in img.lock_get_owners()])
    rec("locks.list_lockers_managed", lambda: img.list_lockers()["tag"])
    rec("locks.lock_release", lambda: img.lock_release())
    rec("locks.lock_release_again", lambda: img.lock_release())
    rec("locks.lock_acquire_shared", lambda: img.lock_acquire(rbd.RBD_LOCK_MODE_SHARED))
    rec("locks.lock_break_not_owner", lambda: img.lock_break(rbd.RBD_LOCK_MODE_EXCLUSIVE, "nobody"))

    # ---------------------------------------------------------------- metadata ------------
    rec("metadata.get_missing", lambda: img.metadata_get("k"))
    rec("metadata.remove_missing", lambda: img.metadata_remove("k"))
    rec("metadata.set", lambda: img.metadata_set("k", "v"))
    rec("metadata.set_conf", lambda: img.metadata_set("conf_rbd_qos_iops_limit", "100"))
    rec("metadata.get", lambda: img.metadata_get("k"))
    rec("metadata.list", lambda: list(img.metadata_list()))
    rec("metadata.remove", lambda: img.metadata_remove("k"))
    rec("metadata.list_after_remove", lambda: list(img.metadata_list()))

    # ---------------------------------------------------------------- trash ---------------
    t = P + "trash"
    R.create(io, t, MiB)
    rec("trash.move", lambda: R.trash_move(io, t))
    rec("trash.move_missing", lambda: R.trash_move(io, P + "missing"))
    entries = [e for e in R.trash_list(io) if e["name"] == t]

    def trash_view(e: dict[str, Any]) -> Any:
        return {"keys": keys(e), "name": e["name"], "source": e["source"],
                "times": [type(e["deletion_time"]).__name__, type(e["deferment_end_time"]).__name__]}

    rec("trash.list", lambda: [trash_view(e) for e in entries])
    tid = entries[0]["id"] if entries else "none"
    rec("trash.get", lambda: trash_view(R.trash_get(io, tid)))
    rec("trash.get_missing", lambda: R.trash_get(io, "0123456789ab"))
    rec("trash.restore", lambda: R.trash_restore(io, tid, t + "r"))
    rec("trash.restored_listed", lambda: t + "r" in R.list(io))
    rec("trash.move_again", lambda: R.trash_move(io, t + "r"))
    calls4: list[Any] = []
    rec("trash.remove", lambda: R.trash_remove(io, tid, on_progress=lambda d, t_: calls4.append((d, t_)) or 0))
    rec("trash.remove_progress_calls", lambda: calls4)
    rec("trash.remove_missing", lambda: R.trash_remove(io, tid))

    # ---------------------------------------------------------------- groups --------------
    g = P + "g"
    gm = P + "gm"
    R.create(io, gm, 8 * MiB, order=22)
    with rbd.Image(io, gm) as m:
        m.write(b"g" * 4096, 0)
    rec("group.create", lambda: R.group_create(io, g))
    rec("group.create_duplicate", lambda: R.group_create(io, g))
    rec("group.list", lambda: [x for x in R.group_list(io) if x.startswith(P)])
    grp = rbd.Group(io, g)
    rec("group.add_image_missing", lambda: grp.add_image(io, P + "missing"))
    rec("group.add_image", lambda: grp.add_image(io, gm))
    rec("group.add_image_again", lambda: grp.add_image(io, gm))
    rec("group.list_images", lambda: [(x["name"], x["state"], x["pool"] == io.get_pool_id())
                                      for x in grp.list_images()])
    def member(fn: Callable[[Any], Any]) -> Any:
        with rbd.Image(io, gm) as m:
            return fn(m)

    rec("group.image_group", lambda: member(lambda m: m.group()))
    rec("group.image_group_not_member", lambda: img.group())
    rec("group.create_snap", lambda: grp.create_snap("gs"))
    rec("group.create_snap_duplicate", lambda: grp.create_snap("gs"))
    rec("group.list_snaps", lambda: list(grp.list_snaps()))
    rec("group.member_snaps", lambda: member(lambda m: [x for x in snaps_view(m) if x["namespace"] == 1]))
    rec("group.member_write_after_snap", lambda: member(lambda m: m.write(b"h" * 4096, 0)))
    rec("group.rollback", lambda: grp.rollback_to_snap("gs"))
    rec("group.member_read_after_rollback", lambda: member(lambda m: m.read(0, 4)))
    rec("group.rollback_missing", lambda: grp.rollback_to_snap("nosnap"))
    rec("group.rename_snap", lambda: grp.rename_snap("gs", "gs2"))
    rec("group.rename_snap_missing", lambda: grp.rename_snap("gs", "gs3"))
    rec("group.remove_snap", lambda: grp.remove_snap("gs2"))
    rec("group.remove_snap_missing", lambda: grp.remove_snap("gs2"))
    rec("group.member_snaps_after_remove", lambda: member(lambda m: len(list(m.list_snaps()))))
    rec("group.remove_image", lambda: grp.remove_image(io, gm))
    rec("group.remove_image_again", lambda: grp.remove_image(io, gm))
    rec("group.image_group_after_remove", lambda: member(lambda m: m.group()))
    rec("group.rename", lambda: R.group_rename(io, g, g + "2"))
    rec("group.rename_missing", lambda: R.group_rename(io, g, g + "3"))
    rec("group.remove", lambda: R.group_remove(io, g + "2"))
    rec("group.remove_missing", lambda: R.group_remove(io, g + "2"))
    rec("group.missing_list_images", lambda: list(rbd.Group(io, P + "nogroup").list_images()))
    rec("group.missing_list_snaps", lambda: list(rbd.Group(io, P + "nogroup").list_snaps()))
    rec("group.missing_create_snap", lambda: rbd.Group(io, P + "nogroup").create_snap("x"))

    def member_remove() -> Any:
        R.group_create(io, g + "m")
        try:
            R.create(io, P + "member", MiB)
            rbd.Group(io, g + "m").add_image(io, P + "member")
            return R.remove(io, P + "member")
        finally:
            rbd.Group(io, g + "m").remove_image(io, P + "member")
            R.group_remove(io, g + "m")

    rec("group.remove_member_image", member_remove)

    # ---------------------------------------------------------------- namespaces ----------
    ns = P + "ns"
    rec("namespace.create", lambda: R.namespace_create(io, ns))
    rec("namespace.create_duplicate", lambda: R.namespace_create(io, ns))
    rec("namespace.list", lambda: [x for x in R.namespace_list(io) if x.startswith(P)])
    rec("namespace.exists", lambda: (R.namespace_exists(io, ns), R.namespace_exists(io, ns + "x")))
    rec("namespace.remove", lambda: R.namespace_remove(io, ns))
    rec("namespace.remove_missing", lambda: R.namespace_remove(io, ns))

    # ---------------------------------------------------------------- close ---------------
    rec("image.close", lambda: img.close())
    rec("image.size_after_close", lambda: img.size())
    rec("image.close_again", lambda: img.close())

    def ctx_image() -> Any:
        with rbd.Image(io, a) as im2:
            return im2.size()

    rec("image.context_manager", ctx_image)


def rec_inline(fn: Callable[[], Any]) -> Any:
    """An outcome inside a scenario's value: the value or ``"!ClassName"``."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        return "!" + type(e).__name__


def cleanup(io: Any, R: Any) -> None:
    """Removes everything this run created (best effort, any order of failure)."""
    for gname in [x for x in _try(lambda: R.group_list(io), []) if x.startswith(P)]:
        grp = rbd.Group(io, gname)
        for m in _try(lambda: list(grp.list_images()), []):
            _try(lambda: grp.remove_image(io, m["name"]), None)
        _try(lambda: R.group_remove(io, gname), None)
    for _ in range(3):  # children first: retry until parents are free
        for name in sorted((n for n in _try(lambda: R.list(io), []) if n.startswith(P)), reverse=True):
            try:
                with rbd.Image(io, name) as im:
                    for s in list(im.list_snaps()):
                        if s.get("namespace", 0) == 0:
                            _try(lambda: im.unprotect_snap(s["name"]), None)
                            _try(lambda: im.remove_snap(s["name"]), None)
            except Exception:  # noqa: BLE001
                pass
            _try(lambda: R.remove(io, name), None)
    for e in _try(lambda: list(R.trash_list(io)), []):
        if e["name"].startswith(P):
            _try(lambda: R.trash_remove(io, e["id"], force=True), None)
    for nsn in [x for x in _try(lambda: R.namespace_list(io), []) if x.startswith(P)]:
        _try(lambda: R.namespace_remove(io, nsn), None)
    _try(lambda: io.remove_object(P + "obj"), None)


def _try(fn: Callable[[], Any], default: Any) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001
        return default


if __name__ == "__main__":
    try:
        main()
    finally:
        json.dump(results, sys.stdout, indent=0)
        sys.stdout.write("\n")
