//! Small conversions shared by the binding files: buffers, timestamps, image options, and a
//! wrapper that releases the GIL while a handle is dropped.

use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMemoryView};

/// Copies any object exporting the buffer protocol (bytes, bytearray, memoryview, array,
/// numpy) into an owned vector, so the GIL can be released while librbd uses it. `bytes` is
/// handled by the callers without a copy (see [`with_bytes`]).
pub(crate) fn buffer_to_vec(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(buf) = PyBuffer::<u8>::get(obj) {
        return buf.to_vec(obj.py());
    }
    // Buffers of other item types (array('I'), numpy float arrays): view them as bytes.
    let mv = PyMemoryView::from(obj)?.call_method1("cast", ("B",))?;
    PyBuffer::<u8>::get(&mv)?.to_vec(obj.py())
}

/// Data to write, borrowed from an immutable `bytes` object (no copy) or copied from another
/// buffer. Either way it stays valid and unchanged while the GIL is released.
pub(crate) enum WriteData<'a> {
    /// Borrowed from `bytes`, which cannot change and is kept alive by the caller's reference.
    Borrowed(&'a [u8]),
    /// Copied from a mutable buffer.
    Owned(Vec<u8>),
}

impl Deref for WriteData<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            WriteData::Borrowed(b) => b,
            WriteData::Owned(v) => v,
        }
    }
}

/// The bytes of `obj` for a write: borrowed when it is `bytes`, else a copy.
pub(crate) fn with_bytes<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<WriteData<'a>> {
    match obj.cast::<PyBytes>() {
        Ok(b) => Ok(WriteData::Borrowed(b.as_bytes())),
        Err(_) => Ok(WriteData::Owned(buffer_to_vec(obj)?)),
    }
}

/// Seconds since the epoch (negative before it).
pub(crate) fn unix_seconds(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// A timezone-aware UTC `datetime.datetime` for `secs` since the epoch.
pub(crate) fn datetime_utc(py: Python<'_>, secs: f64) -> PyResult<Bound<'_, PyAny>> {
    let dt = py.import("datetime")?;
    let utc = dt.getattr("timezone")?.getattr("utc")?;
    dt.getattr("datetime")?.call_method1("fromtimestamp", (secs, utc))
}

/// A point in time from Python: a `datetime` (naive ones are taken as local time, as
/// `datetime.timestamp()` does) or seconds since the epoch.
pub(crate) fn to_system_time(obj: &Bound<'_, PyAny>) -> PyResult<SystemTime> {
    let secs: f64 = if obj.hasattr("timestamp")? { obj.call_method0("timestamp")?.extract()? } else { obj.extract()? };
    if !secs.is_finite() {
        return Err(PyValueError::new_err("time must be finite"));
    }
    let d = std::time::Duration::from_secs_f64(secs.abs());
    let t = if secs >= 0.0 { UNIX_EPOCH.checked_add(d) } else { UNIX_EPOCH.checked_sub(d) };
    t.ok_or_else(|| PyValueError::new_err("time out of range"))
}

/// Builds image options from python-rbd-style keyword arguments (unset = librbd default).
pub(crate) fn image_options(
    order: Option<u8>,
    features: Option<u64>,
    stripe_unit: Option<u64>,
    stripe_count: Option<u64>,
    data_pool: Option<&str>,
) -> rbd_core::ImageOptions {
    let mut o = rbd_core::ImageOptions::new();
    if let Some(v) = order {
        o.order(v);
    }
    if let Some(f) = features {
        o.features(rbd_core::Features(f));
    }
    if stripe_unit.is_some() || stripe_count.is_some() {
        o.stripe(stripe_unit.unwrap_or(0), stripe_count.unwrap_or(1));
    }
    if let Some(d) = data_pool {
        o.data_pool(d);
    }
    o
}

/// Owns a handle whose drop may block (closing an image flushes it; dropping the last
/// reference to a cluster connection shuts it down) and drops it with the GIL released.
pub(crate) struct ReleaseOnDrop<T: Send>(ManuallyDrop<T>);

impl<T: Send> ReleaseOnDrop<T> {
    pub(crate) fn new(v: T) -> Self {
        ReleaseOnDrop(ManuallyDrop::new(v))
    }
}

impl<T: Send> Deref for ReleaseOnDrop<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Send> Drop for ReleaseOnDrop<T> {
    fn drop(&mut self) {
        // SAFETY: the value is taken exactly once, here, and `self.0` is never used again.
        let v = unsafe { ManuallyDrop::take(&mut self.0) };
        Python::attach(|py| py.detach(move || drop(v)));
    }
}
