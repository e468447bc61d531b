"""Exceptions, with python-rbd's names and errnos so `except rbd.ImageNotFound` translates 1:1."""
from __future__ import annotations

import errno as _errno


class Error(Exception):
    """Root of every rbd_core exception."""


class OSError(Error):  # noqa: A001 - python-rbd's name
    """An error with an errno (python-rbd's ``rbd.OSError``)."""

    def __init__(self, message: str = "", errno: int | None = None, kind: str | None = None,
                 op: str | None = None, target: str | None = None) -> None:
        super().__init__(message)
        self.errno = errno
        self.kind = kind
        self.op = op
        self.target = target

    def __str__(self) -> str:
        msg = super().__str__()
        return f"[errno {self.errno}] {msg}" if self.errno is not None else msg


class PermissionError(OSError):  # noqa: A001
    """EPERM/EACCES."""


class ImageNotFound(OSError):
    """ENOENT."""


class ObjectNotFound(ImageNotFound):
    """ENOENT from group calls (python-rbd's name)."""


class ImageExists(OSError):
    """EEXIST."""


class ObjectExists(ImageExists):
    """EEXIST from group calls."""


class IOError(OSError):  # noqa: A001
    """EIO."""


class NoSpace(OSError):
    """ENOSPC."""


class IncompleteWriteError(OSError):
    """A short write."""


class InvalidArgument(OSError):
    """EINVAL."""


class LogicError(Error):
    """Misuse of the API."""


class ReadOnlyImage(OSError):
    """EROFS: read-only handle, or another client holds the exclusive lock."""


class ImageBusy(OSError):
    """EBUSY."""


class ImageHasSnapshots(OSError):
    """ENOTEMPTY."""


class FunctionNotSupported(OSError):
    """ENOSYS."""


class ArgumentOutOfRange(OSError):
    """EDOM."""


class ConnectionShutdown(OSError):
    """ESHUTDOWN: this client was blocklisted (fenced)."""


class Timeout(OSError):
    """ETIMEDOUT."""


class DiskQuotaExceeded(OSError):
    """EDQUOT."""


class OperationNotSupported(OSError):
    """EOPNOTSUPP."""


class OperationCanceled(OSError):
    """ECANCELED."""


class MalformedStream(InvalidArgument):
    """A diff stream or URL could not be parsed (EBADMSG)."""


_BY_KIND = {
    "NotFound": ImageNotFound,
    "Exists": ImageExists,
    "Busy": ImageBusy,
    "HasSnapshots": ImageHasSnapshots,
    "ReadOnly": ReadOnlyImage,
    "PermissionDenied": PermissionError,
    "InvalidArgument": InvalidArgument,
    "OutOfRange": ArgumentOutOfRange,
    "NoSpace": NoSpace,
    "QuotaExceeded": DiskQuotaExceeded,
    "Timeout": Timeout,
    "Shutdown": ConnectionShutdown,
    "Cancelled": OperationCanceled,
    "Malformed": MalformedStream,
    "Io": IOError,
}

_BY_ERRNO = {
    _errno.ENOSYS: FunctionNotSupported,
    _errno.EOPNOTSUPP: OperationNotSupported,
}


def _make(kind: str, errno: int, message: str, op: str, target: str | None) -> OSError:
    """Called by the native module to build the exception for a Rust error."""
    cls = _BY_ERRNO.get(errno) or _BY_KIND.get(kind, OSError)
    return cls(message, errno=errno, kind=kind, op=op, target=target)


__all__ = [n for n, v in list(globals().items()) if isinstance(v, type) and issubclass(v, BaseException)]
