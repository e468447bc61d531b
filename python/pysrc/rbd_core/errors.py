"""Exceptions, with python-rbd's names and errnos so `except rbd.ImageNotFound` translates 1:1."""
from __future__ import annotations

import errno as _errno
from typing import cast


class Error(Exception):
    """Root of every rbd_core exception."""


class OSError(Error):  # noqa: A001 - python-rbd's name
    """An error with an errno (python-rbd's ``rbd.OSError``)."""

    def __init__(self, message: str = "", errno: int | None = None, kind: str | None = None,
                 op: str | None = None, target: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        #: The positive errno (None for errors raised by argument checks).
        self.errno = errno
        #: The rbd-core ``ErrorKind`` name (``"NotFound"``, ``"Busy"``, ...).
        self.kind = kind
        #: The C call or operation that failed (``"rbd_open"``).
        self.op = op
        #: ``pool/[namespace/]image[@snap]`` the operation acted on, when known.
        self.target = target
        #: The extra message (for ``mon_command``: the monitor's status string).
        self.detail = detail

    def __str__(self) -> str:
        msg = super().__str__()
        return f"[errno {self.errno}] {msg}" if self.errno is not None else msg


class PermissionError(OSError):  # noqa: A001
    """EPERM/EACCES."""


class ImageNotFound(OSError):
    """ENOENT."""


class ObjectNotFound(ImageNotFound):
    """ENOENT from group calls (python-rbd's name; also an ImageNotFound here)."""


class ImageExists(OSError):
    """EEXIST."""


class ObjectExists(ImageExists):
    """EEXIST from group calls (also an ImageExists here)."""


class IOError(OSError):  # noqa: A001
    """EIO."""


class NoSpace(OSError):
    """ENOSPC."""


class IncompleteWriteError(OSError):
    """A short write."""


class InvalidArgument(OSError):
    """EINVAL."""


class LogicError(OSError):
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


class StepFailed(Error):
    """A step of a recipe failed (after its completed steps were undone).

    Raised errors are instances of both the kind's class (``ImageNotFound``, ...) and this
    class, so either ``except`` clause catches them.
    """

    #: The recipe name.
    recipe: str
    #: The step that failed.
    step: str
    #: Exceptions met while undoing the completed steps (empty when the undo was clean).
    undo_errors: list[Error]


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


_BY_ERRNO_GROUP = {
    _errno.ENOENT: ObjectNotFound,
    _errno.EEXIST: ObjectExists,
}

_STEP_CLASSES: dict[type, type] = {}


def _step_class(cls: type[OSError]) -> type[OSError]:
    """``cls`` combined with StepFailed (one class per kind, created on first use)."""
    combined = _STEP_CLASSES.get(cls)
    if combined is None:
        combined = type(cls.__name__, (cls, StepFailed), {
            "__module__": __name__,
            "__qualname__": f"StepFailed[{cls.__name__}]",
            "__doc__": f"{cls.__name__} raised by a recipe step (also a StepFailed).",
        })
        _STEP_CLASSES[cls] = combined
    return combined


def _make(kind: str, errno: int, text: str, op: str, target: str | None, *,
          message: str | None = None, group: bool = False, recipe: str | None = None,
          step: str | None = None, undo_errors: list[Error] | None = None) -> OSError:
    """Called by the native module to build the exception for a Rust error.

    ``group`` selects python-rbd's group errno table (ENOENT → ObjectNotFound, EEXIST →
    ObjectExists). With ``recipe``/``step`` the instance is also a StepFailed.
    """
    cls = (group and _BY_ERRNO_GROUP.get(errno)) or _BY_ERRNO.get(errno) or _BY_KIND.get(kind, OSError)
    if recipe is not None:
        cls = _step_class(cls)
    exc = cls(text, errno=errno, kind=kind, op=op, target=target, detail=message)
    if recipe is not None:
        failed = cast(StepFailed, exc)
        failed.recipe = recipe
        failed.step = step or ""
        failed.undo_errors = list(undo_errors or [])
    return exc


__all__ = [n for n, v in list(globals().items()) if isinstance(v, type) and issubclass(v, BaseException)]
