"""Glance (image service) recipes: upload, download and delete images the way Glance's RBD
store does, with its failure modes fixed.

>>> from rbd_core import Cluster, glance
>>> images = Cluster(client_id="glance").open_pool("images")  # doctest: +SKIP
>>> up = glance.upload(images, "0f5e2a8b-6c8e-4d0c-9a6b-1f2e3d4c5b6a", open("cirros.raw", "rb"))  # doctest: +SKIP
>>> str(up.location), up.checksum  # doctest: +SKIP
('rbd://<fsid>/images/0f5e2a8b-.../snap', '443b7623e27ecf03dc9e01ee93f67afe')
>>> glance.download(images, up.location, "/tmp/back.raw")  # doctest: +SKIP
>>> with glance.open_download(images, up.location) as r:  # doctest: +SKIP
...     head = r.read(512)
>>> glance.delete(images, up.location).removed  # doctest: +SKIP
True

``upload`` creates the image (order 23), writes the data with a window of asynchronous writes
(all-zero pieces are left as holes), hashes every byte (md5 ``checksum`` and the ``sha512``
multihash by default), creates and protects ``snap``; any failure, cancel or size mismatch
removes what it made. ``delete`` refuses (``ImageBusy``, nothing changed) while ``snap`` has
clones.

Data: ``upload`` takes a bytes-like object (``bytes`` is not copied), a path, or a binary file
object; ``download`` writes to a path or a binary file object. A file object with a working
``fileno()`` is read or written through its file descriptor in Rust, without the GIL (a
seekable one from its current position, left after the bytes used); other file objects
(``io.BytesIO``, wrappers) are called with ``read(n)``/``write(b)`` from the worker thread,
which takes the GIL for each call only. Every call releases the GIL, so uploads from several
threads run in parallel.

Progress: ``on_progress(done, total)`` (return False to cancel) and ``cancel=CancelToken()``,
as for the core calls; Ctrl-C cancels too (and the upload is undone).
"""
from __future__ import annotations

from ._native import GLANCE_DELETE_STEPS as DELETE_STEPS
from ._native import GLANCE_SNAP_NAME as SNAP_NAME
from ._native import GLANCE_UPLOAD_STEPS as UPLOAD_STEPS
from ._native import GlanceDeleteOutcome as DeleteOutcome
from ._native import ImageDownload, Location, UploadedImage
from ._native import glance_delete as delete
from ._native import glance_download as download
from ._native import glance_open_download as open_download
from ._native import glance_upload as upload

__all__ = [
    "DELETE_STEPS", "SNAP_NAME", "UPLOAD_STEPS", "DeleteOutcome", "ImageDownload", "Location",
    "UploadedImage", "delete", "download", "open_download", "upload",
]
