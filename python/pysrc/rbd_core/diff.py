"""The diff engine: ``rbd export-diff`` / ``rbd import-diff`` streams, the ``rbd export
--export-format 2`` image container, and in-process image-to-image transfer.

>>> from rbd_core import Cluster, diff
>>> c = Cluster()  # doctest: +SKIP
>>> src = c.open_pool("volumes").open("volume-1", snapshot="s2")  # doctest: +SKIP
>>> diff.export_diff(src, "/tmp/v1.s1-s2.diff", from_snap="s1")  # doctest: +SKIP
ExportStats(diffs=1, write_records=3, ...)
>>> dst = c.open_pool("backups").open("volume-1")  # doctest: +SKIP
>>> diff.import_diff(dst, "/tmp/v1.s1-s2.diff").snapshots  # doctest: +SKIP
['s2']
>>> diff.transfer(src, dst2, from_snap="s1")  # doctest: +SKIP

* ``export_diff(image, dest, from_snap=None, cli_identical=False, whole_object=False, ...)``: the
  end point is the snapshot the handle is at (``Pool.open(name, snapshot=...)`` or
  ``set_snap``), or the head. ``cli_identical=True`` writes byte for byte what the CLI writes.
* ``import_diff(image, src, ...)``: the CLI's contract (``'f'`` must exist, ``'t'`` must not and
  is created last). Not atomic: after a failure, ``rollback_to_from_snap(image, snap)`` (or run
  the same import again); ``is_truncation(exc)`` tells a stream that ended early.
* ``export_image(image, dest)`` / ``import_image(pool, name, src)``: the v2 container with every
  snapshot, its protection and the image metadata.
* ``transfer(src_image, dst_image, from_snap=None, to_snap=None, in_flight=16, ...)``: what
  ``export-diff | import-diff`` does, without a stream (also between clusters).

``dest`` and ``src`` are paths (``str``/``os.PathLike``) or binary file objects; ``src`` may
also be a bytes-like object. A file object with a working ``fileno()`` is read or written
through its descriptor in Rust without the GIL (a seekable one from its current position, and
left after the bytes used); other objects are called with ``read(n)``/``write(b)`` per chunk (1
MiB), taking the GIL for each call only. A path written to is removed again when the export
fails. Every call runs with the GIL released and takes ``on_progress(done, total)`` and
``cancel``.
"""
from __future__ import annotations

from . import errors as _errors
from ._native import DIFF_STREAM_OP as _STREAM_OP
from ._native import (
    ExportStats,
    ImportStats,
    TransferStats,
    export_diff,
    export_image,
    import_diff,
    import_image,
    rollback_to_from_snap,
    transfer,
)


def is_truncation(exc: BaseException) -> bool:
    """True when ``exc`` says a diff stream or container ended early (a partial file or a broken
    pipe): the import may have written part of the diff to the head."""
    return (isinstance(exc, _errors.MalformedStream) and exc.op == _STREAM_OP
            and (exc.detail or "").startswith("truncated"))


__all__ = [
    "ExportStats", "ImportStats", "TransferStats", "export_diff", "export_image", "import_diff",
    "import_image", "is_truncation", "rollback_to_from_snap", "transfer",
]
