"""A python-rados compatible subset over rbd_core: ``Rados`` (connect, fsid, config, pools,
monitor commands, cluster stats) and ``Ioctx`` (small-object I/O).

Differences from python-rados (Pacific):

* ``conf_get`` before ``connect`` only sees values set with ``conf``/``conf_set`` (the conf
  file is read when connecting) and returns None for others.
* ``conf_set`` after ``connect`` changes the running client (``rados_conf_set``), as
  python-rados does; ``clustername`` is given to librados (``$cluster``); ``mon_command``
  takes python-rados' ``timeout`` (ignored, as there) and ``target`` (a monitor's name or rank).
* No object listing iterators with locators, xattrs, omap, aio, snapshots or watch/notify:
  RBD services keep images in librbd and at most a few metadata objects in RADOS.
"""
from __future__ import annotations

import errno as _errno
import time
from types import TracebackType
from typing import Any, Iterator, Literal

import rbd_core
from rbd_core import errors as _errors

__all__ = [
    "Rados", "Ioctx", "Object", "Error", "OSError", "InvalidArgumentError", "LogicError",
    "RadosStateError", "IoctxStateError", "ObjectStateError", "InProgress", "IsConnected",
    "ExtendMismatch", "PermissionError", "PermissionDeniedError", "ObjectNotFound", "NoData",
    "ObjectExists", "ObjectBusy", "IOError", "NoSpace", "InterruptedOrTimeoutError", "TimedOut",
    "ConnectionShutdown", "NotConnected", "LIBRADOS_ALL_NSPACES",
]

#: Namespace value meaning "every namespace" (python-rados' constant).
LIBRADOS_ALL_NSPACES = "\001"


class Error(Exception):
    """`rados.Error` is base class for all RADOS exceptions."""

    def __init__(self, message: str = "", errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno

    def __str__(self) -> str:
        msg = super().__str__()
        return f"[errno {self.errno}] {msg}" if self.errno is not None else msg


class OSError(Error):  # noqa: A001 - python-rados' name
    """An error with an errno."""


class InvalidArgumentError(Error):
    """EINVAL."""


class LogicError(Error):
    """Misuse of the API."""


class RadosStateError(Error):
    """The Rados handle is not in a state that allows the call."""


class IoctxStateError(Error):
    """The Ioctx is closed."""


class ObjectStateError(Error):
    """The object handle is not valid."""


class InProgress(Error):
    """EINPROGRESS."""


class IsConnected(Error):
    """EISCONN."""


class ExtendMismatch(Error):
    """Compare-and-write mismatch."""


class PermissionError(OSError):  # noqa: A001
    """EPERM."""


class PermissionDeniedError(OSError):
    """EACCES."""


class ObjectNotFound(OSError):
    """ENOENT."""


class NoData(OSError):
    """ENODATA."""


class ObjectExists(OSError):
    """EEXIST."""


class ObjectBusy(OSError):
    """EBUSY."""


class IOError(OSError):  # noqa: A001
    """EIO."""


class NoSpace(OSError):
    """ENOSPC."""


class InterruptedOrTimeoutError(OSError):
    """EINTR."""


class TimedOut(OSError):
    """ETIMEDOUT."""


class ConnectionShutdown(OSError):
    """ESHUTDOWN."""


class NotConnected(OSError):
    """ENOTCONN."""


_BY_ERRNO: dict[int, type[Error]] = {
    _errno.EPERM: PermissionError,
    _errno.ENOENT: ObjectNotFound,
    _errno.EIO: IOError,
    _errno.ENOSPC: NoSpace,
    _errno.EEXIST: ObjectExists,
    _errno.EBUSY: ObjectBusy,
    _errno.ENODATA: NoData,
    _errno.EINTR: InterruptedOrTimeoutError,
    _errno.ETIMEDOUT: TimedOut,
    _errno.EACCES: PermissionDeniedError,
    _errno.EINPROGRESS: InProgress,
    _errno.EISCONN: IsConnected,
    _errno.EINVAL: InvalidArgumentError,
    _errno.ENOTCONN: NotConnected,
    _errno.ESHUTDOWN: ConnectionShutdown,
}


def make_ex(ret: int, msg: str) -> Error:
    """The python-rados exception for return code ``ret`` (python-rados' ``make_ex``)."""
    ret = abs(ret)
    return _BY_ERRNO.get(ret, OSError)(msg, errno=ret)


def _translate(e: _errors.OSError, msg: str) -> Error:
    return make_ex(e.errno or _errno.EIO, f"{msg}: {e}")


class Rados:
    """A cluster handle: configure, then ``connect()`` (or use it as a context manager, which
    connects on entry and shuts down on exit)."""

    def __init__(self, rados_id: str | None = None, name: str | None = None,
                 clustername: str | None = None, conf_defaults: dict[str, str] | None = None,
                 conffile: str | None = None, conf: dict[str, str] | None = None,
                 flags: int = 0, context: Any = None) -> None:
        if rados_id is not None and name is not None:
            raise Error("Rados(): can't supply both rados_id and name")
        if name is not None:
            client_id = name[len("client."):] if name.startswith("client.") else name
        else:
            client_id = rados_id or "admin"
        self.rados_id = client_id
        #: The cluster name given to librados (``$cluster``; default ``ceph``).
        self.clustername = clustername or "ceph"
        self.conffile: str | None = conffile or None
        self._overrides: dict[str, str] = {}
        for src in (conf_defaults, conf):
            for k, v in (src or {}).items():
                self._overrides[str(k)] = str(v)
        self._cluster: rbd_core.Cluster | None = None
        self.state = "configuring"

    # -- state -----------------------------------------------------------------------------
    def require_state(self, *args: str) -> None:
        if self.state not in args:
            raise RadosStateError(
                f"You cannot perform that operation on a Rados object in state {self.state}.")

    @property
    def _c(self) -> rbd_core.Cluster:
        self.require_state("connected")
        assert self._cluster is not None
        return self._cluster

    # -- configuration ---------------------------------------------------------------------
    def conf_read_file(self, path: str | None = None) -> None:
        """Uses ``path`` as the conf file (read when connecting)."""
        self.require_state("configuring", "connected")
        self.conffile = path

    def conf_parse_env(self, var: str = "CEPH_ARGS") -> None:
        """Accepted for compatibility (CEPH_ARGS is not parsed)."""
        self.require_state("configuring", "connected")

    def conf_set(self, option: str, val: str) -> None:
        """Sets ``option``: before ``connect`` it is applied when connecting; on a connected
        handle it changes the running client (``rados_conf_set``), as in python-rados."""
        self.require_state("configuring", "connected")
        if self.state == "connected":
            try:
                self._c.conf_set(str(option), str(val))
            except _errors.OSError as e:
                raise _translate(e, "error calling conf_set") from e
        self._overrides[str(option)] = str(val)

    def conf_get(self, option: str) -> str | None:
        """The value of ``option`` (None when unknown)."""
        self.require_state("configuring", "connected")
        if self.state == "configuring":
            return self._overrides.get(option)
        try:
            return self._c.conf_get(option)
        except _errors.ImageNotFound:
            return None
        except _errors.OSError as e:
            raise _translate(e, "error calling conf_get") from e

    # -- connection ------------------------------------------------------------------------
    def connect(self, timeout: int = 0) -> None:
        """Connects (``timeout`` seconds, 0 = the library default)."""
        self.require_state("configuring")
        try:
            self._cluster = rbd_core.Cluster(
                conffile=self.conffile, client_id=self.rados_id, conf=dict(self._overrides),
                timeout=float(timeout) if timeout else None, shared=False, cluster_name=self.clustername)
        except _errors.OSError as e:
            raise _translate(e, "error connecting to the cluster") from e
        self.state = "connected"

    def shutdown(self) -> None:
        """Disconnects (the connection ends once no Ioctx or Image uses it)."""
        if self.state != "shutdown":
            self._cluster = None
            self.state = "shutdown"

    def __enter__(self) -> "Rados":
        self.connect()
        return self

    def __exit__(self, type_: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> Literal[False]:
        self.shutdown()
        return False

    # -- cluster ---------------------------------------------------------------------------
    def get_fsid(self) -> str:
        try:
            return self._c.fsid()
        except _errors.OSError as e:
            raise _translate(e, "error getting cluster fsid") from e

    def get_instance_id(self) -> int:
        return self._c.instance_id

    def get_cluster_stats(self) -> dict[str, int]:
        """``{kb, kb_used, kb_avail, num_objects}``."""
        try:
            s = self._c.stats()
        except _errors.OSError as e:
            raise _translate(e, "Rados.get_cluster_stats") from e
        return {"kb": s.total_bytes // 1024, "kb_used": s.used_bytes // 1024,
                "kb_avail": s.avail_bytes // 1024, "num_objects": s.num_objects}

    def list_pools(self) -> list[str]:
        try:
            return self._c.pool_list()
        except _errors.OSError as e:
            raise _translate(e, "error listing pools") from e

    def pool_exists(self, pool_name: str) -> bool:
        return pool_name in self.list_pools()

    def mon_command(self, cmd: str, inbuf: bytes, timeout: int = 0,
                    target: str | int | None = None) -> tuple[int, bytes, str]:
        """Sends a JSON command to the monitors, or to monitor ``target`` (name or rank):
        ``(ret, outbuf, outs)``; a failure is a negative ``ret`` (no exception), as in
        python-rados. ``timeout`` is ignored, as python-rados does (the C API has none)."""
        try:
            out, status = self._c.mon_command(cmd, inbuf, target=target)
        except _errors.OSError as e:
            return -(e.errno or _errno.EIO), b"", e.detail or ""
        return 0, out, status

    def open_ioctx(self, ioctx_name: str) -> "Ioctx":
        """Opens pool ``ioctx_name`` (ObjectNotFound when it does not exist)."""
        try:
            pool = self._c.open_pool(ioctx_name)
        except _errors.OSError as e:
            raise _translate(e, f"error opening pool '{ioctx_name}'") from e
        return Ioctx(self, ioctx_name, pool)

    def version(self) -> tuple[int, int, int]:
        """The librbd version (librados' matches on a distribution install)."""
        return rbd_core.librbd_version()


class Object:
    """An object name from ``Ioctx.list_objects``."""

    def __init__(self, ioctx: "Ioctx", key: str, nspace: str = "") -> None:
        self.ioctx = ioctx
        self.key = key
        self.nspace = nspace
        self.locator = None

    def __repr__(self) -> str:
        return f"rados.Object(ioctx={self.ioctx.name},key={self.key},nspace={self.nspace},locator=None)"


class Ioctx:
    """An open pool (context manager). Carries the pool for ``rbd.RBD``/``rbd.Image`` calls."""

    def __init__(self, rados: Rados, name: str, pool: rbd_core.Pool) -> None:
        self.rados = rados
        self.name = name
        self._pool_handle: rbd_core.Pool | None = pool
        self.state = "open"

    # -- state -----------------------------------------------------------------------------
    def require_ioctx_open(self) -> None:
        if self.state != "open":
            raise IoctxStateError("The pool is closed")

    @property
    def _pool(self) -> rbd_core.Pool:
        """The rbd_core Pool (used by the rbd compat module)."""
        self.require_ioctx_open()
        assert self._pool_handle is not None
        return self._pool_handle

    def close(self) -> None:
        if self.state == "open":
            self._pool_handle = None
            self.state = "closed"

    def __enter__(self) -> "Ioctx":
        return self

    def __exit__(self, type_: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> Literal[False]:
        self.close()
        return False

    # -- pool facts ------------------------------------------------------------------------
    def get_pool_name(self) -> str:
        return self._pool.name

    def get_pool_id(self) -> int:
        return self._pool.id

    def set_namespace(self, nspace: str) -> None:
        """Selects the RADOS/RBD namespace for later calls ("" = default)."""
        self._pool_handle = self._pool.with_namespace(nspace or "")

    def get_namespace(self) -> str:
        return self._pool.namespace

    # -- objects ---------------------------------------------------------------------------
    def read(self, key: str, length: int = 8192, offset: int = 0) -> bytes:
        try:
            return self._pool.object_read(key, length, offset)
        except _errors.OSError as e:
            raise _translate(e, f"Ioctx.read({self.name}): failed to read {key}") from e

    def write(self, key: str, data: bytes, offset: int = 0) -> int:
        if not isinstance(data, bytes):
            raise TypeError("data must be bytes")
        try:
            self._pool.object_write(key, data, offset)
        except _errors.OSError as e:
            raise _translate(e, f"Ioctx.write({self.name}): failed to write {key}") from e
        return 0

    def write_full(self, key: str, data: bytes) -> int:
        if not isinstance(data, bytes):
            raise TypeError("data must be bytes")
        try:
            self._pool.object_write_full(key, data)
        except _errors.OSError as e:
            raise _translate(e, f"Ioctx.write_full({self.name}): failed to write {key}") from e
        return 0

    def stat(self, key: str) -> tuple[int, time.struct_time]:
        """``(size, mtime as time.struct_time in local time)``."""
        try:
            st = self._pool.object_stat(key)
        except _errors.OSError as e:
            raise _translate(e, f"Failed to stat '{key}'") from e
        return st.size, time.localtime(st.mtime_epoch)

    def remove_object(self, key: str) -> bool:
        try:
            self._pool.object_remove(key)
        except _errors.OSError as e:
            raise _translate(e, f"Failed to remove '{key}'") from e
        return True

    def list_objects(self) -> Iterator[Object]:
        try:
            names = self._pool.object_list()
        except _errors.OSError as e:
            raise _translate(e, "error listing objects") from e
        ns = self._pool.namespace
        return iter([Object(self, n, ns) for n in names])
