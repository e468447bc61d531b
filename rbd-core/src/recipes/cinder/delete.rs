//! Volume deletion (Cinder's `delete_volume`), with parent references cleaned on every path.

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::layering::{ChildInfo, ParentInfo};
use crate::options::Features;
use crate::pool::Pool;
use crate::progress::Progress;
use crate::recipes::flatten::FlattenGate;
use crate::recipes::saga::Saga;
use crate::snapshot::SnapNamespace;
use crate::util::spec;

use super::{
    clone_snap_name, gate_or_default, is_backup_snap, tolerate, unprotect_if_protected, validate_id, volume_name,
    CLONE_SNAP_SUFFIX, DELETED_SUFFIX,
};

/// What [`delete_volume`] did with the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The image is gone.
    Removed,
    /// The image still had (non-temporary) snapshots, so it was moved to the trash (Cinder's
    /// fallback); the trash purge removes it.
    Trashed,
    /// The image has clone children and `keep_children_as_clones` was set: it was renamed to
    /// `volume-<id>.deleted` and is removed when its last child is deleted.
    RenamedDeleted,
    /// There was no such volume (success, as in Cinder).
    NotFound,
}

/// The full account of a volume deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDeletion {
    /// What happened to the volume.
    pub outcome: DeleteOutcome,
    /// The image name at the end (`volume-<id>`, or `volume-<id>.deleted`).
    pub name: String,
    /// The trash id, for [`DeleteOutcome::Trashed`].
    pub trash_id: Option<String>,
    /// Snapshots removed from the volume: backup snapshots and `.clone_snap` snapshots
    /// without children.
    pub removed_snapshots: Vec<String>,
    /// Clone children flattened (`pool/image`) so the volume could go.
    pub flattened_children: Vec<String>,
    /// `pool/image@snap` parent snapshots removed because their only child (this volume, or
    /// a collected `.deleted` ancestor) is gone.
    pub parent_snapshots_removed: Vec<String>,
    /// `.deleted` ancestors removed because their last child went (`pool/image`).
    pub collected_parents: Vec<String>,
}

/// Deletes volume `volume-<id>` in Cinder's order: remove backup snapshots, plain remove; if
/// that fails (snapshots or clone children), flatten the children through the
/// [`FlattenGate`] (one at a time) or, with
/// [`keep_children_as_clones`](DeleteVolume::keep_children_as_clones), rename to
/// `volume-<id>.deleted`; remove leftover `.clone_snap` snapshots, retry the remove (with
/// backoff while watchers hold it), and move to the trash when real snapshots remain.
///
/// On every path that removes or trashes the volume, its parent snapshot
/// `<parent>@volume-<id>.clone_snap` is removed (unprotected first) once no other clone uses
/// it, and a `.deleted` parent left without children is removed too, up the chain.
///
/// Deleting is one-way: a failure or crash part-way leaves a state in which running the
/// delete again finishes the job. Before the volume is removed, the parent snapshot to clean
/// is recorded in the pool's metadata ([`JOURNAL_KEY_PREFIX`]), so even a crash between
/// removing the volume and cleaning its parent is finished by a re-run (which finds the
/// volume gone and follows the journal). Failures before anything is removed change nothing,
/// and the rename of the `keep_children_as_clones` path is undone.
///
/// Failpoints: `cinder.delete_volume.{inspect,journal,backup_snaps,remove,children,
/// flatten_children,drop_clone_snaps,rename,clear_journal,retry_remove,trash,parent_refs,
/// commit}` (those on the path taken).
#[derive(Clone)]
pub struct DeleteVolume {
    volume_id: String,
    keep_children_as_clones: bool,
    gate: Option<Arc<dyn FlattenGate>>,
    trash_delay: Duration,
    busy_retries: u32,
    busy_interval: Duration,
}

impl std::fmt::Debug for DeleteVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeleteVolume")
            .field("volume_id", &self.volume_id)
            .field("keep_children_as_clones", &self.keep_children_as_clones)
            .field("trash_delay", &self.trash_delay)
            .field("busy_retries", &self.busy_retries)
            .field("busy_interval", &self.busy_interval)
            .field("gate", &self.gate.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl DeleteVolume {
    /// Delete `volume-<volume_id>`. Defaults: flatten children, trash delay 0, 3 retries with
    /// 5 s then 10 s, 20 s waits while the image is busy (Cinder's `_try_remove_volume`).
    pub fn new(volume_id: &str) -> DeleteVolume {
        DeleteVolume {
            volume_id: volume_id.into(),
            keep_children_as_clones: false,
            gate: None,
            trash_delay: Duration::ZERO,
            busy_retries: 3,
            busy_interval: Duration::from_secs(5),
        }
    }

    /// Keep clone children as clones: rename the volume to `volume-<id>.deleted` instead of
    /// flattening them (default false).
    pub fn keep_children_as_clones(&mut self, yes: bool) -> &mut Self {
        self.keep_children_as_clones = yes;
        self
    }

    /// Flatten children through `gate` instead of the process-wide default.
    pub fn gate(&mut self, gate: Arc<dyn FlattenGate>) -> &mut Self {
        self.gate = Some(gate);
        self
    }

    /// Deferment for the trash fallback (Cinder's `deferred_deletion_delay`).
    pub fn trash_delay(&mut self, delay: Duration) -> &mut Self {
        self.trash_delay = delay;
        self
    }

    /// Retries of the remove while the image is busy, and the first wait (doubling).
    pub fn busy_retries(&mut self, retries: u32, first_wait: Duration) -> &mut Self {
        self.busy_retries = retries;
        self.busy_interval = first_wait;
        self
    }

    /// Runs the recipe; `progress` reports each child flatten and may cancel.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a bad id, [`ErrorKind::Busy`] while watchers keep
    /// the image open after the retries (or children cannot be detached),
    /// [`ErrorKind::Exists`] when `volume-<id>.deleted` already exists,
    /// [`ErrorKind::Cancelled`], and librbd errors of each step.
    pub fn run(&self, pool: &Pool, progress: &mut Progress<'_>) -> Result<VolumeDeletion> {
        const OP: &str = "cinder.delete_volume";
        validate_id(OP, "volume id", &self.volume_id)?;
        let name = volume_name(&self.volume_id);
        let deleted = format!("{name}{DELETED_SUFFIX}");
        let _span = tracing::info_span!("cinder.delete_volume", pool = %pool.name(), image = %name,
            keep_children_as_clones = self.keep_children_as_clones)
        .entered();
        let mut rep = VolumeDeletion {
            outcome: DeleteOutcome::NotFound,
            name: name.clone(),
            trash_id: None,
            removed_snapshots: Vec::new(),
            flattened_children: Vec::new(),
            parent_snapshots_removed: Vec::new(),
            collected_parents: Vec::new(),
        };

        let mut s = Saga::new(OP);
        let found = s.check("inspect", || match Image::open_read_only(pool, &name) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            r => Ok(Some(volume_parent(&r?)?.map(ParentRef::from))),
        })?;
        let Some(parent) = found else {
            // Gone already; an interrupted earlier delete may have left its parent's
            // `.clone_snap` (or a childless `.deleted` parent): the journal says where.
            if let Some(p) = read_journal(pool, &name) {
                s.check("parent_refs", || clean_parent_refs(pool, &name, Some(p), &mut rep))?;
            }
            s.commit()?;
            return Ok(rep);
        };
        let parent = parent.filter(|p| p.is_clone_snap_of(&name));
        if let Some(p) = &parent {
            s.step(
                "journal",
                || {
                    write_journal(pool, &name, p);
                    Ok(())
                },
                // Undone only while the volume is still there (its parent link is intact).
                || if pool.image_exists(&name)? { clear_journal(pool, &name) } else { Ok(()) },
            )?;
        }
        s.check("backup_snaps", || drop_snaps(pool, &name, is_backup_snap, &mut rep.removed_snapshots))?;
        rep.outcome = match s.check("remove", || try_remove(pool, &name))? {
            Removal::Removed => DeleteOutcome::Removed,
            Removal::NotFound => DeleteOutcome::NotFound,
            Removal::HasSnapshots | Removal::Busy => {
                let children = s.check("children", || Image::open_read_only(pool, &name)?.children())?;
                if !children.is_empty() && self.keep_children_as_clones {
                    s.check("drop_clone_snaps", || drop_snaps(pool, &name, is_clone_snap, &mut rep.removed_snapshots))?;
                    s.step(
                        "rename",
                        || pool.rename_image(&name, &deleted),
                        || tolerate(pool.rename_image(&deleted, &name), &[ErrorKind::NotFound]),
                    )?;
                    s.check("clear_journal", || clear_journal(pool, &name))?;
                    s.commit()?;
                    rep.outcome = DeleteOutcome::RenamedDeleted;
                    rep.name = deleted;
                    return Ok(rep);
                }
                if !children.is_empty() {
                    let gate = gate_or_default(&self.gate);
                    s.check("flatten_children", || {
                        for c in &children {
                            flatten_child(pool.cluster(), c, gate.as_ref(), progress)?;
                            rep.flattened_children.push(spec(&c.pool, &c.pool_namespace, &c.image, None));
                        }
                        Ok(())
                    })?;
                }
                s.check("drop_clone_snaps", || drop_snaps(pool, &name, is_clone_snap, &mut rep.removed_snapshots))?;
                match s.check("retry_remove", || self.remove_with_retries(pool, &name))? {
                    Removal::Removed => DeleteOutcome::Removed,
                    Removal::NotFound => DeleteOutcome::NotFound,
                    Removal::Busy => {
                        let e = Error::new(ErrorKind::Busy, OP, "the volume is busy (watchers keep it open)")
                            .with_target(pool.spec(&name, None));
                        return Err(s.fail("retry_remove", e));
                    }
                    Removal::HasSnapshots => {
                        rep.trash_id = Some(s.check("trash", || {
                            let id = Image::open_read_only(pool, &name)?.id()?;
                            pool.trash_move(&name, self.trash_delay)?;
                            Ok(id)
                        })?);
                        DeleteOutcome::Trashed
                    }
                }
            }
        };
        s.check("parent_refs", || clean_parent_refs(pool, &name, parent, &mut rep))?;
        s.commit()?;
        Ok(rep)
    }

    /// Removes, retrying while busy; `Busy` when still busy after the last retry.
    fn remove_with_retries(&self, pool: &Pool, name: &str) -> Result<Removal> {
        let mut wait = self.busy_interval;
        for attempt in 0..=self.busy_retries {
            match try_remove(pool, name)? {
                Removal::Busy if attempt < self.busy_retries => {
                    tracing::info!(image = name, attempt, wait_s = wait.as_secs_f32(), "volume busy; retrying remove");
                    std::thread::sleep(wait);
                    wait = wait.saturating_mul(2);
                }
                other => return Ok(other),
            }
        }
        Ok(Removal::Busy)
    }
}

/// [`DeleteVolume`] with defaults (flatten children, default gate, no progress).
///
/// # Errors
/// As [`DeleteVolume::run`].
pub fn delete_volume(pool: &Pool, volume_id: &str) -> Result<DeleteOutcome> {
    Ok(DeleteVolume::new(volume_id).run(pool, &mut Progress::none())?.outcome)
}

enum Removal {
    Removed,
    NotFound,
    HasSnapshots,
    Busy,
}

fn try_remove(pool: &Pool, name: &str) -> Result<Removal> {
    match pool.remove_image(name) {
        Ok(()) => Ok(Removal::Removed),
        Err(e) => match e.kind() {
            ErrorKind::NotFound => Ok(Removal::NotFound),
            ErrorKind::HasSnapshots => Ok(Removal::HasSnapshots),
            ErrorKind::Busy => Ok(Removal::Busy),
            _ => Err(e),
        },
    }
}

fn is_clone_snap(name: &str) -> bool {
    name.ends_with(CLONE_SNAP_SUFFIX)
}

/// The volume's parent: of the head, or (after a flatten without deep-flatten, which leaves
/// the snapshots attached) of any snapshot.
fn volume_parent(img: &Image) -> Result<Option<ParentInfo>> {
    if let Some(p) = img.parent()? {
        return Ok(Some(p));
    }
    if img.features()?.contains(Features::DEEP_FLATTEN) {
        return Ok(None);
    }
    for snap in img.snapshots()? {
        let mut at = Image::open_by_id(img.pool(), &img.id()?, true)?;
        at.set_snap_by_id(Some(snap.id))?;
        if let Some(p) = at.parent()? {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// Removes the user snapshots of `pool/name` whose names match `pick` and that have no clone
/// children (unprotecting first); records their names.
fn drop_snaps(pool: &Pool, name: &str, pick: impl Fn(&str) -> bool, removed: &mut Vec<String>) -> Result<()> {
    let img = Image::open(pool, name)?;
    for snap in img.snapshots()? {
        if snap.namespace != SnapNamespace::User || !pick(&snap.name) {
            continue;
        }
        if !img.children_of_snap(&snap.name)?.is_empty() {
            continue;
        }
        unprotect_if_protected(&img, &snap.name)?;
        tolerate(img.snap_remove(&snap.name), &[ErrorKind::NotFound])?;
        removed.push(snap.name);
    }
    Ok(())
}

/// Flattens one child (by id, so trashed children work too); already flat or gone is fine.
fn flatten_child(cluster: &Cluster, c: &ChildInfo, gate: &dyn FlattenGate, progress: &mut Progress<'_>) -> Result<()> {
    let pool = Pool::open_ns(cluster, &c.pool, &c.pool_namespace)?;
    let img = match Image::open_by_id(&pool, &c.image_id, false) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        r => r?,
    };
    tolerate(gate.flatten(&img, progress), &[ErrorKind::InvalidArgument])
}

/// Where a volume's parent snapshot is: what the delete journal records.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ParentRef {
    pool: String,
    namespace: String,
    image_id: String,
    /// The parent's name when recorded (to follow its own journal once it is gone).
    image: String,
    snap: String,
    user_snap: bool,
}

impl From<ParentInfo> for ParentRef {
    fn from(p: ParentInfo) -> ParentRef {
        ParentRef {
            user_snap: p.snap_namespace == SnapNamespace::User,
            pool: p.pool,
            namespace: p.pool_namespace,
            image_id: p.image_id,
            image: p.image,
            snap: p.snap,
        }
    }
}

impl ParentRef {
    /// True when this is Cinder's `<child>.clone_snap`: the only parent snapshots a delete removes.
    fn is_clone_snap_of(&self, child: &str) -> bool {
        self.user_snap && self.snap == clone_snap_name(child)
    }

    fn to_json(&self) -> String {
        serde_json::json!({"pool": self.pool, "namespace": self.namespace, "image_id": self.image_id,
            "image": self.image, "snap": self.snap})
        .to_string()
    }

    fn from_json(v: &str) -> Option<ParentRef> {
        let v: serde_json::Value = serde_json::from_str(v).ok()?;
        let f = |k: &str| v.get(k).and_then(serde_json::Value::as_str).map(str::to_string);
        Some(ParentRef {
            pool: f("pool")?,
            namespace: f("namespace")?,
            image_id: f("image_id")?,
            image: f("image")?,
            snap: f("snap")?,
            user_snap: true,
        })
    }
}

/// Pool-metadata key of the delete journal of image `name`.
///
/// While a volume (or a collected `.deleted` ancestor) is being removed, its pool holds
/// `rbd_core.cinder.parent_ref.<name>` = the parent snapshot to clean afterwards, so a delete
/// interrupted between removing the child and cleaning its parent is finished by running it
/// again (the child's name no longer leads anywhere). Cleared when the parent is clean.
pub const JOURNAL_KEY_PREFIX: &str = "rbd_core.cinder.parent_ref.";

/// Records `parent` for `name` (best effort: without it only crash recovery is lost).
fn write_journal(pool: &Pool, name: &str, parent: &ParentRef) {
    if let Err(e) = pool.pool_metadata_set(&format!("{JOURNAL_KEY_PREFIX}{name}"), &parent.to_json()) {
        tracing::warn!(image = name, error = %e, "could not record the parent reference journal");
    }
}

fn read_journal(pool: &Pool, name: &str) -> Option<ParentRef> {
    match pool.pool_metadata_get(&format!("{JOURNAL_KEY_PREFIX}{name}")) {
        Ok(v) => ParentRef::from_json(&v),
        Err(e) => {
            if e.kind() != ErrorKind::NotFound {
                tracing::warn!(image = name, error = %e, "could not read the parent reference journal");
            }
            None
        }
    }
}

fn clear_journal(pool: &Pool, name: &str) -> Result<()> {
    tolerate(pool.pool_metadata_remove(&format!("{JOURNAL_KEY_PREFIX}{name}")), &[ErrorKind::NotFound])
}

/// Removes `parent@<child>.clone_snap` once nothing but trashed clones use it, then collects a
/// `.deleted` parent left without children, and repeats for its parent. Each hop's journal
/// entry is cleared once the hop is done.
fn clean_parent_refs(
    child_pool: &Pool,
    child: &str,
    parent: Option<ParentRef>,
    rep: &mut VolumeDeletion,
) -> Result<()> {
    let cluster: &Cluster = child_pool.cluster();
    let mut cur = parent.map(|p| (child_pool.clone(), child.to_string(), p));
    let mut hops = 0;
    while let Some((cpool, child, p)) = cur.take() {
        hops += 1;
        if hops > 1024 || !p.is_clone_snap_of(&child) {
            break;
        }
        let ppool = Pool::open_ns(cluster, &p.pool, &p.namespace)?;
        let next = match Image::open_by_id(&ppool, &p.image_id, false) {
            // Collected by an interrupted run: continue from its own journal entry.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                read_journal(&ppool, &p.image).map(|g| (ppool.clone(), p.image.clone(), g))
            }
            Err(e) => return Err(e),
            Ok(img) => clean_one_parent(&ppool, img, &p, rep)?.map(|(name, g)| (ppool.clone(), name, g)),
        };
        clear_journal(&cpool, &child)?;
        cur = next;
    }
    Ok(())
}

/// One hop of [`clean_parent_refs`]: removes the orphaned clone snapshot of `img`, and when
/// `img` is a `.deleted` volume left without children, removes it and returns its own
/// (journaled) parent reference to continue with.
fn clean_one_parent(
    pool: &Pool,
    img: Image,
    p: &ParentRef,
    rep: &mut VolumeDeletion,
) -> Result<Option<(String, ParentRef)>> {
    let name = img.name().to_string();
    let target = spec(&p.pool, &p.namespace, &name, Some(&p.snap));
    if img.snap_exists(&p.snap)? {
        let users = img.children_of_snap(&p.snap)?;
        let protected = img.snap_is_protected(&p.snap)?;
        if users.iter().any(|c| !c.trash) || (protected && !users.is_empty()) {
            return Ok(None); // another clone still uses it (or a trashed v1 clone pins it)
        }
        unprotect_if_protected(&img, &p.snap)?;
        tolerate(img.snap_remove(&p.snap), &[ErrorKind::NotFound])?;
        tracing::info!(parent = %target, "removed the parent's clone snapshot");
        rep.parent_snapshots_removed.push(target);
    }
    if !name.ends_with(DELETED_SUFFIX) || !img.children()?.is_empty() {
        return Ok(None);
    }
    // A `.deleted` volume whose last child went: remove it like a volume.
    let grand = volume_parent(&img)?.map(ParentRef::from).filter(|g| g.is_clone_snap_of(&name));
    drop(img);
    if let Some(g) = &grand {
        write_journal(pool, &name, g);
    }
    let mut ignored = Vec::new();
    drop_snaps(pool, &name, |n| is_clone_snap(n) || is_backup_snap(n), &mut ignored)?;
    match try_remove(pool, &name)? {
        Removal::Removed => {
            tracing::info!(image = %name, "removed a .deleted volume after its last child");
            rep.collected_parents.push(spec(&p.pool, &p.namespace, &name, None));
            Ok(grand.map(|g| (name, g)))
        }
        Removal::NotFound => {
            clear_journal(pool, &name)?;
            Ok(None)
        }
        Removal::HasSnapshots | Removal::Busy => {
            tracing::warn!(image = %name, "a .deleted volume without children could not be removed yet");
            clear_journal(pool, &name)?;
            Ok(None)
        }
    }
}
