//! Volume snapshots: create (protected, as Cinder does), delete (flatten or refuse clone
//! children), revert a volume to a snapshot.

use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::pool::Pool;
use crate::progress::Progress;
use crate::recipes::flatten::FlattenGate;
use crate::recipes::saga::Saga;
use crate::util::spec;

use super::{
    gate_or_default, snapshot_name, tolerate, unprotect_if_protected, validate_id, volume_info, volume_name, Volume,
};

/// A volume snapshot as [`create_snapshot`] leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSnapshot {
    /// Pool name.
    pub pool: String,
    /// The volume's image name (`volume-<id>`).
    pub volume: String,
    /// The snapshot name (`snapshot-<id>`).
    pub name: String,
    /// The volume size when the snapshot was taken.
    pub size: u64,
    /// Whether the snapshot is protected (always, as Cinder does).
    pub protected: bool,
}

/// Snapshots volume `volume-<volume_id>` as `snapshot-<snapshot_id>` and protects it (Cinder's
/// `create_snapshot`: `rbd snap create` + `rbd snap protect`). Wraps `rbd_snap_create2` and
/// `rbd_snap_protect`.
///
/// Failpoints: `cinder.create_snapshot.{inspect,snapshot,protect,commit}`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`] for bad ids, [`ErrorKind::NotFound`] when the volume is
/// missing, [`ErrorKind::Exists`] when the snapshot exists (nothing changed),
/// [`ErrorKind::QuotaExceeded`] over the snapshot limit.
pub fn create_snapshot(pool: &Pool, volume_id: &str, snapshot_id: &str) -> Result<VolumeSnapshot> {
    const OP: &str = "cinder.create_snapshot";
    validate_id(OP, "volume id", volume_id)?;
    validate_id(OP, "snapshot id", snapshot_id)?;
    let name = volume_name(volume_id);
    let snap = snapshot_name(snapshot_id);
    let _span =
        tracing::info_span!("cinder.create_snapshot", pool = %pool.name(), image = %name, snap = %snap).entered();
    let undo = || match Image::open(pool, &name) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(img) => {
            unprotect_if_protected(&img, &snap)?;
            tolerate(img.snap_remove(&snap), &[ErrorKind::NotFound])
        }
    };
    let mut s = Saga::new(OP);
    let img = s.check("inspect", || {
        let img = Image::open(pool, &name)?;
        if img.snap_exists(&snap)? {
            return Err(
                Error::new(ErrorKind::Exists, OP, "the snapshot exists").with_target(pool.spec(&name, Some(&snap)))
            );
        }
        Ok(img)
    })?;
    s.step("snapshot", || img.snap_create(&snap), undo)?;
    s.step("protect", || img.snap_protect(&snap), undo)?;
    let size = s.check("describe", || Image::open_at_snap(pool, &name, &snap)?.size())?;
    s.commit()?;
    Ok(VolumeSnapshot { pool: pool.name().to_string(), volume: name, name: snap, size, protected: true })
}

/// What [`delete_snapshot`] does with clone children of the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChildrenPolicy {
    /// Flatten them (through the flatten gate), then delete the snapshot (Cinder since 2023).
    #[default]
    Flatten,
    /// Fail with [`ErrorKind::Busy`] and change nothing.
    Refuse,
}

/// What [`delete_snapshot`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDeletion {
    /// `pool/volume@snapshot`.
    pub snapshot: String,
    /// False when the volume or snapshot did not exist (success, as in Cinder).
    pub removed: bool,
    /// Children flattened first (`pool/image`).
    pub flattened_children: Vec<String>,
}

/// Deletes volume snapshot `volume-<id>@snapshot-<sid>` (Cinder's `delete_snapshot`): checks
/// the snapshot's clone children explicitly, flattens them or refuses, then unprotects and
/// removes it. A refusal changes nothing; flattening is one-way (a failure after it leaves
/// the children flattened and the snapshot in place, protected).
///
/// Failpoints: `cinder.delete_snapshot.{inspect,flatten_children,unprotect,remove,commit}`.
#[derive(Clone)]
pub struct DeleteSnapshot {
    volume_id: String,
    snapshot_id: String,
    on_children: ChildrenPolicy,
    gate: Option<Arc<dyn FlattenGate>>,
}

impl std::fmt::Debug for DeleteSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeleteSnapshot")
            .field("volume_id", &self.volume_id)
            .field("snapshot_id", &self.snapshot_id)
            .field("on_children", &self.on_children)
            .field("gate", &self.gate.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl DeleteSnapshot {
    /// Delete `volume-<volume_id>@snapshot-<snapshot_id>`, flattening children by default.
    pub fn new(volume_id: &str, snapshot_id: &str) -> DeleteSnapshot {
        DeleteSnapshot {
            volume_id: volume_id.into(),
            snapshot_id: snapshot_id.into(),
            on_children: ChildrenPolicy::Flatten,
            gate: None,
        }
    }

    /// What to do with clone children.
    pub fn on_children(&mut self, policy: ChildrenPolicy) -> &mut Self {
        self.on_children = policy;
        self
    }

    /// Flatten through `gate` instead of the process-wide default.
    pub fn gate(&mut self, gate: Arc<dyn FlattenGate>) -> &mut Self {
        self.gate = Some(gate);
        self
    }

    /// Runs the recipe; `progress` reports each child flatten and may cancel.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for bad ids, [`ErrorKind::Busy`] when children exist
    /// and the policy is [`ChildrenPolicy::Refuse`] (nothing changed), [`ErrorKind::Cancelled`],
    /// flatten and snapshot errors.
    pub fn run(&self, pool: &Pool, progress: &mut Progress<'_>) -> Result<SnapshotDeletion> {
        const OP: &str = "cinder.delete_snapshot";
        validate_id(OP, "volume id", &self.volume_id)?;
        validate_id(OP, "snapshot id", &self.snapshot_id)?;
        let name = volume_name(&self.volume_id);
        let snap = snapshot_name(&self.snapshot_id);
        let _span = tracing::info_span!("cinder.delete_snapshot", pool = %pool.name(), image = %name, snap = %snap,
            policy = ?self.on_children)
        .entered();
        let mut rep = SnapshotDeletion {
            snapshot: pool.spec(&name, Some(&snap)),
            removed: false,
            flattened_children: Vec::new(),
        };

        let mut s = Saga::new(OP);
        let found = s.check("inspect", || {
            let img = match Image::open(pool, &name) {
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                r => r?,
            };
            if !img.snap_exists(&snap)? {
                return Ok(None);
            }
            let children = img.children_of_snap(&snap)?;
            if !children.is_empty() && self.on_children == ChildrenPolicy::Refuse {
                let list: Vec<String> =
                    children.iter().map(|c| spec(&c.pool, &c.pool_namespace, &c.image, None)).collect();
                return Err(Error::new(
                    ErrorKind::Busy,
                    OP,
                    format!("the snapshot has clone children: {}", list.join(", ")),
                )
                .with_target(rep.snapshot.clone()));
            }
            Ok(Some((img, children)))
        })?;
        let Some((img, children)) = found else {
            s.commit()?;
            return Ok(rep);
        };
        if !children.is_empty() {
            let gate = gate_or_default(&self.gate);
            s.check("flatten_children", || {
                for c in &children {
                    let cpool = Pool::open_ns(pool.cluster(), &c.pool, &c.pool_namespace)?;
                    let child = match Image::open_by_id(&cpool, &c.image_id, false) {
                        Err(e) if e.kind() == ErrorKind::NotFound => continue,
                        r => r?,
                    };
                    tolerate(gate.flatten(&child, progress), &[ErrorKind::InvalidArgument])?;
                    rep.flattened_children.push(spec(&c.pool, &c.pool_namespace, &c.image, None));
                }
                Ok(())
            })?;
        }
        let was_protected = img.snap_is_protected(&snap)?;
        let (name, snap) = (&name, &snap);
        s.step(
            "unprotect",
            || unprotect_if_protected(&img, snap),
            move || {
                let img = Image::open(pool, name)?;
                if was_protected && img.snap_exists(snap)? && !img.snap_is_protected(snap)? {
                    img.snap_protect(snap)?;
                }
                Ok(())
            },
        )?;
        s.check("remove", || tolerate(img.snap_remove(snap), &[ErrorKind::NotFound]))?;
        s.commit()?;
        rep.removed = true;
        Ok(rep)
    }
}

/// [`DeleteSnapshot`] with `on_children` and otherwise defaults (default gate, no progress).
///
/// # Errors
/// As [`DeleteSnapshot::run`].
pub fn delete_snapshot(
    pool: &Pool,
    volume_id: &str,
    snapshot_id: &str,
    on_children: ChildrenPolicy,
) -> Result<SnapshotDeletion> {
    DeleteSnapshot::new(volume_id, snapshot_id).on_children(on_children).run(pool, &mut Progress::none())
}

/// Rolls volume `volume-<id>` back to `snapshot-<sid>` (Cinder's `revert_to_snapshot`),
/// reporting progress once per object; the volume keeps its current size when it was
/// extended after the snapshot (as Cinder's manager does). Wraps
/// `rbd_snap_rollback_with_progress` and `rbd_resize2`.
///
/// A rollback cannot be undone: a failure or cancel part-way leaves the head partly rolled
/// back (run it again to finish).
///
/// Failpoints: `cinder.revert.{inspect,rollback,grow,describe,commit}`.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`] for bad ids, [`ErrorKind::NotFound`] when the volume or
/// snapshot is missing, [`ErrorKind::ReadOnly`] when another client holds the exclusive lock
/// (the volume is attached), [`ErrorKind::Cancelled`].
pub fn revert_to_snapshot(
    pool: &Pool,
    volume_id: &str,
    snapshot_id: &str,
    progress: &mut Progress<'_>,
) -> Result<Volume> {
    const OP: &str = "cinder.revert";
    validate_id(OP, "volume id", volume_id)?;
    validate_id(OP, "snapshot id", snapshot_id)?;
    let name = volume_name(volume_id);
    let snap = snapshot_name(snapshot_id);
    let _span = tracing::info_span!("cinder.revert", pool = %pool.name(), image = %name, snap = %snap).entered();
    let mut s = Saga::new(OP);
    let (img, size) = s.check("inspect", || {
        let img = Image::open(pool, &name)?;
        img.snap_id(&snap)?; // NotFound before anything changes
        let size = img.size()?;
        Ok((img, size))
    })?;
    s.check("rollback", || {
        let r = img.snap_rollback_with_progress(&snap, progress);
        if r.is_err() {
            // librbd resizes to the snapshot's size first; keep the volume's size anyway.
            if let Err(e) = grow_to(&img, size) {
                tracing::warn!(error = %e, "could not restore the size after a failed rollback");
            }
        }
        r
    })?;
    s.check("grow", || grow_to(&img, size))?;
    drop(img);
    let v = s.check("describe", || volume_info(pool, volume_id))?;
    s.commit()?;
    Ok(v)
}

fn grow_to(img: &Image, size: u64) -> Result<()> {
    if img.size()? < size {
        img.resize(size, false)?;
    }
    Ok(())
}
