//! Reconcile: find, and unless it is a dry run remove, what crashed recipes left behind.
//!
//! ```no_run
//! use std::time::Duration;
//! use rbd_core::recipes::reconcile::{Action, Reconcile};
//! # let cluster = rbd_core::Cluster::shared(None, "admin")?;
//! let images = rbd_core::Pool::open(&cluster, "images")?;
//! let volumes = rbd_core::Pool::open(&cluster, "volumes")?;
//! let vms = rbd_core::Pool::open(&cluster, "vms")?;
//! let backups = rbd_core::Pool::open(&cluster, "backups")?;
//! // What would go (a dry run is the default) ...
//! let plan = Reconcile::new(&[&images, &volumes, &vms]).backup_target(Some(&backups)).run()?;
//! for f in &plan.findings {
//!     println!("{} {}: {}", f.kind, f.spec(), f.reason);
//! }
//! // ... and remove exactly that.
//! let done = Reconcile::new(&[&images, &volumes, &vms])
//!     .backup_target(Some(&backups))
//!     .min_age(Duration::from_secs(600))
//!     .dry_run(false)
//!     .run()?;
//! assert!(done.findings.iter().all(|f| f.action != Action::Planned));
//! # Ok::<(), rbd_core::Error>(())
//! ```
//!
//! Reconcile trusts only proof: a provenance marker ([`crate::recipes::provenance`]), or a name
//! that only a recipe (or the OpenStack service it mirrors) creates, plus the absence of
//! anything that still depends on the artifact. Whatever it cannot prove is an orphan is left
//! alone; near misses are listed in [`ReconcileReport::skipped`] with the reason.
//!
//! # The rules (one [`FindingKind`] each)
//!
//! Every age below is compared with [`Reconcile::min_age`] (default [`DEFAULT_MIN_AGE`]): a
//! live recipe may be mid-flight on anything younger. No image that a client has open (has
//! watchers) is ever removed.
//!
//! * [`FindingKind::HalfMadeImage`]: an image carrying the provenance marker
//!   ([`crate::recipes::provenance::KEY`]) whose `started` time is older than `min_age`. A
//!   recipe clears the marker when it succeeds and removes the image when it fails, so a marker
//!   that outlived `min_age` means the recipe died (a Glance upload, the Glance-pool clone of a
//!   Nova VM snapshot). Removed with its snapshots (unprotected first) once no clone child is
//!   left; a child that is not itself an orphan keeps it (reported as skipped).
//! * [`FindingKind::NovaTempSnapshot`]: a user snapshot named like a uuid4 in hex (32
//!   lower-case hex digits, version 4: the name Nova's `direct_snapshot` and
//!   [`crate::recipes::nova::InstanceSnapshot`] use) on an instance disk `<instance uuid>_<disk>`,
//!   older than `min_age` by its snapshot timestamp, **and** either without clone children or
//!   with only provenance-marked (half-made) children, which are removed first. Nova's own
//!   driver uses the same names, so an unmarked child (a crash between `clone` and `mark`, or
//!   somebody's own clone) keeps the snapshot, and both are reported as skipped.
//! * [`FindingKind::CloneSnapshot`]: a user snapshot `<dest>.clone_snap` (Cinder's
//!   volume-to-volume clone snapshot) older than `min_age` with no clone children in any pool
//!   or namespace (trashed children count): unprotected and removed.
//! * [`FindingKind::DeletedVolume`]: a `volume-<id>.deleted` image (a deleted Cinder volume kept
//!   for its clones) without clone children: its snapshots are removed, then the image. Removing
//!   it can leave its own parent's `.clone_snap` (and a `.deleted` grandparent) childless; those
//!   follow in the same run. There is no age check: the rename happens only while clones exist,
//!   so a childless `.deleted` volume is garbage whatever its age (a delete collecting it at the
//!   same moment finds it gone, which it accepts).
//! * [`FindingKind::DeleteJournal`]: a Cinder delete-journal entry
//!   ([`crate::recipes::cinder::JOURNAL_KEY_PREFIX`] in pool metadata) whose volume is gone: the
//!   delete died between removing the volume and cleaning the parent. The parent's clean-up is
//!   what the `.clone_snap` and `.deleted` rules do (listed before the entry); the entry is
//!   removed once the parent snapshot is gone or still used by other clones. It stays when
//!   the parent snapshot is younger than `min_age` or lies in a pool that is not scanned.
//! * [`FindingKind::BackupSourceSnapshot`]: a source snapshot `backup.<bid>.snap.<time>`
//!   (Cinder's backup driver and [`crate::recipes::backup`]) older than `min_age` without a
//!   same-named snapshot on any `*.backup.*` image of the backup target pool: its backup was
//!   deleted (Cinder's delete never removes it) or never completed. Only checked when a backup
//!   target is given ([`Reconcile::backup_target`]); otherwise a note says so.
//! * [`FindingKind::HalfMadeBackupImage`]: a backup image `volume-<vid>.backup.<bid>` in the
//!   backup target with no snapshot at all (the backup snapshot is taken only after all data),
//!   not open, created longer than `min_age` ago, and either holding no data or belonging to a
//!   backup whose source snapshot is orphaned by the previous rule: an interrupted full backup.
//!   The legacy `.backup.base` image is never touched.
//! * [`FindingKind::BackupMetadata`]: the metadata object `backup.<bid>.meta` of a backup found
//!   orphaned above (no snapshot of it on any backup image), older than `min_age`.
//! * [`FindingKind::StaleSlotLock`]: the managed lock of a flatten-throttle slot image
//!   ([`crate::recipes::throttle`]: it carries [`crate::recipes::throttle::HEARTBEAT_KEY`])
//!   whose holder's heartbeat is older than [`Reconcile::slot_lease`] and either the holder has
//!   no watch on the slot image any more (it died at least an OSD watch timeout ago) or the
//!   heartbeat is also older than `min_age`. The lock is broken with `rbd_lock_break`, which
//!   blocklists the dead holder's client, as the throttle's own takeover does, and the dead
//!   holder's heartbeat key is removed, as a release would (nothing of it is left behind).
//!
//! # Crashed processes
//!
//! A client killed mid-recipe (SIGKILL, OOM, power loss) keeps its watches on the images it
//! had open for about 30 s (`osd_client_watch_timeout`) unless the orchestrator fences it
//! first by blocklisting its address ([`Cluster::blocklist_add`](crate::Cluster::blocklist_add);
//! the address is [`Cluster::addrs`](crate::Cluster::addrs) of the dead process's connection),
//! which drops them at once. Until then, removing those images fails with
//! [`ErrorKind::Busy`] (EBUSY, "image still has watchers"), reconcile leaves them alone (it never
//! removes a watched image), and a waiter for the dead client's managed exclusive lock waits
//! too (librbd breaks a dead owner's lock only once its watch is gone). Reconcile handles the
//! leftovers after that: run it once the watches are gone (or the client is blocklisted).
//!
//! # Dry run and apply
//!
//! The run first scans, then plans: a finding is planned only when everything that depends
//! on it (clone children) is itself planned earlier, so the findings are in an order that
//! works. A dry run stops there ([`Action::Planned`]); an apply executes the same list in the
//! same order, re-checking each artifact just before touching it (marker unchanged, no clone
//! children, no watchers, same snapshot id): what changed since the scan is left alone and
//! reported as [`Action::Failed`]. So a dry run lists exactly what an apply removes.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use librbd_sys as rbd_raw;

use crate::call::try_call;
use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::lock::LockMode;
use crate::pool::Pool;
use crate::recipes::backup::{meta_object_name, parse_snap_name, LEGACY_BASE_SUFFIX};
use crate::recipes::cinder::{CLONE_SNAP_SUFFIX, DELETED_SUFFIX, JOURNAL_KEY_PREFIX, VOLUME_PREFIX};
use crate::recipes::provenance::{Marker, KEY as MARKER_KEY};
use crate::recipes::throttle::{DEFAULT_LEASE, HEARTBEAT_KEY};
use crate::snapshot::{system_time_from_timespec, SnapInfo, SnapNamespace};

/// The default [`Reconcile::min_age`]: artifacts younger than 10 minutes are left alone.
pub const DEFAULT_MIN_AGE: Duration = Duration::from_secs(600);

/// What kind of leftover a finding is (see the [module docs](self) for each rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FindingKind {
    /// An image with a provenance marker older than `min_age`.
    HalfMadeImage,
    /// A Nova uuid4-hex temporary snapshot on an instance disk.
    NovaTempSnapshot,
    /// A `<dest>.clone_snap` snapshot without clone children.
    CloneSnapshot,
    /// A `volume-<id>.deleted` image without clone children.
    DeletedVolume,
    /// A Cinder delete-journal entry whose volume is gone.
    DeleteJournal,
    /// A source `backup.<bid>.snap.<time>` snapshot without its backup counterpart.
    BackupSourceSnapshot,
    /// A backup image without any snapshot, left by an interrupted full backup.
    HalfMadeBackupImage,
    /// The `backup.<bid>.meta` object of a backup that no longer exists.
    BackupMetadata,
    /// A flatten-throttle slot lock held by a dead holder.
    StaleSlotLock,
}

impl FindingKind {
    /// A short stable name (`half-made-image`, `nova-temp-snapshot`, ...).
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::HalfMadeImage => "half-made-image",
            FindingKind::NovaTempSnapshot => "nova-temp-snapshot",
            FindingKind::CloneSnapshot => "clone-snapshot",
            FindingKind::DeletedVolume => "deleted-volume",
            FindingKind::DeleteJournal => "delete-journal",
            FindingKind::BackupSourceSnapshot => "backup-source-snapshot",
            FindingKind::HalfMadeBackupImage => "half-made-backup-image",
            FindingKind::BackupMetadata => "backup-metadata",
            FindingKind::StaleSlotLock => "stale-slot-lock",
        }
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// What happened to a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A dry run: it would be removed.
    Planned,
    /// It was removed (an image, snapshot, journal entry or object), or the lock was broken.
    Removed,
    /// Removing it failed or was refused because it changed since the scan (the message says
    /// why); it was left as it is.
    Failed(String),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Planned => f.write_str("planned"),
            Action::Removed => f.write_str("removed"),
            Action::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

/// One orphan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Which rule found it.
    pub kind: FindingKind,
    /// The pool (`pool` or `pool/namespace`); for journal entries, the pool holding the entry.
    pub pool: String,
    /// The image (for [`FindingKind::DeleteJournal`] the volume that is gone; for
    /// [`FindingKind::BackupMetadata`] the object name).
    pub image: String,
    /// The snapshot, for snapshot findings.
    pub snap: Option<String>,
    /// Why it is an orphan (the proof).
    pub reason: String,
    /// How old the artifact is, where known: by its provenance marker, snapshot or creation
    /// time, object mtime, or slot heartbeat. Not part of the proof's text, so that a dry run
    /// and a later apply list equal findings.
    pub age: Option<Duration>,
    /// What was done.
    pub action: Action,
}

impl Finding {
    /// `pool/image[@snap]`.
    pub fn spec(&self) -> String {
        match &self.snap {
            Some(s) => format!("{}/{}@{s}", self.pool, self.image),
            None => format!("{}/{}", self.pool, self.image),
        }
    }
}

/// Something that looked like a leftover but was not proven one, and was left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The rule it nearly matched.
    pub kind: FindingKind,
    /// The pool (`pool` or `pool/namespace`).
    pub pool: String,
    /// The image (or object, or gone volume for journal entries).
    pub image: String,
    /// The snapshot, if any.
    pub snap: Option<String>,
    /// Why it was left alone.
    pub reason: String,
}

/// The result of [`Reconcile::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// True for a dry run (every action is [`Action::Planned`]).
    pub dry_run: bool,
    /// The orphans, in the order they are (or would be) removed.
    pub findings: Vec<Finding>,
    /// Near misses left alone, with the reason.
    pub skipped: Vec<Skipped>,
    /// Things the caller should know (e.g. backup snapshots not checked without a target).
    pub notes: Vec<String>,
}

impl ReconcileReport {
    /// Findings removed by this run.
    pub fn removed(&self) -> usize {
        self.findings.iter().filter(|f| f.action == Action::Removed).count()
    }

    /// Findings whose removal failed.
    pub fn failed(&self) -> usize {
        self.findings.iter().filter(|f| matches!(f.action, Action::Failed(_))).count()
    }
}

type NameFilter = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Finds (and removes) crashed recipes' leftovers in a set of pools. See the
/// [module docs](self).
pub struct Reconcile {
    pools: Vec<Pool>,
    backup_target: Option<Pool>,
    min_age: Duration,
    dry_run: bool,
    slot_lease: Duration,
    filter: Option<NameFilter>,
}

impl fmt::Debug for Reconcile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reconcile")
            .field("pools", &self.pools)
            .field("backup_target", &self.backup_target)
            .field("min_age", &self.min_age)
            .field("dry_run", &self.dry_run)
            .field("slot_lease", &self.slot_lease)
            .field("filter", &self.filter.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl Reconcile {
    /// Reconcile `pools` (each in its own namespace; on any clusters). Defaults: a dry run, no
    /// backup target, `min_age` [`DEFAULT_MIN_AGE`], slot lease
    /// [`crate::recipes::throttle::DEFAULT_LEASE`], every image name.
    pub fn new(pools: &[&Pool]) -> Reconcile {
        Reconcile {
            pools: pools.iter().map(|p| (*p).clone()).collect(),
            backup_target: None,
            min_age: DEFAULT_MIN_AGE,
            dry_run: true,
            slot_lease: DEFAULT_LEASE,
            filter: None,
        }
    }

    /// The backup pool (on any cluster) whose `*.backup.*` images hold the counterparts of
    /// source `backup.*` snapshots. Without one, backup leftovers are not checked.
    pub fn backup_target(&mut self, pool: Option<&Pool>) -> &mut Self {
        self.backup_target = pool.cloned();
        self
    }

    /// Leave alone what is younger than this (a live recipe may be mid-flight); default
    /// [`DEFAULT_MIN_AGE`]. Tests use zero.
    pub fn min_age(&mut self, age: Duration) -> &mut Self {
        self.min_age = age;
        self
    }

    /// True (the default): only report. False: remove what is found.
    pub fn dry_run(&mut self, yes: bool) -> &mut Self {
        self.dry_run = yes;
        self
    }

    /// The flatten-throttle lease: a slot heartbeat older than this may be stale (default
    /// [`crate::recipes::throttle::DEFAULT_LEASE`]; use the throttle's own lease if it was
    /// changed).
    pub fn slot_lease(&mut self, lease: Duration) -> &mut Self {
        self.slot_lease = lease;
        self
    }

    /// Only consider images (and journal entries, backup metadata objects) whose name passes
    /// `keep`, e.g. one tenant's volumes or one test's images. Evidence is never filtered:
    /// clone children and backup counterparts are looked up everywhere.
    pub fn filter(&mut self, keep: impl Fn(&str) -> bool + Send + Sync + 'static) -> &mut Self {
        self.filter = Some(Box::new(keep));
        self
    }

    fn keep(&self, name: &str) -> bool {
        match &self.filter {
            Some(f) => f(name),
            None => true,
        }
    }

    /// Scans, plans and (unless a dry run) removes. See the [module docs](self).
    ///
    /// Uses `rbd_list2`, `rbd_open_read_only`/`rbd_open_by_id_read_only`, `rbd_snap_list`,
    /// `rbd_list_children3`, `rbd_metadata_get`, `rbd_watchers_list`, `rbd_get_create_timestamp`,
    /// `rbd_list_lockers`, `rbd_pool_metadata_list`, `rbd_diff_iterate2`, `rados_stat`; to
    /// remove: `rbd_snap_unprotect`, `rbd_snap_remove2`, `rbd_remove`,
    /// `rbd_pool_metadata_remove`, `rados_remove`, `rbd_lock_break`.
    ///
    /// # Errors
    /// [`ErrorKind::PermissionDenied`] without read caps on a pool (or the pools holding clone
    /// children), and other errors of the scan. Failures to remove one finding do not stop
    /// the run: they are reported per finding as [`Action::Failed`].
    pub fn run(&self) -> Result<ReconcileReport> {
        let names: Vec<String> = self.pools.iter().map(pool_label).collect();
        let _span = tracing::info_span!("reconcile", pools = ?names, dry_run = self.dry_run,
            min_age_s = self.min_age.as_secs(), backup_target = ?self.backup_target.as_ref().map(pool_label))
        .entered();
        let mut scan = Scan::new(self)?;
        scan.images()?;
        scan.backups()?;
        let Scan { mut cands, skipped, notes, young_snaps, used_snaps, inventory, .. } = scan;

        let nodes: Vec<PlanNode<ImgKey>> = cands.iter().map(|c| c.node.clone()).collect();
        let plan = plan(&nodes);
        let mut skipped = skipped;
        for &i in &plan.blocked {
            let c = &cands[i];
            if c.report_blocked {
                let waiting: Vec<String> = c
                    .node
                    .needs
                    .iter()
                    .filter_map(|n| match n {
                        Need::Gone(k) if !plan.gone.contains(k) => Some(k.label()),
                        _ => None,
                    })
                    .collect();
                skipped.push(Skipped {
                    kind: c.kind,
                    pool: pool_label(&c.pool),
                    image: c.image.clone(),
                    snap: c.snap.as_ref().map(|s| s.0.clone()),
                    reason: format!("still has clone children that are not orphans: {}", waiting.join(", ")),
                });
            }
        }
        let mut order = plan.order.clone();
        // Journal entries go last: their parent's clean-up is planned (or not needed) by now.
        let snaps = SnapStates { young: &young_snaps, used: &used_snaps };
        let journals = journal_candidates(self, &inventory, &cands, &plan, &snaps, &mut skipped)?;
        for j in journals {
            order.push(cands.len());
            cands.push(j);
        }

        let mut findings = Vec::with_capacity(order.len());
        for i in order {
            let c = &cands[i];
            let action = if self.dry_run {
                Action::Planned
            } else {
                match execute(c) {
                    Ok(()) => Action::Removed,
                    Err(e) => {
                        tracing::warn!(kind = %c.kind, image = %c.image, snap = ?c.snap, error = %e, "reconcile: not removed");
                        Action::Failed(e.to_string())
                    }
                }
            };
            if action == Action::Removed {
                tracing::info!(kind = %c.kind, pool = %pool_label(&c.pool), image = %c.image, snap = ?c.snap, reason = %c.reason, "reconcile: removed");
            }
            findings.push(Finding {
                kind: c.kind,
                pool: pool_label(&c.pool),
                image: c.image.clone(),
                snap: c.snap.as_ref().map(|s| s.0.clone()),
                reason: c.reason.clone(),
                age: c.age,
                action,
            });
        }
        Ok(ReconcileReport { dry_run: self.dry_run, findings, skipped, notes })
    }
}

// ---------------------------------------------------------------------------------------------
// Planning (pure; unit-tested below).

/// What a planned item needs first.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Need<K> {
    /// Image `K` is planned for removal.
    Gone(K),
}

/// One candidate as the planner sees it.
#[derive(Debug, Clone)]
struct PlanNode<K> {
    /// The image this candidate removes, if it removes one.
    removes: Option<K>,
    /// The image a snapshot candidate lives on (absorbed when that image is removed).
    host: Option<K>,
    needs: Vec<Need<K>>,
}

#[derive(Debug, Clone, Default)]
struct Plan<K> {
    /// Candidates to act on, in a working order.
    order: Vec<usize>,
    /// Snapshot candidates on images that are removed anyway.
    absorbed: Vec<usize>,
    /// Candidates whose needs are never met.
    blocked: Vec<usize>,
    /// Images planned for removal.
    gone: HashSet<K>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Planned,
    Absorbed,
}

/// Orders the candidates so that each comes after everything it needs; a snapshot candidate
/// whose image is removed is absorbed; what can never be met is blocked.
fn plan<K: Clone + Eq + std::hash::Hash>(nodes: &[PlanNode<K>]) -> Plan<K> {
    let mut state = vec![State::Pending; nodes.len()];
    let mut p = Plan { order: Vec::new(), absorbed: Vec::new(), blocked: Vec::new(), gone: HashSet::new() };
    loop {
        let mut progress = false;
        for (i, n) in nodes.iter().enumerate() {
            if state[i] != State::Pending {
                continue;
            }
            if n.removes.is_none() && n.host.as_ref().is_some_and(|h| p.gone.contains(h)) {
                state[i] = State::Absorbed;
                p.absorbed.push(i);
                progress = true;
                continue;
            }
            let ready = n.needs.iter().all(|need| match need {
                Need::Gone(k) => p.gone.contains(k),
            });
            if ready {
                state[i] = State::Planned;
                p.order.push(i);
                if let Some(r) = &n.removes {
                    p.gone.insert(r.clone());
                }
                progress = true;
            }
        }
        if !progress {
            break;
        }
    }
    p.blocked = (0..nodes.len()).filter(|&i| state[i] == State::Pending).collect();
    p
}

// ---------------------------------------------------------------------------------------------
// Scanning.

/// An image identity across clusters: (fsid, pool, namespace, image id), plus a label.
#[derive(Debug, Clone)]
struct ImgKey {
    id: (String, String, String, String),
    label: String,
}

impl PartialEq for ImgKey {
    fn eq(&self, o: &ImgKey) -> bool {
        self.id == o.id
    }
}
impl Eq for ImgKey {}
impl std::hash::Hash for ImgKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.id.hash(h);
    }
}

impl ImgKey {
    fn new(fsid: &str, pool: &str, ns: &str, image_id: &str, name: &str) -> ImgKey {
        let label = if ns.is_empty() { format!("{pool}/{name}") } else { format!("{pool}/{ns}/{name}") };
        ImgKey { id: (fsid.into(), pool.into(), ns.into(), image_id.into()), label }
    }

    fn label(&self) -> String {
        self.label.clone()
    }
}

enum Op {
    /// Remove the image and its snapshots; `marker` is the marker value that must still be there.
    RemoveImage { marker: Option<String> },
    /// Unprotect and remove the snapshot (by the scanned id).
    RemoveSnap,
    /// Remove a pool-metadata key once the volume it names is still gone.
    RemovePoolMeta { key: String },
    /// Remove a RADOS object.
    RemoveObject,
    /// Break the managed lock of `owner` (address) while the heartbeat is still `heartbeat`.
    BreakLock { owner: String, heartbeat: String },
}

struct Candidate {
    kind: FindingKind,
    pool: Pool,
    image: String,
    image_id: String,
    snap: Option<(String, u64)>,
    reason: String,
    age: Option<Duration>,
    node: PlanNode<ImgKey>,
    report_blocked: bool,
    op: Op,
}

/// One scanned image.
struct Scanned {
    pool: usize,
    name: String,
    id: String,
    key: ImgKey,
    marker: Option<(String, Marker)>,
    heartbeat: Option<String>,
    snaps: Vec<SnapInfo>,
}

/// What the scan keeps for the journal rule.
struct Inventory {
    fsids: Vec<String>,
    images: Vec<Scanned>,
    /// Image names per scanned pool (unfiltered).
    names: Vec<HashSet<String>>,
}

struct Scan<'r> {
    r: &'r Reconcile,
    now: SystemTime,
    inventory: Inventory,
    cands: Vec<Candidate>,
    skipped: Vec<Skipped>,
    notes: Vec<String>,
    /// `.clone_snap` snapshots (image key, name) that are not candidates only because young.
    young_snaps: HashSet<(ImgKey, String)>,
    /// `.clone_snap` snapshots (image key, name) that have clone children.
    used_snaps: HashSet<(ImgKey, String)>,
    /// (image key, snapshot name) -> candidate index, for `.clone_snap` candidates.
    clone_snap_cands: HashMap<(ImgKey, String), usize>,
    /// Backup ids whose source snapshot is an orphan candidate.
    orphan_bids: Vec<String>,
}

impl<'r> Scan<'r> {
    fn new(r: &'r Reconcile) -> Result<Scan<'r>> {
        let mut fsids = Vec::new();
        for p in r.pools.iter().chain(r.backup_target.iter()) {
            fsids.push(p.cluster().fsid()?);
        }
        Ok(Scan {
            r,
            now: SystemTime::now(),
            inventory: Inventory { fsids, images: Vec::new(), names: Vec::new() },
            cands: Vec::new(),
            skipped: Vec::new(),
            notes: Vec::new(),
            young_snaps: HashSet::new(),
            used_snaps: HashSet::new(),
            clone_snap_cands: HashMap::new(),
            orphan_bids: Vec::new(),
        })
    }

    fn age(&self, t: SystemTime) -> Duration {
        self.now.duration_since(t).unwrap_or(Duration::ZERO)
    }

    fn old_enough(&self, t: SystemTime) -> bool {
        self.age(t) >= self.r.min_age
    }

    fn skip(&mut self, kind: FindingKind, pool: &Pool, image: &str, snap: Option<&str>, reason: impl Into<String>) {
        self.skipped.push(Skipped {
            kind,
            pool: pool_label(pool),
            image: image.to_string(),
            snap: snap.map(str::to_string),
            reason: reason.into(),
        });
    }

    /// Clients with the image open read-write (read-only handles, like the scan's, do not watch).
    fn watchers(&self, img: &Image) -> Result<usize> {
        Ok(img.watchers()?.len())
    }

    /// Children of `img` (of one snapshot, or of all at the head) as keys.
    fn child_keys(&self, img: &Image, fsid: &str, snap: Option<&str>) -> Result<Vec<(ImgKey, crate::ChildInfo)>> {
        let children = match snap {
            Some(s) => img.children_of_snap(s)?,
            None => img.children()?,
        };
        Ok(children
            .into_iter()
            .map(|c| (ImgKey::new(fsid, &c.pool, &c.pool_namespace, &c.image_id, &c.image), c))
            .collect())
    }

    /// Scans every pool's images and makes the image and snapshot candidates.
    fn images(&mut self) -> Result<()> {
        let pools = self.r.pools.clone();
        for (pi, pool) in pools.iter().enumerate() {
            let _s = tracing::debug_span!("reconcile_scan", pool = %pool_label(pool)).entered();
            let mut names: Vec<String> = pool.list_images()?.into_iter().map(|s| s.name).collect();
            names.sort();
            self.inventory.names.push(names.iter().cloned().collect());
            for name in names.into_iter().filter(|n| self.r.keep(n)) {
                let img = match Image::open_read_only(pool, &name) {
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    r => r?,
                };
                let id = img.id()?;
                let marker = match img.metadata_get(MARKER_KEY) {
                    // An intent record naming another image (the source of a clone) proves
                    // nothing about this one (Marker::names_other_image).
                    Ok(v) => Marker::parse(&v).filter(|m| !m.names_other_image(pool.name(), &name)).map(|m| (v, m)),
                    Err(e) if e.kind() == ErrorKind::NotFound => None,
                    Err(e) => return Err(e),
                };
                let heartbeat = match img.metadata_get(HEARTBEAT_KEY) {
                    Ok(v) => Some(v),
                    Err(e) if e.kind() == ErrorKind::NotFound => None,
                    Err(e) => return Err(e),
                };
                let snaps = img.snapshots()?;
                let key = ImgKey::new(&self.inventory.fsids[pi], pool.name(), pool.namespace(), &id, &name);
                let s = Scanned { pool: pi, name, id, key, marker, heartbeat, snaps };
                self.image_rules(pool, &img, &s)?;
                self.snapshot_rules(pool, &img, &s)?;
                self.inventory.images.push(s);
            }
        }
        Ok(())
    }

    fn image_rules(&mut self, pool: &Pool, img: &Image, s: &Scanned) -> Result<()> {
        let fsid = self.inventory.fsids[s.pool].clone();
        if let Some((raw, m)) = &s.marker {
            let started = UNIX_EPOCH + Duration::from_secs(m.started);
            let what = format!("provenance marker of {} (id {}, step {})", m.recipe, m.id, m.step);
            if !self.old_enough(started) {
                let age = fmt_age(self.age(started));
                self.skip(
                    FindingKind::HalfMadeImage,
                    pool,
                    &s.name,
                    None,
                    format!("{what} set {age} ago: younger than min_age, the recipe may still be running"),
                );
            } else if let Some(why) = self.not_removable(img, &s.snaps)? {
                self.skip(FindingKind::HalfMadeImage, pool, &s.name, None, format!("{what}, but {why}"));
            } else {
                let needs = self.child_keys(img, &fsid, None)?.into_iter().map(|(k, _)| Need::Gone(k)).collect();
                self.push(Candidate {
                    kind: FindingKind::HalfMadeImage,
                    pool: pool.clone(),
                    image: s.name.clone(),
                    image_id: s.id.clone(),
                    snap: None,
                    reason: format!(
                        "{what} older than min_age and never cleared: the half-made image of a recipe that died"
                    ),
                    age: Some(self.age(started)),
                    node: PlanNode { removes: Some(s.key.clone()), host: None, needs },
                    report_blocked: true,
                    op: Op::RemoveImage { marker: Some(raw.clone()) },
                });
            }
        }
        if is_deleted_volume(&s.name) && s.marker.is_none() {
            if let Some(why) = self.not_removable(img, &s.snaps)? {
                self.skip(FindingKind::DeletedVolume, pool, &s.name, None, format!("a .deleted volume, but {why}"));
            } else {
                let needs = self.child_keys(img, &fsid, None)?.into_iter().map(|(k, _)| Need::Gone(k)).collect();
                self.push(Candidate {
                    kind: FindingKind::DeletedVolume,
                    pool: pool.clone(),
                    image: s.name.clone(),
                    image_id: s.id.clone(),
                    snap: None,
                    reason: "a deleted Cinder volume kept only for its clone children, and none is left".into(),
                    age: None,
                    node: PlanNode { removes: Some(s.key.clone()), host: None, needs },
                    report_blocked: false,
                    op: Op::RemoveImage { marker: None },
                });
            }
        }
        if let Some(hb) = &s.heartbeat {
            self.slot_rule(pool, img, s, hb)?;
        }
        Ok(())
    }

    /// Why an image must not be removed even if it is an orphan by name or marker: watchers,
    /// or snapshots a plain removal cannot handle (group or mirror snapshots).
    fn not_removable(&self, img: &Image, snaps: &[SnapInfo]) -> Result<Option<String>> {
        let w = self.watchers(img)?;
        if w > 0 {
            return Ok(Some(format!("it is in use ({w} watcher(s))")));
        }
        if let Some(s) = snaps.iter().find(|s| !matches!(s.namespace, SnapNamespace::User | SnapNamespace::Trash)) {
            return Ok(Some(format!("it has a {:?} snapshot (#{})", s.namespace, s.id)));
        }
        Ok(None)
    }

    fn snapshot_rules(&mut self, pool: &Pool, img: &Image, s: &Scanned) -> Result<()> {
        let fsid = self.inventory.fsids[s.pool].clone();
        let nova_disk = is_instance_disk(&s.name);
        for snap in s.snaps.iter().filter(|x| x.namespace == SnapNamespace::User) {
            let kind = if nova_disk && is_uuid4_hex(&snap.name) {
                FindingKind::NovaTempSnapshot
            } else if snap.name.ends_with(CLONE_SNAP_SUFFIX) && snap.name.len() > CLONE_SNAP_SUFFIX.len() {
                FindingKind::CloneSnapshot
            } else if parse_snap_name(&snap.name).is_some() {
                FindingKind::BackupSourceSnapshot
            } else {
                continue;
            };
            if kind == FindingKind::BackupSourceSnapshot {
                // Checked once the backup target is scanned.
                continue;
            }
            let children = self.child_keys(img, &fsid, Some(&snap.name))?;
            if kind == FindingKind::CloneSnapshot && !children.is_empty() {
                // The normal state of a clone's parent snapshot: only a candidate when its
                // children are (they may be `.deleted` volumes or half-made images).
                self.used_snaps.insert((s.key.clone(), snap.name.clone()));
            }
            let Some(ts) = snap.timestamp else {
                self.skip(kind, pool, &s.name, Some(&snap.name), "the snapshot has no timestamp: its age is unknown");
                continue;
            };
            if !self.old_enough(ts) {
                if kind == FindingKind::CloneSnapshot && !children.is_empty() {
                    continue; // a fresh clone's parent snapshot: nothing to report
                }
                if kind == FindingKind::CloneSnapshot {
                    self.young_snaps.insert((s.key.clone(), snap.name.clone()));
                }
                let age = fmt_age(self.age(ts));
                self.skip(kind, pool, &s.name, Some(&snap.name), format!("taken {age} ago: younger than min_age"));
                continue;
            }
            let reason = match kind {
                FindingKind::NovaTempSnapshot => {
                    // Nova's driver uses the same names: only no children or marked ones prove it.
                    let mut unmarked = Vec::new();
                    for (k, c) in &children {
                        if !child_is_marked(pool, c)? {
                            unmarked.push(k.label());
                        }
                    }
                    if !unmarked.is_empty() {
                        self.skip(
                            kind,
                            pool,
                            &s.name,
                            Some(&snap.name),
                            format!(
                                "a Nova-style temporary snapshot with a clone child that is not marked half-made \
                                 ({}): a VM snapshot that died between clone and mark, or somebody's own clone; \
                                 not provably an orphan",
                                unmarked.join(", ")
                            ),
                        );
                        continue;
                    }
                    if children.is_empty() {
                        "Nova temporary snapshot (uuid4-hex name on an instance disk) older than min_age, with no clone children: left by a VM snapshot that died".to_string()
                    } else {
                        "Nova temporary snapshot (uuid4-hex name on an instance disk) older than min_age whose only clone children are half-made: left by a VM snapshot that died".to_string()
                    }
                }
                _ => "Cinder clone snapshot older than min_age with no clone children: the clone it was made for is gone or flattened".to_string(),
            };
            let idx = self.push(Candidate {
                kind,
                pool: pool.clone(),
                image: s.name.clone(),
                image_id: s.id.clone(),
                snap: Some((snap.name.clone(), snap.id)),
                reason,
                age: Some(self.age(ts)),
                node: PlanNode {
                    removes: None,
                    host: Some(s.key.clone()),
                    needs: children.into_iter().map(|(k, _)| Need::Gone(k)).collect(),
                },
                report_blocked: kind == FindingKind::NovaTempSnapshot,
                op: Op::RemoveSnap,
            });
            if kind == FindingKind::CloneSnapshot {
                self.clone_snap_cands.insert((s.key.clone(), snap.name.clone()), idx);
            }
        }
        Ok(())
    }

    fn slot_rule(&mut self, pool: &Pool, img: &Image, s: &Scanned, hb_raw: &str) -> Result<()> {
        let Some(locker) = img.list_lockers()?.lockers.into_iter().find(|l| l.cookie.starts_with("auto ")) else {
            return Ok(()); // free slot
        };
        let gid: Option<i64> = locker.client.strip_prefix("client.").and_then(|g| g.parse().ok());
        let watched = img.watchers()?.iter().any(|w| Some(w.id) == gid);
        let hb: Option<(String, SystemTime)> = serde_json::from_str::<serde_json::Value>(hb_raw).ok().and_then(|v| {
            let t = v.get("t")?.as_u64()?;
            Some((v.get("owner")?.as_str()?.to_string(), UNIX_EPOCH + Duration::from_millis(t)))
        });
        let hb_age = hb.as_ref().filter(|(o, _)| *o == locker.addr).map(|(_, t)| self.age(*t));
        let stale_after = self.r.slot_lease.max(self.r.min_age);
        let reason = match hb_age {
            Some(a) if a >= self.r.slot_lease && !watched => format!(
                "flatten slot held by {} ({}) whose heartbeat is older than the lease ({}) and who has no watch on the slot image any more: the holder died",
                locker.client, locker.addr, fmt_age(self.r.slot_lease)
            ),
            Some(a) if a >= stale_after => format!(
                "flatten slot held by {} ({}) whose heartbeat is older than the lease ({}) and min_age ({}): the holder is dead or cut off",
                locker.client, locker.addr, fmt_age(self.r.slot_lease), fmt_age(self.r.min_age)
            ),
            None if !watched => format!(
                "flatten slot held by {} ({}) without a heartbeat of its own and without a watch on the slot image: the holder died",
                locker.client, locker.addr
            ),
            _ => return Ok(()), // a live holder
        };
        self.push(Candidate {
            kind: FindingKind::StaleSlotLock,
            pool: pool.clone(),
            image: s.name.clone(),
            image_id: s.id.clone(),
            snap: None,
            reason,
            age: hb_age,
            node: PlanNode { removes: None, host: None, needs: Vec::new() },
            report_blocked: false,
            op: Op::BreakLock { owner: locker.addr, heartbeat: hb_raw.to_string() },
        });
        Ok(())
    }

    /// Backup rules: source snapshots, half-made backup images and their metadata objects.
    fn backups(&mut self) -> Result<()> {
        let Some(target) = self.r.backup_target.clone() else {
            let n: usize = self
                .inventory
                .images
                .iter()
                .map(|i| i.snaps.iter().filter(|s| is_source_backup_snap(&i.name, s)).count())
                .sum();
            self.notes.push(format!(
                "no backup target given: {n} source backup snapshot(s) (backup.*.snap.*) were not checked"
            ));
            return Ok(());
        };
        let tfsid = self.inventory.fsids[self.r.pools.len()].clone();
        // Evidence: every snapshot name on every backup image of the target (unfiltered).
        let mut counterparts: HashSet<String> = HashSet::new();
        let mut target_bids: HashSet<String> = HashSet::new();
        let mut backup_images: Vec<String> = Vec::new();
        let mut tnames: Vec<String> = target.list_images()?.into_iter().map(|s| s.name).collect();
        tnames.sort();
        for name in tnames.into_iter().filter(|n| n.contains(".backup.")) {
            let img = match Image::open_read_only(&target, &name) {
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                r => r?,
            };
            for s in img.snapshots()? {
                if let Some(p) = parse_snap_name(&s.name) {
                    target_bids.insert(p.backup_id);
                }
                counterparts.insert(s.name);
            }
            backup_images.push(name);
        }

        // Source snapshots without a counterpart.
        let images = std::mem::take(&mut self.inventory.images);
        let r = self.source_snaps(&images, &counterparts, &target);
        self.inventory.images = images;
        r?;

        // Backup images without any snapshot.
        let mut meta_bids: Vec<String> = self.orphan_bids.clone();
        for name in backup_images.into_iter().filter(|n| self.r.keep(n)) {
            let Some(bid) = backup_id_of_image(&name) else { continue };
            let img = match Image::open_read_only(&target, &name) {
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                r => r?,
            };
            if !img.snapshots()?.is_empty() {
                continue;
            }
            let created = create_time(&img)?;
            if !self.old_enough(created) {
                let age = fmt_age(self.age(created));
                self.skip(
                    FindingKind::HalfMadeBackupImage,
                    &target,
                    &name,
                    None,
                    format!("a backup image without snapshots created {age} ago: younger than min_age"),
                );
                continue;
            }
            let w = self.watchers(&img)?;
            if w > 0 {
                self.skip(
                    FindingKind::HalfMadeBackupImage,
                    &target,
                    &name,
                    None,
                    format!("a backup image without snapshots, but in use ({w} watcher(s))"),
                );
                continue;
            }
            let orphan_source = self.orphan_bids.contains(&bid);
            let empty = img.allocated_bytes(None)? == 0;
            if !orphan_source && !empty {
                self.skip(
                    FindingKind::HalfMadeBackupImage,
                    &target,
                    &name,
                    None,
                    "a backup image without snapshots that holds data and has no orphaned source snapshot: not provably half-made",
                );
                continue;
            }
            let why = if orphan_source {
                format!("the source snapshot of backup {bid} is orphaned too")
            } else {
                "it holds no data".to_string()
            };
            let id = img.id()?;
            self.push(Candidate {
                kind: FindingKind::HalfMadeBackupImage,
                pool: target.clone(),
                image: name.clone(),
                image_id: id.clone(),
                snap: None,
                reason: format!(
                    "a backup image with no backup snapshot (taken only after all data), older than min_age, and {why}: an interrupted full backup"
                ),
                age: Some(self.age(created)),
                node: PlanNode {
                    removes: Some(ImgKey::new(&tfsid, target.name(), target.namespace(), &id, &name)),
                    host: None,
                    needs: Vec::new(),
                },
                report_blocked: false,
                op: Op::RemoveImage { marker: None },
            });
            meta_bids.push(bid);
        }

        // Metadata objects of backups that have no snapshot anywhere in the target.
        meta_bids.sort();
        meta_bids.dedup();
        for bid in meta_bids.into_iter().filter(|b| !target_bids.contains(b)) {
            let oid = meta_object_name(&bid);
            if !self.r.keep(&oid) {
                continue;
            }
            let mtime = match target.object_stat(&oid) {
                Ok((_, m)) => UNIX_EPOCH + Duration::from_secs(u64::try_from(m).unwrap_or(0)),
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if !self.old_enough(mtime) {
                self.skip(FindingKind::BackupMetadata, &target, &oid, None, "younger than min_age");
                continue;
            }
            self.push(Candidate {
                kind: FindingKind::BackupMetadata,
                pool: target.clone(),
                image: oid.clone(),
                image_id: String::new(),
                snap: None,
                reason: format!("metadata of backup {bid}, which has no snapshot on any backup image"),
                age: Some(self.age(mtime)),
                node: PlanNode { removes: None, host: None, needs: Vec::new() },
                report_blocked: false,
                op: Op::RemoveObject,
            });
        }
        Ok(())
    }

    fn source_snaps(&mut self, images: &[Scanned], counterparts: &HashSet<String>, target: &Pool) -> Result<()> {
        let tname = pool_label(target);
        for s in images {
            let snaps: Vec<&SnapInfo> = s
                .snaps
                .iter()
                .filter(|x| is_source_backup_snap(&s.name, x) && !counterparts.contains(&x.name))
                .collect();
            if snaps.is_empty() {
                continue;
            }
            let pool = self.r.pools[s.pool].clone();
            let img = match Image::open_read_only(&pool, &s.name) {
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                r => r?,
            };
            let fsid = self.inventory.fsids[s.pool].clone();
            for snap in snaps {
                let kind = FindingKind::BackupSourceSnapshot;
                let Some(ts) = snap.timestamp else {
                    self.skip(
                        kind,
                        &pool,
                        &s.name,
                        Some(&snap.name),
                        "the snapshot has no timestamp: its age is unknown",
                    );
                    continue;
                };
                let age = fmt_age(self.age(ts));
                if !self.old_enough(ts) {
                    self.skip(
                        kind,
                        &pool,
                        &s.name,
                        Some(&snap.name),
                        format!("taken {age} ago: younger than min_age (a backup may be transferring)"),
                    );
                    continue;
                }
                let needs =
                    self.child_keys(&img, &fsid, Some(&snap.name))?.into_iter().map(|(k, _)| Need::Gone(k)).collect();
                if let Some(p) = parse_snap_name(&snap.name) {
                    self.orphan_bids.push(p.backup_id);
                }
                self.push(Candidate {
                    kind,
                    pool: pool.clone(),
                    image: s.name.clone(),
                    image_id: s.id.clone(),
                    snap: Some((snap.name.clone(), snap.id)),
                    reason: format!(
                        "backup snapshot older than min_age with no same-named snapshot on any *.backup.* image in {tname}: its backup was deleted or never completed"
                    ),
                    age: Some(self.age(ts)),
                    node: PlanNode { removes: None, host: Some(s.key.clone()), needs },
                    report_blocked: true,
                    op: Op::RemoveSnap,
                });
            }
        }
        Ok(())
    }

    fn push(&mut self, c: Candidate) -> usize {
        self.cands.push(c);
        self.cands.len() - 1
    }
}

/// What the scan saw of `.clone_snap` snapshots that are not candidates.
struct SnapStates<'a> {
    young: &'a HashSet<(ImgKey, String)>,
    used: &'a HashSet<(ImgKey, String)>,
}

/// Journal entries whose volume is gone, once the parent's clean-up is planned or not needed.
fn journal_candidates(
    r: &Reconcile,
    inv: &Inventory,
    cands: &[Candidate],
    plan: &Plan<ImgKey>,
    snaps: &SnapStates<'_>,
    skipped: &mut Vec<Skipped>,
) -> Result<Vec<Candidate>> {
    let planned: HashSet<usize> = plan.order.iter().chain(plan.absorbed.iter()).copied().collect();
    let mut out = Vec::new();
    for (pi, pool) in r.pools.iter().enumerate() {
        let entries = match pool.pool_metadata_list() {
            Ok(v) => v,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        for (key, value) in entries {
            let Some(name) = key.strip_prefix(JOURNAL_KEY_PREFIX) else { continue };
            if !r.keep(name) || inv.names[pi].contains(name) {
                continue; // filtered out, or the volume is still there (a re-run of the delete finishes it)
            }
            let skip = |reason: String| Skipped {
                kind: FindingKind::DeleteJournal,
                pool: pool_label(pool),
                image: name.to_string(),
                snap: None,
                reason,
            };
            let parent = parse_journal(&value);
            let Some((ppool, pns, pid, pimage, psnap)) = parent else {
                skipped.push(skip(format!("unreadable journal entry {key}: {value}")));
                continue;
            };
            let pspec = if pns.is_empty() {
                format!("{ppool}/{pimage}@{psnap}")
            } else {
                format!("{ppool}/{pns}/{pimage}@{psnap}")
            };
            let scanned = r
                .pools
                .iter()
                .enumerate()
                .position(|(i, p)| p.name() == ppool && p.namespace() == pns && inv.fsids[i] == inv.fsids[pi]);
            let Some(ppi) = scanned else {
                skipped.push(skip(format!("the parent {pspec} is in a pool that is not scanned")));
                continue;
            };
            let pkey = ImgKey::new(&inv.fsids[ppi], &ppool, &pns, &pid, &pimage);
            let state = match inv.images.iter().find(|i| i.key == pkey) {
                Some(i) if !i.snaps.iter().any(|s| s.namespace == SnapNamespace::User && s.name == psnap) => {
                    "already done (the parent snapshot is gone)".to_string()
                }
                Some(_) => {
                    if snaps.young.contains(&(pkey.clone(), psnap.clone())) {
                        skipped.push(skip(format!("the parent snapshot {pspec} is younger than min_age")));
                        continue;
                    }
                    match cands.iter().position(|c| {
                        c.kind == FindingKind::CloneSnapshot
                            && c.node.host.as_ref() == Some(&pkey)
                            && c.snap.as_ref().is_some_and(|s| s.0 == psnap)
                    }) {
                        Some(ci) if planned.contains(&ci) || plan.gone.contains(&pkey) => {
                            format!("the parent snapshot {pspec} is removed by this run")
                        }
                        Some(_) => format!("the parent snapshot {pspec} is still used by other clones"),
                        None if plan.gone.contains(&pkey) => format!("the parent {pspec} is removed by this run"),
                        None if snaps.used.contains(&(pkey.clone(), psnap.clone())) => {
                            format!("the parent snapshot {pspec} is still used by other clones")
                        }
                        None => {
                            skipped.push(skip(format!("the parent snapshot {pspec} is not provably an orphan")));
                            continue;
                        }
                    }
                }
                None => match Image::open_by_id(&r.pools[ppi], &pid, true) {
                    Err(e) if e.kind() == ErrorKind::NotFound => "already done (the parent image is gone)".to_string(),
                    Err(e) => return Err(e),
                    Ok(_) => {
                        skipped.push(skip(format!("the parent {pspec} is not among the scanned images")));
                        continue;
                    }
                },
            };
            out.push(Candidate {
                kind: FindingKind::DeleteJournal,
                pool: pool.clone(),
                image: name.to_string(),
                image_id: String::new(),
                snap: None,
                reason: format!("Cinder delete journal entry {key}: the volume is gone, its delete died before cleaning the parent; parent clean-up: {state}"),
                age: None,
                node: PlanNode { removes: None, host: None, needs: Vec::new() },
                report_blocked: false,
                op: Op::RemovePoolMeta { key },
            });
        }
    }
    Ok(out)
}

/// (pool, namespace, image id, image name, snapshot) of a journal value (`cinder::delete`).
fn parse_journal(v: &str) -> Option<(String, String, String, String, String)> {
    let v: serde_json::Value = serde_json::from_str(v).ok()?;
    let f = |k: &str| v.get(k).and_then(serde_json::Value::as_str).map(str::to_string);
    Some((f("pool")?, f("namespace")?, f("image_id")?, f("image")?, f("snap")?))
}

// ---------------------------------------------------------------------------------------------
// Applying, with a re-check of each artifact.

fn changed(c: &Candidate, what: impl Into<String>) -> Error {
    Error::new(ErrorKind::Busy, "reconcile", format!("changed since the scan, left alone: {}", what.into()))
        .with_target(c.image.clone())
}

fn execute(c: &Candidate) -> Result<()> {
    let _s = tracing::info_span!("reconcile_remove", kind = %c.kind, pool = %pool_label(&c.pool), image = %c.image,
        snap = ?c.snap.as_ref().map(|s| &s.0))
    .entered();
    match &c.op {
        Op::RemoveSnap => remove_snap(c),
        Op::RemoveImage { marker } => remove_image(c, marker.as_deref()),
        Op::RemovePoolMeta { key } => {
            if c.pool.image_exists(&c.image)? {
                return Err(changed(c, "the volume exists again"));
            }
            match c.pool.pool_metadata_remove(key) {
                Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
        Op::RemoveObject => match c.pool.object_remove(&c.image) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        Op::BreakLock { owner, heartbeat } => {
            let img = Image::open_by_id(&c.pool, &c.image_id, false)?;
            let now = img.list_lockers()?.lockers.into_iter().find(|l| l.cookie.starts_with("auto "));
            if now.as_ref().map(|l| &l.addr) != Some(owner) {
                return Err(changed(c, "the slot has another holder or none"));
            }
            if img.metadata_get(HEARTBEAT_KEY).ok().as_deref() != Some(heartbeat.as_str()) {
                return Err(changed(c, "the heartbeat moved: the holder is alive"));
            }
            img.lock_break(LockMode::Exclusive, owner)?;
            // The dead holder's heartbeat goes with its lock, as a release would remove it. Best
            // effort: a new holder that took the slot meanwhile owns the lock, so the remove
            // fails (read-only) and its own heartbeat stays.
            if let Err(e) = img.metadata_remove(HEARTBEAT_KEY) {
                tracing::debug!(image = %c.image, error = %e, "slot heartbeat left after breaking the lock");
            }
            Ok(())
        }
    }
}

fn remove_snap(c: &Candidate) -> Result<()> {
    let Some((name, id)) = &c.snap else { return Ok(()) };
    let img = match Image::open_by_id(&c.pool, &c.image_id, false) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        r => r?,
    };
    match img.snap_id(name) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(now) if now != *id => return Err(changed(c, format!("snapshot {name} was re-created"))),
        Ok(_) => {}
    }
    let children = img.children_of_snap(name)?;
    if !children.is_empty() {
        let list: Vec<String> = children.iter().map(|ch| format!("{}/{}", ch.pool, ch.image)).collect();
        return Err(changed(c, format!("snapshot {name} has clone children: {}", list.join(", "))));
    }
    if img.snap_is_protected(name)? {
        match img.snap_unprotect(name) {
            Err(e) if e.kind() != ErrorKind::InvalidArgument => return Err(e),
            _ => {}
        }
    }
    match img.snap_remove(name) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_image(c: &Candidate, marker: Option<&str>) -> Result<()> {
    let ro = match Image::open_by_id(&c.pool, &c.image_id, true) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        r => r?,
    };
    if ro.name() != c.image {
        return Err(changed(c, format!("renamed to {}", ro.name())));
    }
    if let Some(m) = marker {
        if ro.metadata_get(MARKER_KEY).ok().as_deref() != Some(m) {
            return Err(changed(c, "the provenance marker was cleared or replaced: the recipe finished"));
        }
    }
    let children = ro.children()?;
    if !children.is_empty() {
        let list: Vec<String> = children.iter().map(|ch| format!("{}/{}", ch.pool, ch.image)).collect();
        return Err(changed(c, format!("has clone children: {}", list.join(", "))));
    }
    if !ro.watchers()?.is_empty() {
        return Err(changed(c, "in use (watchers)"));
    }
    let snaps = ro.snapshots()?;
    drop(ro);
    if snaps.iter().any(|s| s.namespace == SnapNamespace::User) {
        let rw = Image::open_by_id(&c.pool, &c.image_id, false)?;
        for s in snaps.iter().filter(|s| s.namespace == SnapNamespace::User) {
            if s.protected == Some(true) {
                match rw.snap_unprotect(&s.name) {
                    Err(e) if !matches!(e.kind(), ErrorKind::InvalidArgument | ErrorKind::NotFound) => return Err(e),
                    _ => {}
                }
            }
            match rw.snap_remove(&s.name) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        drop(rw);
    }
    match c.pool.remove_image(&c.image) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Names and small helpers.

/// `pool` or `pool/namespace`.
fn pool_label(p: &Pool) -> String {
    if p.namespace().is_empty() {
        p.name().to_string()
    } else {
        format!("{}/{}", p.name(), p.namespace())
    }
}

/// True for a uuid4 in hex without dashes, as Nova's `uuid4().hex`: 32 lower-case hex digits,
/// version nibble 4, variant nibble 8-b.
fn is_uuid4_hex(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 32
        && b.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        && b[12] == b'4'
        && matches!(b[16], b'8' | b'9' | b'a' | b'b')
}

/// True for a canonical UUID `8-4-4-4-12` of hex digits.
fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter()
            .enumerate()
            .all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { *c == b'-' } else { c.is_ascii_hexdigit() })
}

/// True for a Nova instance disk `<instance uuid>_<disk>` (`_disk`, `_disk.local`, ...).
fn is_instance_disk(name: &str) -> bool {
    name.len() > 37 && name.is_char_boundary(36) && is_uuid(&name[..36]) && name.as_bytes()[36] == b'_'
}

/// True for `volume-<id>.deleted`.
fn is_deleted_volume(name: &str) -> bool {
    name.strip_prefix(VOLUME_PREFIX).and_then(|r| r.strip_suffix(DELETED_SUFFIX)).is_some_and(|id| !id.is_empty())
}

/// A source backup snapshot: a user snapshot matching Cinder's pattern on an image that is not
/// itself a backup image.
fn is_source_backup_snap(image: &str, s: &SnapInfo) -> bool {
    s.namespace == SnapNamespace::User && !image.contains(".backup.") && parse_snap_name(&s.name).is_some()
}

/// The backup id of a backup image `<x>.backup.<bid>` (not the legacy `.backup.base`).
fn backup_id_of_image(name: &str) -> Option<String> {
    let (_, bid) = name.rsplit_once(".backup.")?;
    let ok = !bid.is_empty()
        && bid != LEGACY_BASE_SUFFIX
        && bid.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok.then(|| bid.to_string())
}

/// True when the clone child carries a provenance marker.
fn child_is_marked(parent_pool: &Pool, c: &crate::ChildInfo) -> Result<bool> {
    let pool = Pool::open_ns(parent_pool.cluster(), &c.pool, &c.pool_namespace)?;
    let img = match Image::open_by_id(&pool, &c.image_id, true) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(true), // gone meanwhile
        r => r?,
    };
    match img.metadata_get(MARKER_KEY) {
        Ok(v) => Ok(Marker::parse(&v).is_some_and(|m| !m.names_other_image(&c.pool, &c.image))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// When the image was created (`rbd_get_create_timestamp`); the epoch when not recorded.
fn create_time(img: &Image) -> Result<SystemTime> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid image handle; `ts` is a valid out pointer for the call.
    try_call!(rbd_raw::rbd_get_create_timestamp(img.raw(), &mut ts); "rbd_get_create_timestamp", img.spec())?;
    Ok(system_time_from_timespec(&ts).unwrap_or(UNIX_EPOCH))
}

/// `1h02m`, `3m05s`, `12s`.
fn fmt_age(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let hex = uuid::Uuid::new_v4().simple().to_string();
        assert!(is_uuid4_hex(&hex), "{hex}");
        assert!(!is_uuid4_hex(&hex.to_uppercase()));
        assert!(!is_uuid4_hex("0123456789abcdef0123456789abcdef")); // version nibble 6
        assert!(!is_uuid4_hex("snap"));
        let u = uuid::Uuid::new_v4().to_string();
        assert!(is_instance_disk(&format!("{u}_disk")));
        assert!(is_instance_disk(&format!("{u}_disk.local")));
        assert!(!is_instance_disk(&format!("{u}_")));
        assert!(!is_instance_disk(&format!("{u}disk")));
        assert!(!is_instance_disk("volume-1"));
        assert!(!is_instance_disk(&format!("x{u}_disk")));
        assert!(is_deleted_volume("volume-1.deleted"));
        assert!(!is_deleted_volume("volume-.deleted"));
        assert!(!is_deleted_volume("foo.deleted"));
        assert_eq!(backup_id_of_image("volume-v.backup.b-1").as_deref(), Some("b-1"));
        assert_eq!(backup_id_of_image("volume-v.backup.base"), None);
        assert_eq!(backup_id_of_image("volume-v"), None);
        assert_eq!(fmt_age(Duration::from_secs(3725)), "1h02m");
        assert_eq!(fmt_age(Duration::from_secs(185)), "3m05s");
        assert_eq!(fmt_age(Duration::from_secs(7)), "7s");
    }

    fn node(
        removes: Option<&'static str>,
        host: Option<&'static str>,
        needs: &[&'static str],
    ) -> PlanNode<&'static str> {
        PlanNode { removes, host, needs: needs.iter().map(|n| Need::Gone(*n)).collect() }
    }

    #[test]
    fn plan_orders_children_first_and_absorbs_snapshots_of_removed_images() {
        // 0: temp snap on disk D with child C; 1: half-made C; 2: clone snap on P (child X.deleted);
        // 3: X.deleted (no children); 4: snap on X.deleted; 5: snap with a live child L;
        // 6: P.deleted needing X.deleted gone.
        let nodes = vec![
            node(None, Some("D"), &["C"]),
            node(Some("C"), None, &[]),
            node(None, Some("P"), &["X"]),
            node(Some("X"), None, &[]),
            node(None, Some("X"), &[]),
            node(None, Some("Q"), &["L"]),
            node(Some("P"), None, &["X"]),
        ];
        let p = plan(&nodes);
        assert_eq!(p.order, vec![1, 3, 6, 0]);
        assert_eq!(p.absorbed, vec![4, 2], "snapshots of removed images go with them");
        assert_eq!(p.blocked, vec![5]);
        // Every planned item comes after what it needs.
        for (pos, &i) in p.order.iter().enumerate() {
            for Need::Gone(k) in &nodes[i].needs {
                let by = p.order.iter().position(|&j| nodes[j].removes == Some(*k)).unwrap();
                assert!(by < pos);
            }
        }
    }

    #[test]
    fn plan_of_nothing() {
        let p = plan::<&str>(&[]);
        assert!(p.order.is_empty() && p.blocked.is_empty());
    }
}
