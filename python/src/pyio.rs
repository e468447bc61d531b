//! Data given from Python to the recipes and the diff engine: in-memory buffers, paths, and
//! binary file objects, as Rust `Read`/`Write` values that work with the GIL released.
//!
//! * **Buffers** (`bytes` borrowed without a copy, other buffers copied once) are read from
//!   memory.
//! * **Paths** (`str` or `os.PathLike`) are opened (or created and truncated) here, before the
//!   operation starts, so a missing file raises Python's own `FileNotFoundError` and friends.
//! * **File objects with a working `fileno()`** are read or written through a duplicate of their
//!   file descriptor, in Rust, without the GIL. A seekable file is used from its current position
//!   (`tell()`; a writer is flushed first, a reader's read-ahead is dropped by seeking to that
//!   position) and is left positioned after the bytes the operation consumed or wrote (`seek()`
//!   afterwards; an importer reads ahead in 1 MiB blocks, so a reader may be left past the end of
//!   a diff stream that has more data behind it). A non-seekable one (pipe, socket file) is used
//!   directly when it is unbuffered (`io.RawIOBase`) or, for writing, after `flush()`; a buffered
//!   non-seekable reader may hold read-ahead bytes, so it goes the next way instead.
//! * **Other file objects** (`io.BytesIO`, wrappers, anything with `read(n)` / `write(b)`) are
//!   called from the worker thread, taking the GIL for the duration of each call only (one call
//!   per chunk: up to one object, 8 MiB for Glance uploads, or 1 MiB for diff streams).
//!
//! Text files (`io.TextIOBase`) are refused with `TypeError`. A Python exception raised by
//! `read()`/`write()` stops the operation (which undoes what it did, for recipes) and is
//! re-raised afterwards, with the library error that followed added as a note.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::BorrowedFd;
use std::path::PathBuf;

use parking_lot::Mutex;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMemoryView, PyString};

use crate::errors::{PyResultExt, Table};
use crate::progress::{self, CancelToken};
use crate::util::{with_bytes, WriteData};

/// The first Python exception raised by a file object while an operation ran.
#[derive(Default)]
pub(crate) struct PyErrSlot(Mutex<Option<PyErr>>);

impl PyErrSlot {
    /// Keeps `e` (the first one wins) and returns the I/O error to hand to the library.
    fn keep(&self, py: Python<'_>, e: PyErr) -> io::Error {
        let text = match e.value(py).str() {
            Ok(s) => format!("{}: {s}", e.get_type(py).name().map(|n| n.to_string()).unwrap_or_default()),
            Err(_) => "exception in a Python file object".to_string(),
        };
        let mut g = self.0.lock();
        if g.is_none() {
            *g = Some(e);
        }
        io::Error::other(text)
    }

    fn take(&self) -> Option<PyErr> {
        self.0.lock().take()
    }
}

/// Python's `OSError(errno, strerror, filename)` (which picks the subclass, such as
/// `FileNotFoundError`) for an error opening `path`.
fn os_error(e: &io::Error, path: &std::path::Path) -> PyErr {
    match e.raw_os_error() {
        Some(errno) => PyOSError::new_err((errno, e.to_string(), path.to_string_lossy().into_owned())),
        None => PyOSError::new_err(format!("{}: {e}", path.display())),
    }
}

/// A duplicate of file descriptor `fd`, owned by the returned `File`.
fn dup_fd(fd: i32) -> PyResult<File> {
    if fd < 0 {
        return Err(PyValueError::new_err(format!("fileno() returned {fd}")));
    }
    // SAFETY: `fd` was just returned by the file object's `fileno()`, the object (which owns the
    // descriptor) is alive and the GIL is held, so the descriptor stays open for this borrow,
    // which ends before this function returns (the duplicate is independent of it).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed.try_clone_to_owned().map(File::from).map_err(PyErr::from)
}

fn is_text_file(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let io = obj.py().import("io")?;
    obj.is_instance(&io.getattr("TextIOBase")?)
}

fn is_raw_file(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let io = obj.py().import("io")?;
    obj.is_instance(&io.getattr("RawIOBase")?)
}

/// `fileno()` when the object has one that works.
fn fileno(obj: &Bound<'_, PyAny>) -> Option<i32> {
    obj.call_method0("fileno").ok().and_then(|f| f.extract::<i32>().ok())
}

/// `seekable()`, false when missing or failing.
fn seekable(obj: &Bound<'_, PyAny>) -> bool {
    obj.call_method0("seekable").ok().and_then(|s| s.extract::<bool>().ok()).unwrap_or(false)
}

fn is_path(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(obj.is_instance_of::<PyString>() || obj.hasattr("__fspath__")?)
}

fn text_file_error(what: &str) -> PyErr {
    PyTypeError::new_err(format!("{what} must be a binary file object (opened with 'b'), not a text file"))
}

/// A file descriptor the operation uses directly, and how to put the Python object back in step.
pub(crate) struct FdFile {
    file: File,
    /// The Python object and the position the operation started at (seekable files).
    resync: Option<(Py<PyAny>, u64)>,
}

impl FdFile {
    /// Positions the Python object after what the operation consumed or wrote.
    fn resync(&mut self, py: Python<'_>) -> PyResult<()> {
        if let Some((obj, _)) = &self.resync {
            let end = py.detach(|| self.file.stream_position()).map_err(PyErr::from)?;
            obj.call_method1(py, "seek", (end,))?;
        }
        Ok(())
    }
}

impl AsRef<[u8]> for WriteData<'_> {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// An input: memory, a file (path or descriptor), or a Python object's `read(n)`.
pub(crate) enum Input<'a> {
    /// In memory.
    Memory(io::Cursor<WriteData<'a>>),
    /// A file opened from a path or duplicated from a file object.
    File(FdFile, Option<u64>),
    /// A Python object with `read(n)`.
    Object(PyReader),
}

impl<'a> Input<'a> {
    /// Classifies `obj`: a buffer (when `memory_ok`), a path, or a binary file object.
    pub(crate) fn from_py(obj: &'a Bound<'_, PyAny>, what: &str, memory_ok: bool) -> PyResult<Input<'a>> {
        let py = obj.py();
        if memory_ok && (obj.is_instance_of::<PyBytes>() || PyMemoryView::from(obj).is_ok()) {
            return Ok(Input::Memory(io::Cursor::new(with_bytes(obj)?)));
        }
        if is_path(obj)? {
            let path: PathBuf = obj.extract()?;
            let file = py.detach(|| File::open(&path)).map_err(|e| os_error(&e, &path))?;
            let len = py.detach(|| file.metadata()).ok().filter(|m| m.is_file()).map(|m| m.len());
            return Ok(Input::File(FdFile { file, resync: None }, len));
        }
        if is_text_file(obj)? {
            return Err(text_file_error(what));
        }
        if let Some(fd) = fileno(obj) {
            if seekable(obj) {
                let pos: u64 = obj.call_method0("tell")?.extract()?;
                obj.call_method1("seek", (pos,))?; // drops a buffered reader's read-ahead
                let mut file = dup_fd(fd)?;
                let len = py
                    .detach(|| -> io::Result<Option<u64>> {
                        file.seek(SeekFrom::Start(pos))?;
                        let m = file.metadata()?;
                        Ok(m.is_file().then(|| m.len().saturating_sub(pos)))
                    })
                    .map_err(PyErr::from)?;
                return Ok(Input::File(FdFile { file, resync: Some((obj.clone().unbind(), pos)) }, len));
            }
            if is_raw_file(obj)? {
                return Ok(Input::File(FdFile { file: dup_fd(fd)?, resync: None }, None));
            }
        }
        if obj.hasattr("read")? {
            return Ok(Input::Object(PyReader { obj: obj.clone().unbind(), slot: PyErrSlot::default() }));
        }
        let kinds = if memory_ok {
            "a bytes-like object, a path or a binary file object"
        } else {
            "a path or a binary file object"
        };
        Err(PyTypeError::new_err(format!(
            "{what} must be {kinds}, not {}",
            obj.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        )))
    }

    /// The number of bytes left, when known (memory, regular files).
    pub(crate) fn known_len(&self) -> Option<u64> {
        match self {
            Input::Memory(c) => Some(c.get_ref().len() as u64),
            Input::File(_, len) => *len,
            Input::Object(_) => None,
        }
    }

    /// After the operation: the Python exception it met, if any, and the file object put back in
    /// step with what was consumed.
    fn finish(&mut self, py: Python<'_>) -> (Option<PyErr>, PyResult<()>) {
        match self {
            Input::Memory(_) => (None, Ok(())),
            Input::File(f, _) => (None, f.resync(py)),
            Input::Object(r) => (r.slot.take(), Ok(())),
        }
    }
}

impl Read for Input<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Input::Memory(c) => c.read(buf),
            Input::File(f, _) => f.file.read(buf),
            Input::Object(r) => r.read(buf),
        }
    }
}

/// `read(n)` of a Python object, called with the GIL taken for the call only.
pub(crate) struct PyReader {
    obj: Py<PyAny>,
    slot: PyErrSlot,
}

impl Read for PyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        Python::attach(|py| {
            let r = (|| -> PyResult<usize> {
                py.check_signals()?;
                let data = self.obj.call_method1(py, "read", (buf.len(),))?;
                let data = data.bind(py);
                if data.is_none() {
                    return Err(PyValueError::new_err("read() returned None (a non-blocking file without data)"));
                }
                let n = if let Ok(b) = data.cast::<PyBytes>() {
                    let b = b.as_bytes();
                    if b.len() > buf.len() {
                        return Err(PyValueError::new_err("read(n) returned more than n bytes"));
                    }
                    buf[..b.len()].copy_from_slice(b);
                    b.len()
                } else {
                    let pb = PyBuffer::<u8>::get(data)?;
                    let n = pb.len_bytes();
                    if n > buf.len() {
                        return Err(PyValueError::new_err("read(n) returned more than n bytes"));
                    }
                    pb.copy_to_slice(py, &mut buf[..n])?;
                    n
                };
                Ok(n)
            })();
            r.map_err(|e| self.slot.keep(py, e))
        })
    }
}

/// An output: a file (path or descriptor) or a Python object's `write(b)`.
pub(crate) enum Output {
    /// A file created from a path (removed again when the operation fails) or duplicated from a
    /// file object.
    File(FdFile, Option<PathBuf>),
    /// A Python object with `write(b)`.
    Object(PyWriter),
}

impl Output {
    /// Classifies `obj`: a path (created or truncated) or a binary file object.
    pub(crate) fn from_py(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Output> {
        let py = obj.py();
        if is_path(obj)? {
            let path: PathBuf = obj.extract()?;
            let file = py.detach(|| File::create(&path)).map_err(|e| os_error(&e, &path))?;
            return Ok(Output::File(FdFile { file, resync: None }, Some(path)));
        }
        if is_text_file(obj)? {
            return Err(text_file_error(what));
        }
        if let Some(fd) = fileno(obj) {
            if obj.hasattr("flush")? {
                obj.call_method0("flush")?;
            }
            if seekable(obj) {
                let pos: u64 = obj.call_method0("tell")?.extract()?;
                let mut file = dup_fd(fd)?;
                py.detach(|| file.seek(SeekFrom::Start(pos))).map_err(PyErr::from)?;
                return Ok(Output::File(FdFile { file, resync: Some((obj.clone().unbind(), pos)) }, None));
            }
            return Ok(Output::File(FdFile { file: dup_fd(fd)?, resync: None }, None));
        }
        if obj.hasattr("write")? {
            return Ok(Output::Object(PyWriter { obj: obj.clone().unbind(), slot: PyErrSlot::default() }));
        }
        Err(PyTypeError::new_err(format!(
            "{what} must be a path or a binary file object, not {}",
            obj.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        )))
    }

    /// After the operation (`ok`: it succeeded): the Python exception it met, if any; a file
    /// created from a path is removed when the operation failed; a file object is put back in
    /// step with what was written.
    fn finish(&mut self, py: Python<'_>, ok: bool) -> (Option<PyErr>, PyResult<()>) {
        match self {
            Output::File(f, path) => {
                if let (false, Some(p)) = (ok, path.as_ref()) {
                    let _ = py.detach(|| std::fs::remove_file(p));
                }
                (None, f.resync(py))
            }
            Output::Object(w) => (w.slot.take(), Ok(())),
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::File(f, _) => f.file.write(buf),
            Output::Object(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::File(f, _) => f.file.flush(),
            Output::Object(w) => w.flush(),
        }
    }
}

/// `write(b)` of a Python object, called with the GIL taken for the call only.
pub(crate) struct PyWriter {
    obj: Py<PyAny>,
    slot: PyErrSlot,
}

impl Write for PyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        Python::attach(|py| {
            let r = (|| -> PyResult<usize> {
                py.check_signals()?;
                let n = self.obj.call_method1(py, "write", (PyBytes::new(py, buf),))?;
                // Buffered writers return len(b) (or None, for some wrappers); raw ones may
                // write less.
                let n = if n.is_none(py) { buf.len() } else { n.extract::<usize>(py)? };
                Ok(n.min(buf.len()))
            })();
            match r {
                Ok(0) => Err(io::Error::new(io::ErrorKind::WriteZero, "write() wrote nothing")),
                Ok(n) => Ok(n),
                Err(e) => Err(self.slot.keep(py, e)),
            }
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An I/O error from a reader or writer of the library's own (say [`rbd_core::recipes::glance::ImageDownload`])
/// back to the library error it carries, or a new one.
pub(crate) fn io_to_lib(e: io::Error) -> rbd_core::Error {
    if e.get_ref().is_some_and(|inner| inner.is::<rbd_core::Error>()) {
        if let Some(inner) = e.into_inner() {
            return match inner.downcast::<rbd_core::Error>() {
                Ok(lib) => *lib,
                Err(other) => rbd_core::Error::from(io::Error::other(other)),
            };
        }
        return rbd_core::Error::new(rbd_core::ErrorKind::Io, "io", "I/O error");
    }
    rbd_core::Error::from(e)
}

/// Runs `op` as a progress operation: on a worker thread with the GIL released, Ctrl-C and
/// callback exceptions handled as in [`progress::run`]. The closure may use an [`Input`] and an
/// [`Output`]; hand the result to [`settle`] with them afterwards.
pub(crate) fn run_op<T: Send>(
    py: Python<'_>,
    on_progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, CancelToken>>,
    op: impl FnOnce(&mut rbd_core::Progress<'_>) -> PyResult<rbd_core::Result<T>> + Send,
) -> PyResult<rbd_core::Result<T>> {
    progress::run(py, on_progress, cancel, Table::Image, |p| op(p).map(Ok))
}

/// Settles the result of [`run_op`] with the input and output it used: a Python exception raised
/// by a file object wins over the library error it caused (which is added to it as a note), a
/// file created from a path is removed when the operation failed, and file objects are put back
/// in step with what was consumed or written.
pub(crate) fn settle<T>(
    py: Python<'_>,
    res: PyResult<rbd_core::Result<T>>,
    input: Option<&mut Input<'_>>,
    output: Option<&mut Output>,
) -> PyResult<T> {
    let ok = matches!(res, Ok(Ok(_)));
    let mut py_err = None;
    let mut sync: PyResult<()> = Ok(());
    if let Some(i) = input {
        let (e, s) = i.finish(py);
        py_err = py_err.or(e);
        sync = sync.and(s);
    }
    if let Some(o) = output {
        let (e, s) = o.finish(py, ok);
        py_err = py_err.or(e);
        sync = sync.and(s);
    }
    let res = res?; // a progress callback's exception (or Ctrl-C) first
    if let Some(e) = py_err {
        if let Err(lib) = &res {
            let _ = e.add_note(py, format!("rbd_core: the operation stopped: {lib}"));
        }
        return Err(e);
    }
    let v = res.py()?;
    sync?;
    Ok(v)
}
