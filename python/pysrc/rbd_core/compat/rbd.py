"""A python-rbd compatible subset over rbd_core: ``RBD`` (create, clone, remove, rename,
list, trash, groups, namespaces, pool metadata), ``Image`` and ``Group``, python-rbd's
exception classes and constants.

Return shapes follow python-rbd (Pacific 16.2.15): dicts, tuples, and iterators of dicts;
``write`` takes ``bytes`` only; progress callbacks are ``on_progress(offset, total)`` where a
negative return aborts with that errno and exceptions are printed and ignored;
``diff_iterate`` callbacks are ``cb(offset, length, exists)`` where a negative return aborts
with that errno and exceptions propagate.

Differences: ``RBD.clone`` raises a requested ``order`` that is smaller than the parent's
stripe unit to fit it (rbd-core's fix for Cinder bug 1931004) where librbd would fail with
EINVAL. Not provided: aio, mirroring, migration, encryption, ``RBD.config_*``,
``Image.create_timestamp``/``access_timestamp``/``modify_timestamp``, ``rebuild_object_map``.
"""
from __future__ import annotations

import datetime as _dt
import errno as _errno
import sys
import traceback
from types import TracebackType
from typing import Any, Callable, Iterator, List, Literal

import rbd_core
from rbd_core import errors as _errors
from rbd_core.errors import (  # noqa: F401 - python-rbd's exception classes
    ArgumentOutOfRange,
    ConnectionShutdown,
    DiskQuotaExceeded,
    Error,
    FunctionNotSupported,
    ImageBusy,
    ImageExists,
    ImageHasSnapshots,
    ImageNotFound,
    IncompleteWriteError,
    InvalidArgument,
    IOError,
    LogicError,
    NoSpace,
    ObjectExists,
    ObjectNotFound,
    OperationCanceled,
    OperationNotSupported,
    OSError,
    PermissionError,
    ReadOnlyImage,
    Timeout,
)

from .rados import Ioctx

ECANCELED = _errno.ECANCELED

RBD_FEATURE_LAYERING = 1
RBD_FEATURE_STRIPINGV2 = 2
RBD_FEATURE_EXCLUSIVE_LOCK = 4
RBD_FEATURE_OBJECT_MAP = 8
RBD_FEATURE_FAST_DIFF = 16
RBD_FEATURE_DEEP_FLATTEN = 32
RBD_FEATURE_JOURNALING = 64
RBD_FEATURE_DATA_POOL = 128
RBD_FEATURE_OPERATIONS = 256
RBD_FEATURE_MIGRATING = 512
RBD_FEATURE_NON_PRIMARY = 1024
RBD_FEATURES_INCOMPATIBLE = 1 | 2 | 8 | 16 | 32 | 128 | 256 | 512 | 1024
RBD_FEATURES_RW_INCOMPATIBLE = RBD_FEATURES_INCOMPATIBLE | 4 | 64
RBD_FEATURES_MUTABLE = 4 | 8 | 16 | 64 | 1024
RBD_FEATURES_SINGLE_CLIENT = 4 | 8 | 16 | 64
RBD_FEATURES_ALL = 2047

RBD_FLAG_OBJECT_MAP_INVALID = 1
RBD_FLAG_FAST_DIFF_INVALID = 2

RBD_LOCK_MODE_EXCLUSIVE = 0
RBD_LOCK_MODE_SHARED = 1

RBD_SNAP_NAMESPACE_TYPE_USER = 0
RBD_SNAP_NAMESPACE_TYPE_GROUP = 1
RBD_SNAP_NAMESPACE_TYPE_TRASH = 2
RBD_SNAP_NAMESPACE_TYPE_MIRROR = 3

RBD_SNAP_CREATE_SKIP_QUIESCE = 1
RBD_SNAP_CREATE_IGNORE_QUIESCE_ERROR = 2
RBD_SNAP_REMOVE_UNPROTECT = 1
RBD_SNAP_REMOVE_FLATTEN = 2
RBD_SNAP_REMOVE_FORCE = 3

RBD_GROUP_IMAGE_STATE_ATTACHED = 0
RBD_GROUP_IMAGE_STATE_INCOMPLETE = 1
RBD_GROUP_SNAP_STATE_INCOMPLETE = 0
RBD_GROUP_SNAP_STATE_COMPLETE = 1

RBD_CONFIG_SOURCE_CONFIG = 0
RBD_CONFIG_SOURCE_POOL = 1
RBD_CONFIG_SOURCE_IMAGE = 2

RBD_WRITE_ZEROES_FLAG_THICK_PROVISION = 1

_UINT64_MAX = (1 << 64) - 1

_TRASH_SOURCE = {
    rbd_core.TrashSource.User: "USER",
    rbd_core.TrashSource.Mirroring: "MIRRORING",
    rbd_core.TrashSource.Migration: "MIGRATION",
    rbd_core.TrashSource.Removing: "REMOVING",
    rbd_core.TrashSource.UserParent: "USER_PARENT",
}

_ERRNO_CLASS: dict[int, type[_errors.OSError]] = {
    _errno.EPERM: PermissionError,
    _errno.ENOENT: ImageNotFound,
    _errno.EIO: IOError,
    _errno.ENOSPC: NoSpace,
    _errno.EEXIST: ImageExists,
    _errno.EINVAL: InvalidArgument,
    _errno.EROFS: ReadOnlyImage,
    _errno.EBUSY: ImageBusy,
    _errno.ENOTEMPTY: ImageHasSnapshots,
    _errno.ENOSYS: FunctionNotSupported,
    _errno.EDOM: ArgumentOutOfRange,
    _errno.ESHUTDOWN: ConnectionShutdown,
    _errno.ETIMEDOUT: Timeout,
    _errno.EDQUOT: DiskQuotaExceeded,
    _errno.EOPNOTSUPP: OperationNotSupported,
    _errno.ECANCELED: OperationCanceled,
}


def make_ex(ret: int, msg: str) -> _errors.OSError:
    """python-rbd's ``make_ex``: the exception for return code ``ret``."""
    ret = abs(ret)
    return _ERRNO_CLASS.get(ret, OSError)(msg, errno=ret)


def _pool(ioctx: Any) -> rbd_core.Pool:
    if not isinstance(ioctx, Ioctx):
        raise TypeError("ioctx must be an rbd_core.compat.rados.Ioctx")
    return ioctx._pool


def _naive_utc(t: _dt.datetime | None) -> _dt.datetime | None:
    """python-rbd's timestamps: naive UTC datetimes with whole seconds."""
    if t is None:
        return None
    return t.astimezone(_dt.timezone.utc).replace(tzinfo=None, microsecond=0)


class _Progress:
    """Adapts a python-rbd progress callback to rbd_core's: a negative return aborts with
    that errno; an exception is printed (as Cython does) and the operation continues."""

    def __init__(self, cb: Callable[[int, int], Any] | None) -> None:
        self.cb = cb
        self.ret: int | None = None

    def __call__(self, done: int, total: int) -> bool | None:
        assert self.cb is not None
        try:
            r = self.cb(done, total)
        except Exception:  # noqa: BLE001 - python-rbd prints and ignores these
            print("Exception ignored in: 'rbd.progress_callback'", file=sys.stderr)
            traceback.print_exc()
            return None
        if isinstance(r, int) and not isinstance(r, bool) and r < 0:
            self.ret = r
            return False
        return None

    def arg(self) -> "_Progress | None":
        return self if self.cb is not None else None

    def run(self, op: Callable[..., None], *args: Any, **kw: Any) -> None:
        try:
            op(*args, on_progress=self.arg(), **kw)
        except OperationCanceled:
            if self.ret is not None:
                raise make_ex(self.ret, f"error in {getattr(op, '__name__', 'operation')}") from None
            raise


class RBD:
    """Pool-level operations (python-rbd's ``rbd.RBD``)."""

    def version(self) -> tuple[int, int, int]:
        return rbd_core.librbd_version()

    def create(self, ioctx: Ioctx, name: str, size: int, order: int | None = None,
               old_format: bool = False, features: int | None = None,
               stripe_unit: int | None = None, stripe_count: int | None = None,
               data_pool: str | None = None) -> None:
        pool = _pool(ioctx)
        if old_format:
            if features or (stripe_unit or 0) or (stripe_count or 0) or data_pool:
                raise InvalidArgument("format 1 images do not support feature masks, non-default "
                                      "striping, nor data pool")
            # Pacific creates format 2 images here too (format 1 creation is gone).
            pool.create_image(name, size, order=order)
            return
        pool.create_image(name, size, order=order, features=features, stripe_unit=stripe_unit,
                          stripe_count=stripe_count, data_pool=data_pool)

    def clone(self, p_ioctx: Ioctx, p_name: str, p_snapname: str, c_ioctx: Ioctx, c_name: str,
              features: int | None = None, order: int | None = None,
              stripe_unit: int | None = None, stripe_count: int | None = None,
              data_pool: str | None = None) -> None:
        rbd_core.clone(_pool(p_ioctx), p_name, p_snapname, _pool(c_ioctx), c_name,
                       clone_format=None, order=order, features=features,
                       stripe_unit=stripe_unit, stripe_count=stripe_count, data_pool=data_pool)

    def remove(self, ioctx: Ioctx, name: str, on_progress: Callable[[int, int], Any] | None = None) -> None:
        _Progress(on_progress).run(_pool(ioctx).remove_image, name)

    def rename(self, ioctx: Ioctx, src: str, dest: str) -> None:
        _pool(ioctx).rename_image(src, dest)

    def list(self, ioctx: Ioctx) -> List[str]:
        return [s.name for s in _pool(ioctx).image_specs()]

    def list2(self, ioctx: Ioctx) -> Iterator[dict[str, str]]:
        return iter([{"id": s.id, "name": s.name} for s in _pool(ioctx).image_specs()])

    # -- trash -----------------------------------------------------------------------------
    def trash_move(self, ioctx: Ioctx, name: str, delay: int = 0) -> None:
        _pool(ioctx).trash_move(name, float(delay))

    @staticmethod
    def _trash_dict(e: rbd_core.TrashEntry) -> dict[str, Any]:
        return {"id": e.id, "name": e.name, "source": _TRASH_SOURCE.get(e.source, "UNKNOWN"),
                "deletion_time": _naive_utc(e.deletion_time),
                "deferment_end_time": _naive_utc(e.deferment_end_time)}

    def trash_list(self, ioctx: Ioctx) -> Iterator[dict[str, Any]]:
        return iter([self._trash_dict(e) for e in _pool(ioctx).trash_list()])

    def trash_get(self, ioctx: Ioctx, image_id: str) -> dict[str, Any]:
        return self._trash_dict(_pool(ioctx).trash_get(image_id))

    def trash_remove(self, ioctx: Ioctx, image_id: str, force: bool = False,
                     on_progress: Callable[[int, int], Any] | None = None) -> None:
        _Progress(on_progress).run(_pool(ioctx).trash_remove, image_id, force=force)

    def trash_restore(self, ioctx: Ioctx, image_id: str, name: str) -> None:
        _pool(ioctx).trash_restore(image_id, name)

    def trash_purge(self, ioctx: Ioctx, expire_ts: _dt.datetime | None = None, threshold: float = -1) -> None:
        _pool(ioctx).trash_purge(expire_before=expire_ts,
                                 threshold=None if threshold is None or threshold < 0 else threshold)

    # -- groups ----------------------------------------------------------------------------
    def group_create(self, ioctx: Ioctx, name: str) -> None:
        _pool(ioctx).group_create(name)

    def group_remove(self, ioctx: Ioctx, name: str) -> None:
        _pool(ioctx).group_remove(name)

    def group_rename(self, ioctx: Ioctx, src: str, dest: str) -> None:
        try:
            _pool(ioctx).group_rename(src, dest)
        except (ObjectNotFound, ObjectExists) as e:
            # python-rbd maps this call with the image table.
            raise make_ex(e.errno or _errno.EIO, "error renaming group") from e

    def group_list(self, ioctx: Ioctx) -> List[str]:
        return _pool(ioctx).group_list()

    # -- namespaces and pool metadata ------------------------------------------------------
    def namespace_create(self, ioctx: Ioctx, name: str) -> None:
        _pool(ioctx).namespace_create(name)

    def namespace_remove(self, ioctx: Ioctx, name: str) -> None:
        _pool(ioctx).namespace_remove(name)

    def namespace_exists(self, ioctx: Ioctx, name: str) -> bool:
        return _pool(ioctx).namespace_exists(name)

    def namespace_list(self, ioctx: Ioctx) -> List[str]:
        return _pool(ioctx).namespace_list()

    def pool_metadata_get(self, ioctx: Ioctx, key: str) -> str:
        return _pool(ioctx).pool_metadata_get(key)

    def pool_metadata_set(self, ioctx: Ioctx, key: str, value: str) -> None:
        _pool(ioctx).pool_metadata_set(key, value)

    def pool_metadata_remove(self, ioctx: Ioctx, key: str) -> None:
        _pool(ioctx).pool_metadata_remove(key)

    def pool_metadata_list(self, ioctx: Ioctx) -> Iterator[tuple[str, str]]:
        return iter(list(_pool(ioctx).pool_metadata_list().items()))


class Image:
    """An open image (python-rbd's ``rbd.Image``; a context manager)."""

    def __init__(self, ioctx: Ioctx, name: str | None = None, snapshot: str | None = None,
                 read_only: bool = False, image_id: str | None = None, _oncomplete: Any = None) -> None:
        if _oncomplete is not None:
            raise NotImplementedError("rbd_core.compat.rbd: asynchronous open is not supported")
        if (name is None) == (image_id is None):
            raise InvalidArgument("either image_name or image_id must be specified")
        pool = _pool(ioctx)
        self._closed = True
        img: rbd_core.Image
        if image_id is not None:
            img = pool.open_by_id(image_id, read_only=read_only)
            if snapshot is not None:
                self._set_snap_or_close(img, snapshot)
        elif read_only:
            assert name is not None
            img = pool.open(name, snapshot=snapshot, read_only=True)
        else:
            assert name is not None
            # A writable handle at the snapshot, as rbd_open does: set_snap(None) makes it
            # write to the head again.
            img = pool.open(name)
            if snapshot is not None:
                self._set_snap_or_close(img, snapshot)
        self._img: rbd_core.Image = img
        self._ioctx = ioctx
        self.name = img.name
        self._closed = False

    @staticmethod
    def _set_snap_or_close(img: rbd_core.Image, snapshot: str) -> None:
        try:
            img.set_snap(snapshot)
        except BaseException:
            img.close()
            raise

    def _check(self) -> None:
        if self._closed:
            raise InvalidArgument("image is closed")

    @property
    def _i(self) -> rbd_core.Image:
        self._check()
        return self._img

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._img.close()

    def __enter__(self) -> "Image":
        return self

    def __exit__(self, type_: type[BaseException] | None, value: BaseException | None,
                 traceback_: TracebackType | None) -> Literal[False]:
        self.close()
        return False

    def __repr__(self) -> str:
        return f"rbd.Image(ioctx, {self.name!r})"

    # -- info ------------------------------------------------------------------------------
    def get_name(self) -> str:
        self._check()
        return self.name

    def id(self) -> str:
        return self._i.id()

    def size(self) -> int:
        return self._i.size()

    def stat(self) -> dict[str, Any]:
        s = self._i.stat()
        # Pacific's rbd_stat no longer fills the deprecated parent fields.
        return {"size": s.size, "obj_size": s.obj_size, "num_objs": s.num_objs, "order": s.order,
                "block_name_prefix": s.block_name_prefix, "parent_pool": _UINT64_MAX,
                "parent_name": b""}

    def block_name_prefix(self) -> str:
        return self._i.stat().block_name_prefix

    def features(self) -> int:
        return self._i.features()

    def update_features(self, features: int, enabled: bool) -> None:
        self._i.update_features(features, bool(enabled))

    def op_features(self) -> int:
        return self._i.op_features()

    def flags(self) -> int:
        return self._i.flags()

    def old_format(self) -> bool:
        self._check()
        return False

    def overlap(self) -> int:
        return self._i.overlap()

    def stripe_unit(self) -> int:
        return self._i.stripe_unit()

    def stripe_count(self) -> int:
        return self._i.stripe_count()

    def data_pool_id(self) -> int:
        return self._i.data_pool_id()

    def group(self) -> dict[str, Any]:
        g = self._i.group()
        return {"pool": g.pool, "name": g.name} if g is not None else {"pool": -1, "name": ""}

    # -- I/O -------------------------------------------------------------------------------
    def read(self, offset: int, length: int, fadvise_flags: int = 0) -> bytes:
        return self._i.read(offset, length, fadvise_flags)

    def write(self, data: bytes, offset: int, fadvise_flags: int = 0) -> int:
        if not isinstance(data, bytes):
            raise TypeError("data must be a byte string")
        return self._i.write(data, offset, fadvise_flags)

    def discard(self, offset: int, length: int) -> None:
        self._i.discard(offset, length)

    def write_zeroes(self, offset: int, length: int, zero_flags: int = 0) -> None:
        self._i.write_zeroes(offset, length, bool(zero_flags & RBD_WRITE_ZEROES_FLAG_THICK_PROVISION))

    def flush(self) -> None:
        self._i.flush()

    def invalidate_cache(self) -> None:
        self._i.invalidate_cache()

    def resize(self, size: int, allow_shrink: bool = True) -> None:
        img = self._i
        if not allow_shrink and size < img.size():
            raise InvalidArgument("RBD invalid argument (error allow_shrink is False but old_size > new_size)")
        img.resize(size, allow_shrink=allow_shrink)

    def sparsify(self, sparse_size: int) -> None:
        self._i.sparsify(sparse_size)

    # -- snapshots -------------------------------------------------------------------------
    def create_snap(self, name: str, flags: int = 0) -> None:
        self._i.snap_create(name, flags=flags)

    def remove_snap(self, name: str) -> None:
        self._i.snap_remove(name)

    def remove_snap2(self, name: str, flags: int) -> None:
        self._i.snap_remove(name, flags=flags)

    def remove_snap_by_id(self, snap_id: int) -> None:
        self._i.snap_remove_by_id(snap_id)

    def rename_snap(self, srcname: str, dstname: str) -> None:
        self._i.snap_rename(srcname, dstname)

    def protect_snap(self, name: str) -> None:
        self._i.snap_protect(name)

    def unprotect_snap(self, name: str) -> None:
        self._i.snap_unprotect(name)

    def is_protected_snap(self, name: str) -> bool:
        return self._i.snap_is_protected(name)

    def snap_exists(self, name: str) -> bool:
        return self._i.snap_exists(name)

    def snap_get_id(self, snap_name: str) -> int:
        return self._i.snap_id(snap_name)

    def snap_get_name(self, snap_id: int) -> str:
        return self._i.snap_name(snap_id)

    def get_snap_timestamp(self, snap_id: int) -> _dt.datetime | None:
        for s in self._i.snapshots():
            if s.id == snap_id:
                return _naive_utc(s.timestamp)
        raise ImageNotFound(f"error getting snapshot timestamp for image: {self.name}, snap_id: {snap_id}",
                            errno=_errno.ENOENT)

    def get_snap_limit(self) -> int:
        limit = self._i.snap_limit()
        return _UINT64_MAX if limit is None else limit

    def set_snap_limit(self, limit: int) -> int:
        self._i.snap_set_limit(limit)
        return 0

    def remove_snap_limit(self) -> int:
        self._i.snap_remove_limit()
        return 0

    def list_snaps(self) -> Iterator[dict[str, Any]]:
        out = []
        for s in self._i.snapshots():
            d: dict[str, Any] = {"id": s.id, "size": s.size, "name": s.name, "namespace": s.namespace_type}
            if s.group is not None:
                d["group"] = {"pool": s.group.pool, "name": s.group.group, "snap_name": s.group.snap}
            if s.namespace == rbd_core.SnapNamespace.Trash:
                d["trash"] = {"original_name": s.trash_original_name or ""}
            out.append(d)
        return iter(out)

    def set_snap(self, name: str | None) -> None:
        self._i.set_snap(name)

    def set_snap_by_id(self, snap_id: int | None) -> None:
        self._i.set_snap_by_id(snap_id)

    def rollback_to_snap(self, name: str) -> None:
        self._i.snap_rollback(name)

    # -- layering --------------------------------------------------------------------------
    def _parent(self) -> rbd_core.ParentInfo:
        p = self._i.parent()
        if p is None:
            raise ImageNotFound(f"error getting parent info for image {self.name}", errno=_errno.ENOENT)
        return p

    def parent_info(self) -> tuple[str, str, str]:
        p = self._parent()
        return p.pool, p.image, p.snap

    def parent_id(self) -> str:
        return self._parent().image_id

    def get_parent_image_spec(self) -> dict[str, str]:
        p = self._parent()
        return {"pool_name": p.pool, "pool_namespace": p.pool_namespace, "image_name": p.image,
                "snap_name": p.snap}

    def list_children(self) -> list[tuple[str, str]]:
        return [(c.pool, c.image) for c in self._i.children()]

    @staticmethod
    def _child_dicts(children: list[rbd_core.ChildInfo]) -> Iterator[dict[str, Any]]:
        return iter([{"pool": c.pool, "pool_namespace": c.pool_namespace, "image": c.image,
                      "id": c.image_id, "trash": c.trash} for c in children])

    def list_children2(self) -> Iterator[dict[str, Any]]:
        return self._child_dicts(self._i.children())

    def list_descendants(self) -> Iterator[dict[str, Any]]:
        return self._child_dicts(self._i.descendants())

    def flatten(self, on_progress: Callable[[int, int], Any] | None = None) -> None:
        _Progress(on_progress).run(self._i.flatten)

    def copy(self, dest_ioctx: Ioctx, dest_name: str, features: int | None = None,
             order: int | None = None, stripe_unit: int | None = None,
             stripe_count: int | None = None, data_pool: str | None = None) -> None:
        self._i.copy_to(_pool(dest_ioctx), dest_name, order=order, features=features,
                        stripe_unit=stripe_unit, stripe_count=stripe_count, data_pool=data_pool)

    def deep_copy(self, dest_ioctx: Ioctx, dest_name: str, features: int | None = None,
                  order: int | None = None, stripe_unit: int | None = None,
                  stripe_count: int | None = None, data_pool: str | None = None) -> None:
        self._i.deep_copy_to(_pool(dest_ioctx), dest_name, order=order, features=features,
                             stripe_unit=stripe_unit, stripe_count=stripe_count, data_pool=data_pool)

    # -- diff ------------------------------------------------------------------------------
    def diff_iterate(self, offset: int, length: int, from_snapshot: str | None,
                     iterate_cb: Callable[[int, int, bool], Any], include_parent: bool = True,
                     whole_object: bool = False) -> None:
        ret: list[int] = []

        def cb(e: rbd_core.DiffExtent) -> bool | None:
            r = iterate_cb(e.offset, e.length, e.exists)
            if isinstance(r, int) and not isinstance(r, bool) and r < 0:
                ret.append(r)
                return False
            return None

        self._i.diff_iterate(cb, from_snap=from_snapshot, offset=offset, length=length,
                             include_parent=include_parent, whole_object=whole_object)
        if ret:
            raise make_ex(ret[0], f"error generating diff from snapshot {from_snapshot}")

    # -- managed lock ----------------------------------------------------------------------
    def lock_acquire(self, lock_mode: int) -> None:
        img = self._i
        if lock_mode != RBD_LOCK_MODE_EXCLUSIVE:
            raise OperationNotSupported("error acquiring lock on image", errno=_errno.EOPNOTSUPP)
        img.lock_acquire()

    def lock_release(self) -> None:
        self._i.lock_release()

    def lock_get_owners(self) -> Iterator[dict[str, Any]]:
        return iter([{"mode": int(o.mode), "owner": o.owner} for o in self._i.lock_owners()])

    def lock_break(self, lock_mode: int, lock_owner: str) -> None:
        mode = rbd_core.LockMode.Shared if lock_mode == RBD_LOCK_MODE_SHARED else rbd_core.LockMode.Exclusive
        self._i.lock_break(mode, lock_owner)

    def is_exclusive_lock_owner(self) -> bool:
        return self._i.is_exclusive_lock_owner()

    # -- advisory locks --------------------------------------------------------------------
    def lock_exclusive(self, cookie: str) -> None:
        self._i.lock_exclusive(cookie)

    def lock_shared(self, cookie: str, tag: str) -> None:
        self._i.lock_shared(cookie, tag)

    def unlock(self, cookie: str) -> None:
        self._i.unlock(cookie)

    def break_lock(self, client: str, cookie: str) -> None:
        self._i.break_lock(client, cookie)

    def list_lockers(self) -> list[Any] | dict[str, Any]:
        lk = self._i.list_lockers()
        if not lk.lockers:
            return []
        return {"tag": lk.tag, "exclusive": lk.exclusive,
                "lockers": [(x.client, x.cookie, x.addr) for x in lk.lockers]}

    def watchers_list(self) -> Iterator[dict[str, Any]]:
        return iter([{"addr": w.addr, "id": w.id, "cookie": w.cookie} for w in self._i.watchers()])

    # -- metadata and config ---------------------------------------------------------------
    def metadata_get(self, key: str) -> str:
        return self._i.metadata_get(key)

    def metadata_set(self, key: str, value: str) -> None:
        self._i.metadata_set(key, value)

    def metadata_remove(self, key: str) -> None:
        self._i.metadata_remove(key)

    def metadata_list(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._i.metadata_list().items()))

    def config_list(self) -> Iterator[dict[str, Any]]:
        return iter([{"name": c.name, "value": c.value, "source": int(c.source)}
                     for c in self._i.config_list()])


class Group:
    """A consistency group (python-rbd's ``rbd.Group``; a context manager)."""

    def __init__(self, ioctx: Ioctx, name: str) -> None:
        self.name = name
        self._group = _pool(ioctx).group(name)

    def __enter__(self) -> "Group":
        return self

    def __exit__(self, type_: type[BaseException] | None, value: BaseException | None,
                 traceback_: TracebackType | None) -> Literal[False]:
        return False

    def add_image(self, image_ioctx: Ioctx, image_name: str) -> None:
        self._group.add_image(_pool(image_ioctx), image_name)

    def remove_image(self, image_ioctx: Ioctx, image_name: str) -> None:
        self._group.remove_image(_pool(image_ioctx), image_name)

    def list_images(self) -> Iterator[dict[str, Any]]:
        return iter([{"name": g.name, "pool": g.pool, "state": int(g.state)} for g in self._group.images()])

    def create_snap(self, snap_name: str, flags: int = 0) -> None:
        self._group.snap_create(snap_name, flags=flags)

    def remove_snap(self, snap_name: str) -> None:
        self._group.snap_remove(snap_name)

    def rename_snap(self, old_snap_name: str, new_snap_name: str) -> None:
        self._group.snap_rename(old_snap_name, new_snap_name)

    def list_snaps(self) -> Iterator[dict[str, Any]]:
        return iter([{"name": s.name, "state": int(s.state)} for s in self._group.snaps()])

    def rollback_to_snap(self, name: str) -> None:
        self._group.snap_rollback(name)
