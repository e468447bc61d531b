//! Backup recipes (`rbd_core.backup`): full and incremental backups of volumes into a backup
//! pool (on this or another cluster) in Cinder's Ceph backup layout, restore, list, delete,
//! verify and source-snapshot trimming.
//!
//! A volume is ``volume-<volume_id>`` in a pool unless ``image=`` names another image (the
//! backup names still use ``volume_id``). Calls that move data run on the progress worker
//! (GIL released, ``on_progress``/``cancel``/Ctrl-C); the others release the GIL too.

use std::collections::BTreeMap;

use pyo3::prelude::*;
use pyo3::types::PyString;

use rbd_core::recipes::backup::{self, VolumeRef};

use crate::diffio::TransferStats;
use crate::errors::{PyResultExt, Table};
use crate::pool::Pool;
use crate::progress::{self, CancelToken};
use crate::recipes_glance::opt_repr;
use crate::util::unix_seconds;

/// The volume `volume_id` of `pool`: image `volume-<volume_id>`, or `image` when given.
fn volume_ref<'a>(pool: &'a Pool, volume_id: &str, image: Option<&str>) -> VolumeRef<'a> {
    match image {
        Some(img) => VolumeRef::with_volume_id(&pool.inner, img, volume_id),
        None => VolumeRef::cinder(&pool.inner, volume_id),
    }
}

/// A JSON value from Python: a ``str`` holding JSON, or anything ``json.dumps`` accepts.
fn json_arg(obj: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    let text: String = if let Ok(s) = obj.cast::<PyString>() {
        s.to_str()?.to_string()
    } else {
        obj.py().import("json")?.call_method1("dumps", (obj,))?.extract()?
    };
    serde_json::from_str(&text)
        .map_err(|e| crate::errors::to_py(rbd_core::Error::invalid("backup", format!("bad JSON: {e}"))))
}

/// What kind of backup was taken: ``name`` is ``"full"``, ``"incremental"`` (with ``parent``
/// and ``from_snap``) or ``"full-forced"`` (an incremental was impossible; ``reason`` says why).
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BackupKind {
    /// ``full``, ``incremental`` or ``full-forced``.
    pub name: String,
    /// The parent backup id (incremental).
    pub parent: Option<String>,
    /// The parent's snapshot the diff started from (incremental).
    pub from_snap: Option<String>,
    /// Why a full backup was forced (full-forced).
    pub reason: Option<String>,
}

#[pymethods]
impl BackupKind {
    /// True for an incremental backup.
    #[getter]
    fn is_incremental(&self) -> bool {
        self.parent.is_some()
    }

    fn __repr__(&self) -> String {
        match (&self.parent, &self.reason) {
            (Some(p), _) => format!("BackupKind.incremental(parent={p:?})"),
            (None, Some(r)) => format!("BackupKind.full_forced(reason={r:?})"),
            _ => "BackupKind.full".to_string(),
        }
    }
}

impl From<backup::BackupKind> for BackupKind {
    fn from(k: backup::BackupKind) -> Self {
        let name = k.name().to_string();
        match k {
            backup::BackupKind::Full => BackupKind { name, parent: None, from_snap: None, reason: None },
            backup::BackupKind::Incremental { parent, from_snap } => {
                BackupKind { name, parent: Some(parent), from_snap: Some(from_snap), reason: None }
            }
            backup::BackupKind::FullForced { reason } => {
                BackupKind { name, parent: None, from_snap: None, reason: Some(reason) }
            }
        }
    }
}

/// The result of ``backup.create``.
#[pyclass(module = "rbd_core._native", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub struct BackupResult {
    /// The backup id.
    pub backup_id: String,
    /// The volume id.
    pub volume_id: String,
    /// Full, incremental, or full-forced.
    pub kind: BackupKind,
    /// The backup image (in the backup pool).
    pub image: String,
    /// The backup snapshot (on the source volume and on the backup image).
    pub snap: String,
    /// The volume size at the snapshot.
    pub size: u64,
    /// Bytes written to the backup image as data or zeros.
    pub bytes_moved: u64,
    /// The transfer's counters.
    pub transfer: TransferStats,
    /// Wall time of the whole recipe, in seconds.
    pub elapsed: f64,
    /// Leftovers of an interrupted run with the same backup id that were removed.
    pub cleaned: Vec<String>,
    /// The backup image's head had changed since the parent snapshot and was rolled back first.
    pub rewound: bool,
    /// Source snapshots removed by ``keep_source_snapshots``.
    pub trimmed: Vec<String>,
    /// Things the caller should know (a forced full backup, a failed trim).
    pub warnings: Vec<String>,
}

#[pymethods]
impl BackupResult {
    fn __repr__(&self) -> String {
        format!(
            "BackupResult(backup_id={:?}, kind={:?}, image={:?}, snap={:?}, size={}, bytes_moved={})",
            self.backup_id, self.kind.name, self.image, self.snap, self.size, self.bytes_moved
        )
    }
}

/// Backs volume ``volume_id`` of ``volumes`` up into ``backups`` (any cluster) as backup
/// ``backup_id``: a full backup into ``volume-<vid>.backup.<bid>``, or with ``parent`` an
/// incremental one onto the parent's backup image (a full one, kind ``full-forced``, when the
/// parent's snapshot is missing). ``keep_source_snapshots`` trims older backup snapshots on the
/// source afterwards. ``volume_metadata`` is Cinder's metadata container (a dict or JSON text)
/// stored in ``backup.<bid>.meta``. Any failure or cancel undoes everything.
#[pyfunction]
#[pyo3(signature = (volumes, volume_id, backups, backup_id, parent=None, image=None, keep_source_snapshots=None, in_flight=16, features=None, volume_metadata=None, on_progress=None, cancel=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn backup_create(
    py: Python<'_>,
    volumes: &Pool,
    volume_id: &str,
    backups: &Pool,
    backup_id: &str,
    parent: Option<&str>,
    image: Option<&str>,
    keep_source_snapshots: Option<usize>,
    in_flight: usize,
    features: Option<u64>,
    volume_metadata: Option<&Bound<'_, PyAny>>,
    on_progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, CancelToken>>,
) -> PyResult<BackupResult> {
    let vol = volume_ref(volumes, volume_id, image);
    let mut b = backup::Backup::new(&vol, &backups.inner, backup_id);
    b.parent(parent).keep_source_snapshots(keep_source_snapshots).in_flight(in_flight);
    if let Some(f) = features {
        b.features(rbd_core::Features(f));
    }
    if let Some(m) = volume_metadata {
        b.volume_metadata(json_arg(m)?);
    }
    let r = progress::run(py, on_progress, cancel, Table::Image, |p| Ok(b.run(p)))?;
    Ok(BackupResult {
        backup_id: r.backup_id,
        volume_id: r.volume_id,
        kind: r.kind.into(),
        image: r.image,
        snap: r.snap,
        size: r.size,
        bytes_moved: r.bytes_moved,
        transfer: r.transfer.into(),
        elapsed: r.elapsed.as_secs_f64(),
        cleaned: r.cleaned,
        rewound: r.rewound,
        trimmed: r.trimmed,
        warnings: r.warnings,
    })
}

/// How a restore wrote the target: ``name`` is ``"diff"`` (new or empty target),
/// ``"rollback"`` (rolled back to the backup's own snapshot, ``snap``), ``"rollback-diff"``
/// (rolled back to an older chain snapshot ``snap``, then the diff) or ``"full"`` (compared
/// both sides and wrote only what differs).
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BackupRestoreKind {
    /// ``diff``, ``rollback``, ``rollback-diff`` or ``full``.
    pub name: String,
    /// The snapshot rolled back to (rollback kinds).
    pub snap: Option<String>,
}

#[pymethods]
impl BackupRestoreKind {
    fn __repr__(&self) -> String {
        format!("RestoreKind(name={:?}, snap={})", self.name, opt_repr(&self.snap))
    }
}

impl From<backup::RestoreKind> for BackupRestoreKind {
    fn from(k: backup::RestoreKind) -> Self {
        let name = k.name().to_string();
        let snap = match k {
            backup::RestoreKind::Rollback { snap } => Some(snap),
            backup::RestoreKind::RollbackDiff { from_snap } => Some(from_snap),
            backup::RestoreKind::Diff | backup::RestoreKind::Full => None,
        };
        BackupRestoreKind { name, snap }
    }
}

/// The result of ``backup.restore``.
#[pyclass(module = "rbd_core._native", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub struct BackupRestore {
    /// The backup id.
    pub backup_id: String,
    /// How the target was written.
    pub kind: BackupRestoreKind,
    /// The backup image the data came from.
    pub image: String,
    /// The backup snapshot.
    pub snap: String,
    /// The target, ``pool/image``.
    pub target: String,
    /// The target did not exist and was created.
    pub created: bool,
    /// The target's final size.
    pub size: u64,
    /// Bytes read from the backup image.
    pub bytes_read: u64,
    /// Bytes written to the target as data.
    pub bytes_written: u64,
    /// Bytes zeroed on the target.
    pub bytes_zeroed: u64,
    /// Bytes compared equal and left alone (``full`` restores).
    pub bytes_unchanged: u64,
    /// Wall time in seconds.
    pub elapsed: f64,
}

#[pymethods]
impl BackupRestore {
    fn __repr__(&self) -> String {
        format!(
            "BackupRestore(backup_id={:?}, kind={:?}, target={:?}, created={}, size={}, bytes_written={})",
            self.backup_id,
            self.kind.name,
            self.target,
            if self.created { "True" } else { "False" },
            self.size,
            self.bytes_written
        )
    }
}

/// Restores backup ``backup_id`` of volume ``volume_id`` (in ``backups``) into volume
/// ``target_volume_id`` of ``target_pool`` (image ``target_image`` when given; the source volume
/// itself is fine). A missing target is created (unless ``create_missing=False``) and removed
/// again on failure. ``size``: the target's final size (default: its current size, or the
/// backup's for a new one).
#[pyfunction]
#[pyo3(signature = (backups, volume_id, backup_id, target_pool, target_volume_id, target_image=None, size=None, create_missing=true, in_flight=16, on_progress=None, cancel=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn backup_restore(
    py: Python<'_>,
    backups: &Pool,
    volume_id: &str,
    backup_id: &str,
    target_pool: &Pool,
    target_volume_id: &str,
    target_image: Option<&str>,
    size: Option<u64>,
    create_missing: bool,
    in_flight: usize,
    on_progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, CancelToken>>,
) -> PyResult<BackupRestore> {
    let target = volume_ref(target_pool, target_volume_id, target_image);
    let mut r = backup::Restore::new(&backups.inner, volume_id, backup_id, &target);
    r.size(size).create_missing(create_missing).in_flight(in_flight);
    let res = progress::run(py, on_progress, cancel, Table::Image, |p| Ok(r.run(p)))?;
    Ok(BackupRestore {
        backup_id: res.backup_id,
        kind: res.kind.into(),
        image: res.image,
        snap: res.snap,
        target: res.target,
        created: res.created,
        size: res.size,
        bytes_read: res.bytes_read,
        bytes_written: res.bytes_written,
        bytes_zeroed: res.bytes_zeroed,
        bytes_unchanged: res.bytes_unchanged,
        elapsed: res.elapsed.as_secs_f64(),
    })
}

/// One backup as ``backup.list_backups`` reads it from the backup pool.
#[pyclass(module = "rbd_core._native", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub struct BackupInfo {
    /// The backup id.
    pub backup_id: String,
    /// The volume id.
    pub volume_id: String,
    /// The backup image holding it.
    pub image: String,
    /// Its snapshot on the backup image (and on the source volume, unless trimmed).
    pub snap: String,
    /// The snapshot id on the backup image.
    pub snap_id: u64,
    /// Unix time from the snapshot name (when the backup started).
    pub time: Option<f64>,
    /// The snapshot's creation time on the backup image (seconds since the epoch).
    pub created: Option<f64>,
    /// The volume size at the backup.
    pub size: u64,
    /// The backup it is an increment of (None for a full backup).
    pub parent: Option<String>,
    /// Bytes changed since the previous snapshot on the image (an upper bound of the increment).
    pub delta_bytes: u64,
    /// The metadata object's JSON text, when there is one (``metadata`` parses it).
    pub metadata_json: Option<String>,
}

#[pymethods]
impl BackupInfo {
    /// True for a full backup (the first of a chain).
    #[getter]
    fn is_full(&self) -> bool {
        self.parent.is_none()
    }

    /// The metadata object's JSON as Python objects, when there is one.
    #[getter]
    fn metadata(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &self.metadata_json {
            None => Ok(None),
            Some(t) => Ok(Some(py.import("json")?.call_method1("loads", (t,))?.unbind())),
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "BackupInfo(backup_id={:?}, image={:?}, snap={:?}, size={}, parent={})",
            self.backup_id,
            self.image,
            self.snap,
            self.size,
            opt_repr(&self.parent)
        )
    }
}

/// Every backup of volume ``volume_id`` in ``backups``, oldest first, with its chain link,
/// sizes and times, read from the backup images and metadata objects.
#[pyfunction]
pub(crate) fn backup_list(py: Python<'_>, backups: &Pool, volume_id: &str) -> PyResult<Vec<BackupInfo>> {
    let p = &backups.inner;
    let v = py.detach(|| backup::list_backups(p, volume_id)).py()?;
    Ok(v.into_iter()
        .map(|b| BackupInfo {
            backup_id: b.backup_id,
            volume_id: b.volume_id,
            image: b.image,
            snap: b.snap,
            snap_id: b.snap_id,
            time: b.time,
            created: b.created.map(unix_seconds),
            size: b.size,
            parent: b.parent,
            delta_bytes: b.delta_bytes,
            metadata_json: b.metadata.map(|m| m.to_string()),
        })
        .collect())
}

/// What ``backup.delete_backup`` removed.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BackupDeletion {
    /// The backup id.
    pub backup_id: String,
    /// The backup image that held it (when found).
    pub image: Option<String>,
    /// Its snapshot on the backup image, removed.
    pub snapshot: Option<String>,
    /// The backup image was removed (no backup snapshot was left on it).
    pub image_removed: bool,
    /// The metadata object was removed.
    pub metadata_removed: bool,
    /// Its snapshots on the source volume, removed.
    pub source_snapshots_removed: Vec<String>,
    /// Things left in place, and why.
    pub warnings: Vec<String>,
}

#[pymethods]
impl BackupDeletion {
    fn __repr__(&self) -> String {
        format!(
            "BackupDeletion(backup_id={:?}, image={}, snapshot={}, image_removed={}, source_snapshots_removed={:?})",
            self.backup_id,
            opt_repr(&self.image),
            opt_repr(&self.snapshot),
            if self.image_removed { "True" } else { "False" },
            self.source_snapshots_removed
        )
    }
}

/// Deletes backup ``backup_id`` of volume ``volume_id``: its snapshot on the backup image, the
/// image once no backup snapshot remains, the metadata object, and (with ``source``, the
/// volume's pool) its snapshot on the source volume. ImageBusy (nothing changed) while a newer
/// incremental depends on it; ImageNotFound when nothing of it exists.
#[pyfunction]
#[pyo3(signature = (backups, volume_id, backup_id, source=None, source_image=None))]
pub(crate) fn backup_delete(
    py: Python<'_>,
    backups: &Pool,
    volume_id: &str,
    backup_id: &str,
    source: Option<&Pool>,
    source_image: Option<&str>,
) -> PyResult<BackupDeletion> {
    let src = source.map(|p| volume_ref(p, volume_id, source_image));
    let b = &backups.inner;
    let d = py.detach(|| backup::delete_backup(b, volume_id, backup_id, src.as_ref())).py()?;
    Ok(BackupDeletion {
        backup_id: d.backup_id,
        image: d.image,
        snapshot: d.snapshot,
        image_removed: d.image_removed,
        metadata_removed: d.metadata_removed,
        source_snapshots_removed: d.source_snapshots_removed,
        warnings: d.warnings,
    })
}

/// The result of ``backup.verify``.
#[pyclass(module = "rbd_core._native", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub struct BackupVerification {
    /// The backup id.
    pub backup_id: String,
    /// The snapshot compared on both sides.
    pub snap: String,
    /// Same size and same content.
    pub matches: bool,
    /// Size of the backup image at the snapshot.
    pub backup_size: u64,
    /// Size of the source volume at the snapshot.
    pub source_size: u64,
    /// sha256 (hex) of the backup's content (size, then offset and bytes of every non-zero
    /// 4 KiB block).
    pub backup_digest: String,
    /// The same digest of the source at the snapshot.
    pub source_digest: String,
    /// Bytes read and compared on each side.
    pub bytes_compared: u64,
    /// Bytes in 4 KiB blocks that differ.
    pub mismatched_bytes: u64,
    /// Offset of the first differing block.
    pub first_mismatch: Option<u64>,
    /// Wall time in seconds.
    pub elapsed: f64,
}

#[pymethods]
impl BackupVerification {
    fn __repr__(&self) -> String {
        format!(
            "BackupVerification(backup_id={:?}, matches={}, bytes_compared={}, mismatched_bytes={})",
            self.backup_id,
            if self.matches { "True" } else { "False" },
            self.bytes_compared,
            self.mismatched_bytes
        )
    }
}

/// Compares the backup at its snapshot with the source volume (in ``source``) at the same
/// snapshot, by content digest. Reads only. ImageNotFound when the backup is missing or the
/// source no longer has the snapshot.
#[pyfunction]
#[pyo3(signature = (backups, volume_id, backup_id, source, source_image=None, on_progress=None, cancel=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn backup_verify(
    py: Python<'_>,
    backups: &Pool,
    volume_id: &str,
    backup_id: &str,
    source: &Pool,
    source_image: Option<&str>,
    on_progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, CancelToken>>,
) -> PyResult<BackupVerification> {
    let src = volume_ref(source, volume_id, source_image);
    let b = &backups.inner;
    let v =
        progress::run(py, on_progress, cancel, Table::Image, |p| Ok(backup::verify(b, volume_id, backup_id, &src, p)))?;
    Ok(BackupVerification {
        backup_id: v.backup_id,
        snap: v.snap,
        matches: v.matches,
        backup_size: v.backup_size,
        source_size: v.source_size,
        backup_digest: v.backup_digest,
        source_digest: v.source_digest,
        bytes_compared: v.bytes_compared,
        mismatched_bytes: v.mismatched_bytes,
        first_mismatch: v.first_mismatch,
        elapsed: v.elapsed.as_secs_f64(),
    })
}

/// What ``backup.trim_source_snapshots`` did.
#[pyclass(module = "rbd_core._native", frozen, eq, get_all)]
#[derive(Clone, PartialEq, Eq)]
pub struct BackupTrimReport {
    /// Snapshots removed, oldest first.
    pub removed: Vec<String>,
    /// Snapshots that could not be removed, with the error text.
    pub failed: BTreeMap<String, String>,
}

#[pymethods]
impl BackupTrimReport {
    fn __repr__(&self) -> String {
        format!("TrimReport(removed={:?}, failed={:?})", self.removed, self.failed)
    }
}

/// Keeps the newest ``keep`` backup snapshots on volume ``volume_id`` of ``volumes`` and
/// removes older ones (the newest always stays; one that cannot be removed is reported).
#[pyfunction]
#[pyo3(signature = (volumes, volume_id, keep, image=None))]
pub(crate) fn backup_trim_source_snapshots(
    py: Python<'_>,
    volumes: &Pool,
    volume_id: &str,
    keep: usize,
    image: Option<&str>,
) -> PyResult<BackupTrimReport> {
    let vol = volume_ref(volumes, volume_id, image);
    let r = py.detach(|| backup::trim_source_snapshots(&vol, keep)).py()?;
    Ok(BackupTrimReport { removed: r.removed, failed: r.failed.into_iter().collect() })
}

/// A parsed backup snapshot name (``backup.<backup_id>.snap.<timestamp>``).
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BackupSnapName {
    /// The backup id.
    pub backup_id: String,
    /// The time part, as written.
    pub timestamp: String,
}

#[pymethods]
impl BackupSnapName {
    /// The time part as seconds since the epoch, when it is a number.
    #[getter]
    fn unix_time(&self) -> Option<f64> {
        self.timestamp.parse().ok()
    }

    fn __repr__(&self) -> String {
        format!("BackupSnapName(backup_id={:?}, timestamp={:?})", self.backup_id, self.timestamp)
    }
}

/// Parses a backup snapshot name with Cinder's pattern; None for other names.
#[pyfunction]
pub(crate) fn backup_parse_snap_name(name: &str) -> Option<BackupSnapName> {
    backup::parse_snap_name(name).map(|p| BackupSnapName { backup_id: p.backup_id, timestamp: p.timestamp })
}

/// ``volume-<volume_id>.backup.<backup_id>``: the image a full backup creates.
#[pyfunction]
pub(crate) fn backup_image_name(volume_id: &str, backup_id: &str) -> String {
    backup::backup_image_name(volume_id, backup_id)
}

/// ``backup.<backup_id>.meta``: the metadata object.
#[pyfunction]
pub(crate) fn backup_meta_object_name(backup_id: &str) -> String {
    backup::meta_object_name(backup_id)
}
