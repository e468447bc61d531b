//! Glance recipes (`rbd_core.glance`): upload, download (to a file or as a file-like reader),
//! delete; `rbd://` locations; and the failpoint switches tests use.
//!
//! Uploads and downloads run on the progress worker (GIL released; see `pyio` for how buffers,
//! paths and file objects are read and written), so several can run from several threads at
//! once.

use std::io::{Read, Write};

use parking_lot::Mutex;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use rbd_core::recipes::failpoint;
use rbd_core::recipes::glance::{self, GlanceStore, HashAlgo};
use rbd_core::recipes::location;

use crate::errors::{closed, PyResultExt};
use crate::pool::Pool;
use crate::progress::CancelToken;
use crate::pyio::{self, io_to_lib, Input, Output};

/// A Glance RBD location, ``rbd://<fsid>/<pool>/<image>/<snap>`` (or the legacy
/// ``rbd://<image>``), with each part percent-encoded as Glance does.
#[pyclass(module = "rbd_core._native", frozen, eq, hash)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Location {
    pub(crate) inner: location::Location,
}

#[pymethods]
impl Location {
    /// The four-part location ``rbd://fsid/pool/image/snap``.
    #[new]
    fn new(fsid: &str, pool: &str, image: &str, snap: &str) -> Self {
        Location { inner: location::Location::new(fsid, pool, image, snap) }
    }

    /// Parses ``rbd://fsid/pool/image/snap`` or ``rbd://image``; raises InvalidArgument for
    /// anything else.
    #[staticmethod]
    fn parse(url: &str) -> PyResult<Self> {
        Ok(Location { inner: location::Location::parse(url).py()? })
    }

    /// The legacy one-part location ``rbd://image``.
    #[staticmethod]
    fn legacy(image: &str) -> Self {
        Location { inner: location::Location::legacy(image) }
    }

    /// The cluster fsid (None for the legacy form).
    #[getter]
    fn fsid(&self) -> Option<String> {
        self.inner.fsid.clone()
    }

    /// The pool (None for the legacy form).
    #[getter]
    fn pool(&self) -> Option<String> {
        self.inner.pool.clone()
    }

    /// The image name (the Glance image id).
    #[getter]
    fn image(&self) -> String {
        self.inner.image.clone()
    }

    /// The snapshot (None for the legacy form).
    #[getter]
    fn snap(&self) -> Option<String> {
        self.inner.snap.clone()
    }

    /// True for the legacy one-part form.
    fn is_legacy(&self) -> bool {
        self.inner.is_legacy()
    }

    /// ``pool/image@snap`` (for messages).
    fn spec(&self) -> String {
        self.inner.spec()
    }

    fn __str__(&self) -> String {
        self.inner.to_string()
    }

    fn __repr__(&self) -> String {
        format!("Location({:?})", self.inner.to_string())
    }
}

/// `repr()`-style text of an optional value: `None` or the value's `Debug` text.
pub(crate) fn opt_repr<T: std::fmt::Debug>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "None".to_string(), |x| format!("{x:?}"))
}

/// A location argument: a `Location` or a URL string.
pub(crate) fn location_arg(obj: &Bound<'_, PyAny>) -> PyResult<location::Location> {
    if let Ok(l) = obj.cast::<Location>() {
        return Ok(l.get().inner.clone());
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return location::Location::parse(s.to_str()?).py();
    }
    Err(PyTypeError::new_err("location must be a Location or an rbd:// URL string"))
}

/// The result of an upload.
#[pyclass(module = "rbd_core._native", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub struct UploadedImage {
    /// ``rbd://<fsid>/<pool>/<image>/snap``.
    pub location: Location,
    /// Bytes read from the input: the image size.
    pub bytes_written: u64,
    /// Bytes sent to the OSDs (the rest were all-zero pieces left as holes).
    pub bytes_stored: u64,
    /// md5 of all bytes, hex (Glance's ``checksum``); None when turned off.
    pub checksum: Option<String>,
    /// The multihash of all bytes, hex (Glance's ``os_hash_value``); None for ``hash="none"``.
    pub multihash: Option<String>,
    /// The multihash algorithm: ``"sha256"``, ``"sha512"`` or ``"none"``.
    pub hash_algo: String,
}

#[pymethods]
impl UploadedImage {
    fn __repr__(&self) -> String {
        format!(
            "UploadedImage(location={:?}, bytes_written={}, bytes_stored={}, checksum={}, hash_algo={:?})",
            self.location.inner.to_string(),
            self.bytes_written,
            self.bytes_stored,
            opt_repr(&self.checksum),
            self.hash_algo
        )
    }
}

/// What a Glance delete did: removed, or moved to the RBD trash (``trashed``, with the
/// ``image_id`` it has there) because clone-v2 children still use a removed snapshot.
#[pyclass(module = "rbd_core._native", frozen, eq, hash)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct GlanceDeleteOutcome {
    /// The trash id when the image was moved to the trash.
    #[pyo3(get)]
    pub image_id: Option<String>,
}

#[pymethods]
impl GlanceDeleteOutcome {
    /// True when the snapshot and the image are gone.
    #[getter]
    fn removed(&self) -> bool {
        self.image_id.is_none()
    }

    /// True when the image was moved to the RBD trash.
    #[getter]
    fn trashed(&self) -> bool {
        self.image_id.is_some()
    }

    fn __repr__(&self) -> String {
        match &self.image_id {
            None => "DeleteOutcome.Removed".to_string(),
            Some(id) => format!("DeleteOutcome.Trashed(image_id={id:?})"),
        }
    }
}

/// A store on `pool` with the settings given.
fn store(pool: &Pool, order: Option<u8>, in_flight: Option<usize>) -> GlanceStore {
    let mut s = GlanceStore::new(&pool.inner);
    if let Some(o) = order {
        s.order(o);
    }
    if let Some(n) = in_flight {
        s.in_flight(n);
    }
    s
}

/// Uploads ``data`` as image ``image_id`` of ``pool`` the way Glance does (thin, hashed, with
/// its ``snap`` protected; undone completely on any failure). ``data`` is a bytes-like object,
/// a path, or a binary file object (read through its descriptor without the GIL when it has a
/// working ``fileno()``, else with ``read(n)``). ``size`` is the declared size: by default the
/// buffer's length or the regular file's remaining size, else unknown (the image grows while
/// writing and is trimmed). ``hash`` is ``"sha512"`` (Glance's default), ``"sha256"`` or
/// ``"none"``; ``checksum`` is the md5.
#[pyfunction]
#[pyo3(signature = (pool, image_id, data, size=None, hash="sha512", checksum=true, on_progress=None, cancel=None, order=None, features=None, thin=true, sparse_size=None, in_flight=None, hash_thread=true))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn glance_upload(
    py: Python<'_>,
    pool: &Pool,
    image_id: String,
    data: &Bound<'_, PyAny>,
    size: Option<u64>,
    hash: Option<&str>,
    checksum: bool,
    on_progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, CancelToken>>,
    order: Option<u8>,
    features: Option<u64>,
    thin: bool,
    sparse_size: Option<usize>,
    in_flight: Option<usize>,
    hash_thread: bool,
) -> PyResult<UploadedImage> {
    let algo: HashAlgo = hash.unwrap_or("none").parse().py()?;
    let mut st = store(pool, order, in_flight);
    st.hash(algo).checksum(checksum).thin(thin).hash_thread(hash_thread);
    if let Some(f) = features {
        st.features(rbd_core::Features(f));
    }
    if let Some(s) = sparse_size {
        st.sparse_size(s);
    }
    let mut input = Input::from_py(data, "data", true)?;
    let size = size.or(input.known_len());
    let st = &st;
    let inp = &mut input;
    let res = pyio::run_op(py, on_progress, cancel, move |p| Ok(st.upload(&image_id, inp, size, p)));
    let up = pyio::settle(py, res, Some(&mut input), None)?;
    Ok(UploadedImage {
        location: Location { inner: up.location },
        bytes_written: up.bytes_written,
        bytes_stored: up.bytes_stored,
        checksum: up.checksum,
        multihash: up.multihash,
        hash_algo: up.hash_algo.name().to_string(),
    })
}

/// Copies `r` into `out`, reporting `(bytes, size)`.
fn copy_download(
    r: &mut glance::ImageDownload,
    out: &mut Output,
    p: &mut rbd_core::Progress<'_>,
) -> rbd_core::Result<u64> {
    let total = r.len();
    let mut buf = vec![0u8; 4 << 20];
    p.report(0, total)?;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_to_lib(e)),
        };
        out.write_all(&buf[..n]).map_err(io_to_lib)?;
        p.report(r.position(), total)?;
    }
    out.flush().map_err(io_to_lib)?;
    Ok(r.position())
}

/// Downloads the image at ``location`` (a Location or URL) into ``dest``: a path (created or
/// truncated; removed again on failure) or a binary file object (written through its descriptor
/// without the GIL when it has a working ``fileno()``, else with ``write(b)``). Holes are
/// produced as zeros without reading them. Returns the number of bytes written (the image size).
#[pyfunction]
#[pyo3(signature = (pool, location, dest, on_progress=None, cancel=None, in_flight=None, order=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn glance_download(
    py: Python<'_>,
    pool: &Pool,
    location: &Bound<'_, PyAny>,
    dest: &Bound<'_, PyAny>,
    on_progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, CancelToken>>,
    in_flight: Option<usize>,
    order: Option<u8>,
) -> PyResult<u64> {
    let loc = location_arg(location)?;
    let st = store(pool, order, in_flight);
    let mut output = Output::from_py(dest, "dest")?;
    let (st, out) = (&st, &mut output);
    let res = pyio::run_op(py, on_progress, cancel, move |p| {
        Ok(st.download(&loc).and_then(|mut r| {
            let n = copy_download(&mut r, out, p);
            // Joining the read-ahead thread happens here, off the GIL.
            drop(r);
            n
        }))
    });
    pyio::settle(py, res, None, Some(&mut output))
}

/// Opens the image at ``location`` as a read-only binary file-like object (``read``,
/// ``readinto``, ``tell``, context manager) that reads ahead on a helper thread.
#[pyfunction]
#[pyo3(signature = (pool, location, in_flight=None, order=None))]
pub(crate) fn glance_open_download(
    py: Python<'_>,
    pool: &Pool,
    location: &Bound<'_, PyAny>,
    in_flight: Option<usize>,
    order: Option<u8>,
) -> PyResult<ImageDownload> {
    let loc = location_arg(location)?;
    let st = store(pool, order, in_flight);
    let r = py.detach(|| st.download(&loc)).py()?;
    Ok(ImageDownload {
        size: r.len(),
        data_bytes: r.data_bytes(),
        location: loc.to_string(),
        inner: Mutex::new(Some(r)),
    })
}

/// Deletes the Glance image at ``location``: refuses (ImageBusy, nothing changed) while its
/// ``snap`` has clones, else unprotects and removes the snapshot and the image (moved to the
/// trash when clone-v2 children still use a removed snapshot).
#[pyfunction]
pub(crate) fn glance_delete(py: Python<'_>, pool: &Pool, location: &Bound<'_, PyAny>) -> PyResult<GlanceDeleteOutcome> {
    let loc = location_arg(location)?;
    let st = GlanceStore::new(&pool.inner);
    let out = py.detach(|| st.delete(&loc)).py()?;
    Ok(match out {
        glance::DeleteOutcome::Removed => GlanceDeleteOutcome { image_id: None },
        glance::DeleteOutcome::Trashed { image_id } => GlanceDeleteOutcome { image_id: Some(image_id) },
    })
}

/// A Glance image opened for reading (``glance.open_download``): a read-only, non-seekable binary
/// file object. Reads release the GIL; one reader may be shared between threads (reads are
/// serialised).
#[pyclass(module = "rbd_core._native", frozen)]
pub struct ImageDownload {
    inner: Mutex<Option<glance::ImageDownload>>,
    size: u64,
    data_bytes: u64,
    location: String,
}

impl Drop for ImageDownload {
    fn drop(&mut self) {
        // Dropping joins the read-ahead thread: never with the GIL held.
        if let Some(r) = self.inner.get_mut().take() {
            Python::attach(|py| py.detach(move || drop(r)));
        }
    }
}

impl ImageDownload {
    /// Runs `f` on the open reader with the GIL released (the lock may wait for another
    /// thread's read).
    fn with_reader<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut glance::ImageDownload) -> rbd_core::Result<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| self.inner.lock().as_mut().map(f)).ok_or_else(|| closed("download"))?.py()
    }
}

/// Reads until `buf` is full or the image ends.
fn fill(r: &mut glance::ImageDownload, buf: &mut [u8]) -> rbd_core::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_to_lib(e)),
        }
    }
    Ok(n)
}

#[pymethods]
impl ImageDownload {
    /// Reads up to ``size`` bytes (all that is left when negative or None); fewer only at the
    /// end of the image.
    #[pyo3(signature = (size=-1))]
    fn read<'py>(&self, py: Python<'py>, size: Option<i64>) -> PyResult<Bound<'py, PyBytes>> {
        let total = self.size;
        let buf = self.with_reader(py, move |r| {
            let left = total.saturating_sub(r.position());
            let n = match size {
                Some(n) if n >= 0 => u64::try_from(n).unwrap_or(0).min(left),
                _ => left,
            };
            let n = usize::try_from(n)
                .map_err(|_| rbd_core::Error::invalid("read", "read size too large for this platform"))?;
            let mut buf = vec![0u8; n];
            let got = fill(r, &mut buf)?;
            buf.truncate(got);
            Ok(buf)
        })?;
        Ok(PyBytes::new(py, &buf))
    }

    /// Reads everything that is left.
    fn readall<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        self.read(py, None)
    }

    /// Reads into the writable buffer ``buffer`` (bytearray, memoryview, ...) with the GIL
    /// released, filling it unless the image ends first; returns the number of bytes read.
    fn readinto(&self, py: Python<'_>, buffer: &Bound<'_, PyAny>) -> PyResult<usize> {
        let pb = PyBuffer::<u8>::get(buffer)?;
        if pb.readonly() {
            return Err(PyTypeError::new_err("readinto() needs a writable buffer"));
        }
        if !pb.is_c_contiguous() {
            return Err(PyValueError::new_err("readinto() needs a contiguous buffer"));
        }
        let len = pb.len_bytes();
        if len == 0 {
            return Ok(0);
        }
        let ptr = pb.buf_ptr().cast::<u8>();
        // SAFETY: `pb` holds a buffer export of `buffer` until the end of this function, so the
        // memory stays allocated and cannot be resized (as CPython's own FileIO.readinto relies
        // on when it reads into the buffer with the GIL released); it is writable, contiguous
        // and `len` bytes long.
        let buf = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        let n = self.with_reader(py, |r| fill(r, buf));
        drop(pb);
        n
    }

    /// The number of bytes read so far.
    fn tell(&self, py: Python<'_>) -> PyResult<u64> {
        self.with_reader(py, |r| Ok(r.position()))
    }

    /// Always True.
    fn readable(&self) -> bool {
        true
    }

    /// Always False.
    fn seekable(&self) -> bool {
        false
    }

    /// Always False.
    fn writable(&self) -> bool {
        false
    }

    /// The image size: how many bytes the reader yields.
    #[getter]
    fn size(&self) -> u64 {
        self.size
    }

    /// Bytes in extents holding data (read from the OSDs); the rest are holes.
    #[getter]
    fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// True once closed.
    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        py.detach(|| self.inner.lock().is_none())
    }

    /// Stops the read-ahead and releases the image (idempotent).
    fn close(&self, py: Python<'_>) {
        py.detach(|| drop(self.inner.lock().take()));
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (_exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        format!("<rbd_core.glance.ImageDownload {} size={}>", self.location, self.size)
    }
}

/// Arms failpoint ``name`` (``"<recipe>.<step>"``, for example ``"glance.upload.protect_snap"``)
/// for the whole process: ``action`` is ``"error"`` (the step fails and the recipe undoes),
/// ``"panic"`` or ``"kill"`` (SIGKILL). For tests only.
#[pyfunction]
#[pyo3(signature = (name, action="error"))]
pub(crate) fn _failpoint_set(name: &str, action: &str) -> PyResult<()> {
    let a = match action {
        "error" => failpoint::Action::Error,
        "panic" => failpoint::Action::Panic,
        "kill" => failpoint::Action::Kill,
        _ => return Err(PyValueError::new_err(format!("unknown failpoint action {action:?} (error, panic, kill)"))),
    };
    failpoint::set(name, a);
    Ok(())
}

/// Disarms failpoint ``name``. For tests only.
#[pyfunction]
pub(crate) fn _failpoint_clear(name: &str) {
    failpoint::clear(name);
}
