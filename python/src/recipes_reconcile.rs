//! Reconcile (`rbd_core.reconcile`): find — and unless it is a dry run, remove — what crashed
//! recipes left behind, trusting only proof (provenance markers, recipe-only names, nothing
//! depending on the artifact).
//!
//! The scan and the removals run with the GIL released; a ``filter`` callable takes it back
//! for each name it is asked about.

use std::time::Duration;

use parking_lot::Mutex;
use pyo3::prelude::*;

use rbd_core::recipes::reconcile;

use crate::errors::PyResultExt;
use crate::pool::Pool;
use crate::recipes_flatten::seconds;
use crate::recipes_glance::opt_repr;

/// Which rule found a leftover.
#[pyclass(module = "rbd_core._native", frozen, eq, eq_int, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FindingKind {
    /// An image with a provenance marker older than ``min_age``.
    HalfMadeImage = 0,
    /// A Nova uuid4-hex temporary snapshot on an instance disk.
    NovaTempSnapshot = 1,
    /// A ``<dest>.clone_snap`` snapshot without clone children.
    CloneSnapshot = 2,
    /// A ``volume-<id>.deleted`` image without clone children.
    DeletedVolume = 3,
    /// A Cinder delete-journal entry whose volume is gone.
    DeleteJournal = 4,
    /// A source ``backup.<bid>.snap.<time>`` snapshot without its backup counterpart.
    BackupSourceSnapshot = 5,
    /// A backup image without any snapshot, left by an interrupted full backup.
    HalfMadeBackupImage = 6,
    /// The ``backup.<bid>.meta`` object of a backup that no longer exists.
    BackupMetadata = 7,
    /// A flatten-throttle slot lock held by a dead holder.
    StaleSlotLock = 8,
}

impl From<reconcile::FindingKind> for FindingKind {
    fn from(k: reconcile::FindingKind) -> Self {
        use reconcile::FindingKind as K;
        match k {
            K::HalfMadeImage => FindingKind::HalfMadeImage,
            K::NovaTempSnapshot => FindingKind::NovaTempSnapshot,
            K::CloneSnapshot => FindingKind::CloneSnapshot,
            K::DeletedVolume => FindingKind::DeletedVolume,
            K::DeleteJournal => FindingKind::DeleteJournal,
            K::BackupSourceSnapshot => FindingKind::BackupSourceSnapshot,
            K::HalfMadeBackupImage => FindingKind::HalfMadeBackupImage,
            K::BackupMetadata => FindingKind::BackupMetadata,
            K::StaleSlotLock => FindingKind::StaleSlotLock,
        }
    }
}

impl FindingKind {
    fn lib(self) -> reconcile::FindingKind {
        use reconcile::FindingKind as K;
        match self {
            FindingKind::HalfMadeImage => K::HalfMadeImage,
            FindingKind::NovaTempSnapshot => K::NovaTempSnapshot,
            FindingKind::CloneSnapshot => K::CloneSnapshot,
            FindingKind::DeletedVolume => K::DeletedVolume,
            FindingKind::DeleteJournal => K::DeleteJournal,
            FindingKind::BackupSourceSnapshot => K::BackupSourceSnapshot,
            FindingKind::HalfMadeBackupImage => K::HalfMadeBackupImage,
            FindingKind::BackupMetadata => K::BackupMetadata,
            FindingKind::StaleSlotLock => K::StaleSlotLock,
        }
    }
}

#[pymethods]
impl FindingKind {
    /// The short stable name (``half-made-image``, ``nova-temp-snapshot``, ...).
    #[getter]
    fn label(&self) -> &'static str {
        self.lib().name()
    }
}

/// One orphan, and what was done with it: ``action`` is ``"planned"`` (dry run),
/// ``"removed"`` or ``"failed"`` (left alone; ``error`` says why).
#[pyclass(module = "rbd_core._native", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub struct Finding {
    /// Which rule found it.
    pub kind: FindingKind,
    /// The pool (``pool`` or ``pool/namespace``).
    pub pool: String,
    /// The image (the gone volume for journal entries, the object for backup metadata).
    pub image: String,
    /// The snapshot, for snapshot findings.
    pub snap: Option<String>,
    /// Why it is an orphan (the proof).
    pub reason: String,
    /// How old the artifact is in seconds, where known.
    pub age: Option<f64>,
    /// ``planned``, ``removed`` or ``failed``.
    pub action: String,
    /// Why removing it failed (``action == "failed"``).
    pub error: Option<String>,
}

#[pymethods]
impl Finding {
    /// ``pool/image[@snap]``.
    #[getter]
    fn spec(&self) -> String {
        match &self.snap {
            Some(s) => format!("{}/{}@{s}", self.pool, self.image),
            None => format!("{}/{}", self.pool, self.image),
        }
    }

    fn __repr__(&self) -> String {
        format!("Finding({} {} action={:?})", self.kind.lib().name(), self.spec(), self.action)
    }
}

/// Something that looked like a leftover but was not proven one, and was left alone.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Skipped {
    /// The rule it nearly matched.
    pub kind: FindingKind,
    /// The pool.
    pub pool: String,
    /// The image (or object, or gone volume).
    pub image: String,
    /// The snapshot, if any.
    pub snap: Option<String>,
    /// Why it was left alone.
    pub reason: String,
}

#[pymethods]
impl Skipped {
    fn __repr__(&self) -> String {
        format!(
            "Skipped({} {}/{}@{}: {})",
            self.kind.lib().name(),
            self.pool,
            self.image,
            opt_repr(&self.snap),
            self.reason
        )
    }
}

/// The result of ``reconcile.run``.
#[pyclass(module = "rbd_core._native", frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub struct ReconcileReport {
    /// True for a dry run (every action is ``planned``).
    pub dry_run: bool,
    /// The orphans, in the order they are (or would be) removed.
    pub findings: Vec<Finding>,
    /// Near misses left alone, with the reason.
    pub skipped: Vec<Skipped>,
    /// Things the caller should know.
    pub notes: Vec<String>,
}

#[pymethods]
impl ReconcileReport {
    /// Findings removed by this run.
    #[getter]
    fn removed(&self) -> usize {
        self.findings.iter().filter(|f| f.action == "removed").count()
    }

    /// Findings whose removal failed.
    #[getter]
    fn failed(&self) -> usize {
        self.findings.iter().filter(|f| f.action == "failed").count()
    }

    fn __repr__(&self) -> String {
        format!(
            "ReconcileReport(dry_run={}, findings={}, skipped={}, notes={})",
            if self.dry_run { "True" } else { "False" },
            self.findings.len(),
            self.skipped.len(),
            self.notes.len()
        )
    }
}

impl From<reconcile::ReconcileReport> for ReconcileReport {
    fn from(r: reconcile::ReconcileReport) -> Self {
        ReconcileReport {
            dry_run: r.dry_run,
            findings: r
                .findings
                .into_iter()
                .map(|f| {
                    let (action, error) = match f.action {
                        reconcile::Action::Planned => ("planned", None),
                        reconcile::Action::Removed => ("removed", None),
                        reconcile::Action::Failed(m) => ("failed", Some(m)),
                    };
                    Finding {
                        kind: f.kind.into(),
                        pool: f.pool,
                        image: f.image,
                        snap: f.snap,
                        reason: f.reason,
                        age: f.age.map(|d| d.as_secs_f64()),
                        action: action.to_string(),
                        error,
                    }
                })
                .collect(),
            skipped: r
                .skipped
                .into_iter()
                .map(|s| Skipped { kind: s.kind.into(), pool: s.pool, image: s.image, snap: s.snap, reason: s.reason })
                .collect(),
            notes: r.notes,
        }
    }
}

/// Scans ``pools`` (each in its namespace; any clusters) for leftovers of crashed recipes and,
/// with ``dry_run=False``, removes them (in an order that works, re-checking each just before).
/// ``backup_target``: the backup pool whose images hold the counterparts of source backup
/// snapshots (without it backup leftovers are not checked). ``min_age`` (seconds, default
/// 600): younger artifacts are left alone. ``slot_lease``: the flatten throttle's lease.
/// ``prefix`` and/or ``filter`` (a callable taking a name, returning a bool) restrict which
/// images, journal entries and backup objects are considered; evidence is never filtered.
#[pyfunction]
#[pyo3(signature = (pools, backup_target=None, min_age=600.0, dry_run=true, slot_lease=10.0, prefix=None, filter=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn reconcile_run(
    py: Python<'_>,
    pools: Vec<PyRef<'_, Pool>>,
    backup_target: Option<&Pool>,
    min_age: f64,
    dry_run: bool,
    slot_lease: f64,
    prefix: Option<String>,
    filter: Option<Py<PyAny>>,
) -> PyResult<ReconcileReport> {
    let libs: Vec<&rbd_core::Pool> = pools.iter().map(|p| &*p.inner).collect();
    let mut r = reconcile::Reconcile::new(&libs);
    r.backup_target(backup_target.map(|p| &*p.inner))
        .min_age(seconds("min_age", min_age)?)
        .dry_run(dry_run)
        .slot_lease(seconds("slot_lease", slot_lease)?);
    // The first exception the filter raised: it stops considering names, and is raised after.
    let failure: std::sync::Arc<Mutex<Option<PyErr>>> = std::sync::Arc::default();
    if prefix.is_some() || filter.is_some() {
        let fail = failure.clone();
        r.filter(move |name: &str| {
            if prefix.as_deref().is_some_and(|p| !name.starts_with(p)) {
                return false;
            }
            let Some(f) = &filter else { return true };
            if fail.lock().is_some() {
                return false;
            }
            Python::attach(|py| match f.call1(py, (name,)).and_then(|v| v.bind(py).is_truthy()) {
                Ok(keep) => keep,
                Err(e) => {
                    fail.lock().get_or_insert(e);
                    false
                }
            })
        });
    }
    let r = &r;
    let out = py.detach(|| r.run());
    if let Some(e) = failure.lock().take() {
        return Err(e);
    }
    Ok(out.py()?.into())
}

/// The default ``min_age`` in seconds.
pub(crate) fn default_min_age() -> f64 {
    Duration::as_secs_f64(&reconcile::DEFAULT_MIN_AGE)
}
