"""The exception hierarchy (python-rbd's names and errnos) and recipe errors (StepFailed)."""
import errno

import pytest

import rbd_core
from rbd_core import _native, errors


def test_hierarchy_matches_python_rbd():
    for name in ("ImageNotFound", "ImageExists", "ImageBusy", "ImageHasSnapshots", "ReadOnlyImage",
                 "PermissionError", "InvalidArgument", "ArgumentOutOfRange", "NoSpace", "DiskQuotaExceeded",
                 "Timeout", "ConnectionShutdown", "FunctionNotSupported", "OperationNotSupported",
                 "OperationCanceled", "IOError", "IncompleteWriteError", "LogicError"):
        cls = getattr(rbd_core, name)
        assert issubclass(cls, rbd_core.OSError) and issubclass(cls, rbd_core.Error), name
    assert issubclass(rbd_core.ObjectNotFound, rbd_core.ImageNotFound)
    assert issubclass(rbd_core.ObjectExists, rbd_core.ImageExists)
    e = rbd_core.ImageNotFound("gone", errno=2)
    assert str(e) == "[errno 2] gone" and e.errno == 2


@pytest.mark.parametrize("code,cls", [
    (errno.ENOENT, rbd_core.ImageNotFound), (errno.EEXIST, rbd_core.ImageExists), (errno.EBUSY, rbd_core.ImageBusy),
    (errno.ENOTEMPTY, rbd_core.ImageHasSnapshots), (errno.EROFS, rbd_core.ReadOnlyImage),
    (errno.EPERM, rbd_core.PermissionError), (errno.EINVAL, rbd_core.InvalidArgument),
    (errno.EDOM, rbd_core.ArgumentOutOfRange), (errno.ENOSPC, rbd_core.NoSpace),
    (errno.EDQUOT, rbd_core.DiskQuotaExceeded), (errno.ETIMEDOUT, rbd_core.Timeout),
    (errno.ESHUTDOWN, rbd_core.ConnectionShutdown), (errno.ENOSYS, rbd_core.FunctionNotSupported),
    (errno.EOPNOTSUPP, rbd_core.OperationNotSupported), (errno.ECANCELED, rbd_core.OperationCanceled),
    (errno.EIO, rbd_core.IOError), (errno.EMLINK, rbd_core.OSError),
])
def test_errno_table(code, cls):
    with pytest.raises(rbd_core.Error) as ei:
        _native._raise_test_error(code)
    assert type(ei.value).__name__ == cls.__name__
    assert isinstance(ei.value, cls) and ei.value.errno == code


def test_recipe_errors_carry_step_and_undo_errors():
    with pytest.raises(rbd_core.ImageNotFound) as ei:
        _native._raise_test_error(errno.ENOENT, [errno.EBUSY, errno.EIO])
    e = ei.value
    assert isinstance(e, rbd_core.StepFailed) and isinstance(e, rbd_core.ImageNotFound)
    assert type(e).__name__ == "ImageNotFound"  # python-rbd's name for `except` and logs
    assert (e.recipe, e.step, e.errno, e.op, e.target, e.kind) == \
        ("test_recipe", "test_step", errno.ENOENT, "test_op", "rbd/test-target", "NotFound")
    assert [type(u) for u in e.undo_errors] == [rbd_core.ImageBusy, rbd_core.IOError]
    assert [u.op for u in e.undo_errors] == ["undo_op", "undo_op"]
    assert not isinstance(e.undo_errors[0], rbd_core.StepFailed)
    # Either except clause works, and the combined class is cached per kind.
    with pytest.raises(rbd_core.StepFailed) as again:
        _native._raise_test_error(errno.ENOENT)
    assert type(again.value) is type(e) and again.value.undo_errors == []


def test_group_table():
    e = errors._make("NotFound", errno.ENOENT, "x", "rbd_group_image_add", None, group=True)
    assert type(e) is rbd_core.ObjectNotFound
    e = errors._make("Exists", errno.EEXIST, "x", "rbd_group_create", None, group=True)
    assert type(e) is rbd_core.ObjectExists
    e = errors._make("Busy", errno.EBUSY, "x", "rbd_group_create", None, group=True)
    assert type(e) is rbd_core.ImageBusy


@pytest.mark.live
def test_live_error_attributes(pool, scratch):
    with pytest.raises(rbd_core.ImageNotFound) as ei:
        pool.open(scratch("missing"))
    e = ei.value
    assert e.errno == errno.ENOENT and e.kind == "NotFound" and e.op == "rbd_open"
    assert e.target == f"rbd/{scratch('missing')}" and scratch("missing") in str(e)
    assert not isinstance(e, rbd_core.StepFailed)
