//! Cinder consistency groups on native RBD groups: a set of volumes snapshotted together in
//! **one** crash-consistent operation (Cinder's RBD driver has no group support and snapshots
//! the members one by one, §5 row 17 of the reference).
//!
//! ```no_run
//! use rbd_core::recipes::groups::{ConsistencyGroups, GroupSpec, RestoreSpec};
//! # let cluster = rbd_core::Cluster::shared(None, "cinder")?;
//! let volumes = rbd_core::Pool::open(&cluster, "volumes")?;
//! let cgs = ConsistencyGroups::new(&volumes);
//! cgs.create("cg-1", &GroupSpec::new("db", &["ssd"]))?;
//! cgs.add_volumes("cg-1", &["vol-a", "vol-b"])?; // volume-vol-a, volume-vol-b
//! let snap = cgs.create_snapshot("cg-1", "cgsnap-1", "nightly", "")?;
//! println!("{} members", snap.members.len());
//! let restored = cgs.restore("cg-1", "cgsnap-1", &RestoreSpec::prefix("copy"), &mut rbd_core::Progress::none())?;
//! for v in &restored.volumes {
//!     println!("{} -> {}", v.source_volume_id, v.image);
//! }
//! cgs.delete("cg-1", true)?; // force: also removes the group snapshots
//! # Ok::<(), rbd_core::Error>(())
//! ```
//!
//! # Names and where things live
//!
//! * A consistency group `<id>` is the RBD group `group-<id>` ([`GROUP_PREFIX`]) in the pool
//!   of its volumes; members are Cinder volumes `volume-<volume id>` of the same pool.
//! * A group snapshot (Cinder's cgsnapshot) `<snap id>` is the RBD group snapshot
//!   `group-snapshot-<snap id>` ([`SNAP_PREFIX`]); on every member it appears as a
//!   GROUP-namespace snapshot (`rbd snap ls --all` shows
//!   `.group.<pool id>_<group id>_<group snap id>  ...  group (volumes/group-<id>@group-snapshot-<snap id>)`).
//! * Pacific's RBD groups have **no metadata API**, so the Cinder fields (name, description,
//!   volume types, creation time, and each group snapshot's name and description) are kept in
//!   the RADOS object `rbd_core.cg.<id>` ([`META_PREFIX`]) in the same pool (and namespace), a
//!   JSON document written whole (`rados_write_full`):
//!   `{"id","name","description","volume_types":[..],"created_at":<unix>,"snapshots":{"<snap id>":{"name","description","created_at"}}}`.
//!   Membership and snapshots themselves are **always read from RBD**, never from this object;
//!   the object only adds descriptions, so a stale entry can never invent a member or a snapshot.
//!   Updates are read-modify-write without a lock: Cinder serialises operations on one group
//!   through the group's status, and so must callers of this module.
//!
//! # Recipes
//!
//! Each is a saga; failpoints are `groups.<recipe>.<step>`:
//!
//! * **create** ([`CREATE_STEPS`]): `rbd group create` → write the metadata object. At least one
//!   volume type is required (Cinder's API requires `volume_types`, seed 000).
//! * **add / remove volumes** ([`ADD_STEPS`], [`REMOVE_STEPS`]): refused with
//!   [`ErrorKind::Busy`] and Cinder's text "Consistency group `<id>` still has dependent
//!   cgsnapshots." while the group has group snapshots (seed 000: a group with snapshots cannot
//!   change); every volume is checked before any is changed; each `rbd group image add/rm` is
//!   undone on a later failure.
//! * **create snapshot** ([`SNAPSHOT_STEPS`]): `rbd group snap create` (one librbd operation:
//!   it takes every member's exclusive lock, blocking their writes, then snapshots all members,
//!   so the snapshot is a write barrier across the group; the test with a writer cycling
//!   sequence numbers over three members always read a valid barrier, in practice the same
//!   number on every member) → record name/description.
//! * **delete snapshot** ([`DELETE_SNAPSHOT_STEPS`]) and **delete group** ([`DELETE_STEPS`]):
//!   all checks first, the irreversible removal last. Deleting a group that has snapshots
//!   needs `force` (which removes them), else [`ErrorKind::Busy`] with the same text; the
//!   member volumes stay (they are detached).
//! * **restore** ([`RESTORE_STEPS`]): new volumes from a group snapshot, one per member, each
//!   with the member's content at the snapshot; optionally put into a new group (Cinder's
//!   "create group from group snapshot").
//!
//! # How a volume is made from a group snapshot (evidence, Pacific 16.2.15)
//!
//! A clone would be cheapest, but Pacific clones only from **user-namespace** snapshots, by
//! name: `rbd_clone3` (tried as `rbd clone rbd/gtest-a@.group.1_14636b8b4567_146d6b8b4567
//! rbd/gtest-c`, the name `rbd snap ls --all` shows for the member's group snapshot) fails with
//! ENOENT — `librbd::image::OpenRequest: failed to find snapshot
//! .group.1_...` — and `rbd snap protect` of that name fails with ENOENT too: name lookups
//! only see user snapshots. Cloning by snapshot id (`rbd_clone4`) arrived in Squid. A user
//! snapshot taken now would capture the head, not the group point in time. So each member is
//! opened **at the group snapshot's id** (`rbd_snap_set_by_id`, which accepts any namespace) and
//! copied into a fresh image with [`Transfer`]: bounded AIO reads and
//! writes of the allocated extents only (parent data included, so a member that is itself a
//! clone is copied in full), zero runs skipped, progress and cancellation honoured. The copy is
//! independent of the group snapshot, which can then be deleted freely. While a restored
//! volume is being filled it carries a provenance marker
//! ([`crate::recipes::provenance::KEY`]), removed when the restore completes.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::error::{Error, ErrorKind, Result};
use crate::group::{Group, GroupImageState, GroupSnapState};
use crate::image::Image;
use crate::options::ImageOptions;
use crate::pool::Pool;
use crate::progress::Progress;
use crate::recipes::provenance::Marker;
use crate::recipes::saga::Saga;
use crate::snapshot::{GroupSnapRef, SnapNamespace};
use crate::transfer::Transfer;

/// RBD group name prefix: consistency group `<id>` is the RBD group `group-<id>`.
pub const GROUP_PREFIX: &str = "group-";
/// RBD group snapshot name prefix: group snapshot `<id>` is `group-snapshot-<id>`.
pub const SNAP_PREFIX: &str = "group-snapshot-";
/// Cinder's volume name prefix: members are `volume-<volume id>`.
pub const VOLUME_PREFIX: &str = "volume-";
/// RADOS object name prefix of a group's metadata document: `rbd_core.cg.<id>`.
pub const META_PREFIX: &str = "rbd_core.cg.";
/// Cinder's message when membership changes or a delete meet group snapshots (seed 000).
pub const DEPENDENT_CGSNAPSHOTS: &str = "still has dependent cgsnapshots";

/// Steps of `groups.create`.
pub const CREATE_STEPS: [&str; 2] = ["create", "metadata"];
/// Steps of `groups.add` (`add` runs once per volume).
pub const ADD_STEPS: [&str; 2] = ["check", "add"];
/// Steps of `groups.remove` (`remove` runs once per volume).
pub const REMOVE_STEPS: [&str; 2] = ["check", "remove"];
/// Steps of `groups.snapshot`.
pub const SNAPSHOT_STEPS: [&str; 3] = ["check", "snapshot", "metadata"];
/// Steps of `groups.delete_snapshot` (the removal itself is last and irreversible).
pub const DELETE_SNAPSHOT_STEPS: [&str; 3] = ["check", "metadata", "remove"];
/// Steps of `groups.restore` (`create`, `mark` and `copy` run once per member; `group` and
/// `add` only with a new group).
pub const RESTORE_STEPS: [&str; 7] = ["check", "create", "mark", "copy", "group", "add", "unmark"];
/// Steps of `groups.delete` (the removals are last and irreversible).
pub const DELETE_STEPS: [&str; 4] = ["check", "remove_snapshots", "metadata", "remove"];

/// What a new consistency group is (Cinder's `name`, `description`, `volume_types`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupSpec {
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Volume types the group accepts (at least one).
    pub volume_types: Vec<String>,
}

impl GroupSpec {
    /// A spec with `name` and `volume_types` and no description.
    pub fn new(name: &str, volume_types: &[&str]) -> GroupSpec {
        GroupSpec {
            name: name.to_string(),
            description: String::new(),
            volume_types: volume_types.iter().map(|s| (*s).to_string()).collect(),
        }
    }
}

/// A consistency group as stored: RBD membership plus the metadata document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyGroup {
    /// The group id.
    pub id: String,
    /// The RBD group name (`group-<id>`).
    pub rbd_group: String,
    /// The pool holding the group and its volumes.
    pub pool: String,
    /// Display name (empty when the metadata object is missing).
    pub name: String,
    /// Description.
    pub description: String,
    /// Volume types.
    pub volume_types: Vec<String>,
    /// Creation time (unix seconds), when recorded.
    pub created_at: Option<u64>,
    /// Member volume ids (image `volume-<id>`; an image not named so is listed by its name), sorted.
    pub volumes: Vec<String>,
}

/// One member's share of a group snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSnapshot {
    /// The member's volume id.
    pub volume_id: String,
    /// The member image.
    pub image: String,
    /// Id of the GROUP-namespace snapshot on the member.
    pub snap_id: u64,
    /// Its generated name (`.group.<pool>_<group id>_<snap id>`).
    pub snap_name: String,
    /// Member size at the snapshot, in bytes.
    pub size: u64,
}

/// A group snapshot (Cinder's cgsnapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    /// The snapshot id.
    pub id: String,
    /// The group id.
    pub group_id: String,
    /// The RBD group snapshot name (`group-snapshot-<id>`).
    pub rbd_snap: String,
    /// Display name (empty when not recorded).
    pub name: String,
    /// Description.
    pub description: String,
    /// Creation time (unix seconds), when recorded.
    pub created_at: Option<u64>,
    /// True when every member snapshot exists (librbd's `complete` state).
    pub complete: bool,
    /// The member snapshots, sorted by volume id.
    pub members: Vec<MemberSnapshot>,
}

/// How restored volumes are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreNames {
    /// Volume `<prefix>-<source volume id>` for every member.
    Prefix(String),
    /// An explicit new volume id for every member volume id (every member must be listed).
    Map(BTreeMap<String, String>),
}

/// What [`ConsistencyGroups::restore`] creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSpec {
    /// Names of the new volumes.
    pub names: RestoreNames,
    /// Also create this new group (id and spec) holding the new volumes.
    pub new_group: Option<(String, GroupSpec)>,
}

impl RestoreSpec {
    /// New volumes `<prefix>-<source id>`, no new group.
    pub fn prefix(prefix: &str) -> RestoreSpec {
        RestoreSpec { names: RestoreNames::Prefix(prefix.to_string()), new_group: None }
    }

    /// Also puts the new volumes into a new group `id`.
    #[must_use]
    pub fn into_group(mut self, id: &str, spec: GroupSpec) -> RestoreSpec {
        self.new_group = Some((id.to_string(), spec));
        self
    }
}

/// One volume made by [`ConsistencyGroups::restore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredVolume {
    /// The member volume it was made from.
    pub source_volume_id: String,
    /// The new volume id.
    pub volume_id: String,
    /// The new image (`volume-<volume id>`).
    pub image: String,
    /// Size in bytes (the member's size at the snapshot).
    pub size: u64,
    /// Bytes written as data (the rest stayed holes).
    pub bytes_written: u64,
}

/// The result of [`ConsistencyGroups::restore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredGroup {
    /// The new volumes, in member order (sorted by source volume id).
    pub volumes: Vec<RestoredVolume>,
    /// The new group id, when one was created.
    pub group_id: Option<String>,
}

/// Consistency-group recipes on one pool (the pool of the member volumes).
#[derive(Debug, Clone)]
pub struct ConsistencyGroups {
    pool: Pool,
}

/// The RBD group name of consistency group `id`.
pub fn rbd_group_name(id: &str) -> String {
    format!("{GROUP_PREFIX}{id}")
}

/// The RBD group snapshot name of group snapshot `id`.
pub fn rbd_snap_name(id: &str) -> String {
    format!("{SNAP_PREFIX}{id}")
}

/// The image name of volume `id` (`volume-<id>`).
pub fn volume_name(id: &str) -> String {
    format!("{VOLUME_PREFIX}{id}")
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Ids are Cinder UUIDs in practice; accept `[A-Za-z0-9._-]`, 1..=128 bytes.
fn validate_id(op: &'static str, what: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(op, format!("invalid {what} id {id:?} (1-128 of A-Z a-z 0-9 . _ -)")))
    }
}

fn busy_dependent(op: &'static str, id: &str) -> Error {
    Error::new(ErrorKind::Busy, op, format!("Consistency group {id} {DEPENDENT_CGSNAPSHOTS}."))
}

fn volume_id_of(image: &str) -> String {
    image.strip_prefix(VOLUME_PREFIX).unwrap_or(image).to_string()
}

fn str_field(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or_default().to_string()
}

impl ConsistencyGroups {
    /// Recipes on the groups and volumes of `pool`.
    pub fn new(pool: &Pool) -> ConsistencyGroups {
        ConsistencyGroups { pool: pool.clone() }
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    fn group(&self, id: &str) -> Group {
        Group::new(&self.pool, &rbd_group_name(id))
    }

    fn meta_oid(id: &str) -> String {
        format!("{META_PREFIX}{id}")
    }

    fn exists(&self, id: &str) -> Result<bool> {
        Ok(self.pool.group_list()?.contains(&rbd_group_name(id)))
    }

    fn require(&self, op: &'static str, id: &str) -> Result<()> {
        validate_id(op, "group", id)?;
        if self.exists(id)? {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::NotFound, op, format!("consistency group {id} does not exist"))
                .with_target(format!("{}/{}", self.pool.name(), rbd_group_name(id))))
        }
    }

    /// The metadata document; an empty object when it does not exist.
    fn read_meta(&self, id: &str) -> Result<Value> {
        match self.pool.object_read_full(&Self::meta_oid(id)) {
            Ok(b) if b.is_empty() => Ok(Value::Object(Map::new())),
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::new(ErrorKind::Malformed, "groups.metadata", format!("{}: {e}", Self::meta_oid(id)))
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Value::Object(Map::new())),
            Err(e) => Err(e),
        }
    }

    fn write_meta(&self, id: &str, v: &Value) -> Result<()> {
        self.pool.object_write_full(&Self::meta_oid(id), v.to_string().as_bytes())
    }

    fn remove_meta(&self, id: &str) -> Result<()> {
        match self.pool.object_remove(&Self::meta_oid(id)) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Changes one entry of the `snapshots` map (`None` removes it).
    fn set_snap_meta(&self, id: &str, snap_id: &str, entry: Option<Value>) -> Result<()> {
        let mut meta = self.read_meta(id)?;
        if !meta.is_object() {
            meta = Value::Object(Map::new());
        }
        let snaps = meta
            .as_object_mut()
            .map(|m| m.entry("snapshots").or_insert_with(|| Value::Object(Map::new())))
            .and_then(Value::as_object_mut);
        if let Some(snaps) = snaps {
            match entry {
                Some(e) => {
                    snaps.insert(snap_id.to_string(), e);
                }
                None => {
                    snaps.remove(snap_id);
                }
            }
        }
        self.write_meta(id, &meta)
    }

    /// Member volume ids (attached and incomplete), sorted.
    fn member_images(&self, id: &str) -> Result<Vec<String>> {
        let pool_id = self.pool.id();
        let mut v: Vec<String> =
            self.group(id).images()?.into_iter().filter(|m| m.pool == pool_id).map(|m| m.name).collect();
        v.sort();
        Ok(v)
    }

    /// Consistency group `id`: RBD membership and the recorded metadata.
    ///
    /// Uses `rbd_group_list`, `rbd_group_image_list` and `rados_read`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a bad id, [`ErrorKind::NotFound`] when the group does
    /// not exist, [`ErrorKind::Malformed`] for an unreadable metadata object.
    pub fn get(&self, id: &str) -> Result<ConsistencyGroup> {
        self.require("groups.get", id)?;
        let meta = self.read_meta(id)?;
        Ok(ConsistencyGroup {
            id: id.to_string(),
            rbd_group: rbd_group_name(id),
            pool: self.pool.name().to_string(),
            name: str_field(&meta, "name"),
            description: str_field(&meta, "description"),
            volume_types: meta
                .get("volume_types")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default(),
            created_at: meta.get("created_at").and_then(Value::as_u64),
            volumes: self.member_images(id)?.iter().map(|n| volume_id_of(n)).collect(),
        })
    }

    /// Ids of the consistency groups in the pool (RBD groups named `group-*`), sorted.
    ///
    /// # Errors
    /// Errors from `rbd_group_list`.
    pub fn list(&self) -> Result<Vec<String>> {
        Ok(self.pool.group_list()?.iter().filter_map(|g| g.strip_prefix(GROUP_PREFIX)).map(str::to_string).collect())
    }

    /// Creates consistency group `id` (recipe `groups.create`, steps [`CREATE_STEPS`]).
    ///
    /// Uses `rbd_group_create` and `rados_write_full`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a bad id or no volume type (nothing is changed),
    /// [`ErrorKind::Exists`] when the group exists, [`ErrorKind::PermissionDenied`].
    pub fn create(&self, id: &str, spec: &GroupSpec) -> Result<ConsistencyGroup> {
        let _span = tracing::info_span!("groups.create", pool = %self.pool.name(), group = id).entered();
        validate_id("groups.create", "group", id)?;
        if spec.volume_types.is_empty() || spec.volume_types.iter().any(|t| t.trim().is_empty()) {
            return Err(Error::invalid("groups.create", "a consistency group needs at least one volume type"));
        }
        let meta = json!({
            "id": id,
            "name": spec.name,
            "description": spec.description,
            "volume_types": spec.volume_types,
            "created_at": now_unix(),
            "snapshots": {},
        });
        let mut s = Saga::new("groups.create");
        s.step(
            "create",
            || self.pool.group_create(&rbd_group_name(id)),
            || self.pool.group_remove(&rbd_group_name(id)),
        )?;
        s.step("metadata", || self.write_meta(id, &meta), || self.remove_meta(id))?;
        s.commit()?;
        self.get(id)
    }

    /// Adds volumes `volume-<id>` to the group (recipe `groups.add`, steps [`ADD_STEPS`]).
    /// Every volume is checked before any is added; on a failure the ones added are removed.
    ///
    /// Uses `rbd_group_image_add`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for bad ids, [`ErrorKind::NotFound`] for a missing group
    /// or volume, [`ErrorKind::Busy`] ("... still has dependent cgsnapshots.") while the group
    /// has group snapshots, [`ErrorKind::Exists`] when a volume already belongs to a group.
    pub fn add_volumes(&self, id: &str, volume_ids: &[&str]) -> Result<ConsistencyGroup> {
        let _span =
            tracing::info_span!("groups.add", pool = %self.pool.name(), group = id, volumes = ?volume_ids).entered();
        self.check_volume_ids("groups.add", volume_ids)?;
        let mut s = Saga::new("groups.add");
        s.check("check", || {
            self.require("groups.add", id)?;
            self.refuse_with_snapshots("groups.add", id)?;
            for v in volume_ids {
                let img = Image::open_read_only(&self.pool, &volume_name(v))?;
                if let Some((pool, g)) = img.group()? {
                    return Err(Error::new(
                        ErrorKind::Exists,
                        "groups.add",
                        format!("volume {v} already belongs to group {g} (pool id {pool})"),
                    ));
                }
            }
            Ok(())
        })?;
        let group = self.group(id);
        for v in volume_ids {
            let name = volume_name(v);
            let (g, p, n2) = (group.clone(), self.pool.clone(), name.clone());
            s.step("add", || group.add_image(&self.pool, &name), move || ignore_not_found(g.remove_image(&p, &n2)))?;
        }
        s.commit()?;
        self.get(id)
    }

    /// Removes volumes from the group (recipe `groups.remove`, steps [`REMOVE_STEPS`]); the
    /// images stay.
    ///
    /// Uses `rbd_group_image_remove`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for bad ids, [`ErrorKind::NotFound`] for a missing group
    /// or a volume that is not a member, [`ErrorKind::Busy`] while the group has snapshots.
    pub fn remove_volumes(&self, id: &str, volume_ids: &[&str]) -> Result<ConsistencyGroup> {
        let _span =
            tracing::info_span!("groups.remove", pool = %self.pool.name(), group = id, volumes = ?volume_ids).entered();
        self.check_volume_ids("groups.remove", volume_ids)?;
        let mut s = Saga::new("groups.remove");
        s.check("check", || {
            self.require("groups.remove", id)?;
            self.refuse_with_snapshots("groups.remove", id)?;
            let members = self.member_images(id)?;
            for v in volume_ids {
                if !members.contains(&volume_name(v)) {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        "groups.remove",
                        format!("volume {v} is not a member of consistency group {id}"),
                    ));
                }
            }
            Ok(())
        })?;
        let group = self.group(id);
        for v in volume_ids {
            let name = volume_name(v);
            let (g, p, n2) = (group.clone(), self.pool.clone(), name.clone());
            s.step("remove", || group.remove_image(&self.pool, &name), move || g.add_image(&p, &n2))?;
        }
        s.commit()?;
        self.get(id)
    }

    fn check_volume_ids(&self, op: &'static str, volume_ids: &[&str]) -> Result<()> {
        if volume_ids.is_empty() {
            return Err(Error::invalid(op, "no volumes given"));
        }
        for (i, v) in volume_ids.iter().enumerate() {
            validate_id(op, "volume", v)?;
            if volume_ids[..i].contains(v) {
                return Err(Error::invalid(op, format!("volume {v} given twice")));
            }
        }
        Ok(())
    }

    fn refuse_with_snapshots(&self, op: &'static str, id: &str) -> Result<()> {
        if self.group(id).snaps()?.is_empty() {
            Ok(())
        } else {
            Err(busy_dependent(op, id))
        }
    }

    /// Takes group snapshot `snap_id` of every member at once (recipe `groups.snapshot`, steps
    /// [`SNAPSHOT_STEPS`]), without quiesce notifications.
    ///
    /// Uses `rbd_group_snap_create2` and `rados_write_full`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for bad ids or a group without volumes,
    /// [`ErrorKind::NotFound`] for a missing group, [`ErrorKind::Exists`] when the snapshot id
    /// is taken, a member's snapshot error (e.g. [`ErrorKind::QuotaExceeded`]).
    pub fn create_snapshot(&self, id: &str, snap_id: &str, name: &str, description: &str) -> Result<GroupSnapshot> {
        let _span =
            tracing::info_span!("groups.snapshot", pool = %self.pool.name(), group = id, snap = snap_id).entered();
        validate_id("groups.snapshot", "group", id)?;
        validate_id("groups.snapshot", "group snapshot", snap_id)?;
        let group = self.group(id);
        let rbd_snap = rbd_snap_name(snap_id);
        let mut s = Saga::new("groups.snapshot");
        s.check("check", || {
            self.require("groups.snapshot", id)?;
            let members = group.images()?;
            if members.is_empty() {
                return Err(Error::invalid("groups.snapshot", format!("consistency group {id} has no volumes")));
            }
            if let Some(m) = members.iter().find(|m| m.state != GroupImageState::Attached) {
                return Err(Error::new(
                    ErrorKind::Busy,
                    "groups.snapshot",
                    format!("member {} of consistency group {id} is not fully attached ({:?})", m.name, m.state),
                ));
            }
            if group.snaps()?.iter().any(|g| g.name == rbd_snap) {
                return Err(Error::new(
                    ErrorKind::Exists,
                    "groups.snapshot",
                    format!("group snapshot {snap_id} of consistency group {id} exists"),
                ));
            }
            Ok(())
        })?;
        let (g2, snap2) = (group.clone(), rbd_snap.clone());
        s.step("snapshot", || group.snap_create(&rbd_snap), move || ignore_not_found(g2.snap_remove(&snap2)))?;
        let entry = json!({"name": name, "description": description, "created_at": now_unix()});
        s.step("metadata", || self.set_snap_meta(id, snap_id, Some(entry)), || self.set_snap_meta(id, snap_id, None))?;
        s.commit()?;
        self.snapshot(id, snap_id)
    }

    /// Group snapshot `snap_id` of group `id`, with its member snapshots.
    ///
    /// Uses `rbd_group_snap_list`, `rbd_group_image_list` and `rbd_snap_list` on each member.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the group or the snapshot does not exist.
    pub fn snapshot(&self, id: &str, snap_id: &str) -> Result<GroupSnapshot> {
        validate_id("groups.snapshot", "group snapshot", snap_id)?;
        self.snapshots(id)?.into_iter().find(|s| s.id == snap_id).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                "groups.snapshot",
                format!("group snapshot {snap_id} of consistency group {id} does not exist"),
            )
        })
    }

    /// The group snapshots of group `id` (every RBD group snapshot; ids are the names without
    /// `group-snapshot-`), sorted by id.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the group does not exist; errors from librbd.
    pub fn snapshots(&self, id: &str) -> Result<Vec<GroupSnapshot>> {
        self.require("groups.snapshots", id)?;
        let meta = self.read_meta(id)?;
        let group = self.group(id);
        let rbd_group = rbd_group_name(id);
        let members = self.member_images(id)?;
        let mut member_snaps: Vec<(String, Vec<crate::snapshot::SnapInfo>)> = Vec::new();
        for m in &members {
            let img = Image::open_read_only(&self.pool, m)?;
            member_snaps.push((m.clone(), img.snapshots()?));
        }
        let mut out = Vec::new();
        for gs in group.snaps()? {
            let sid = gs.name.strip_prefix(SNAP_PREFIX).unwrap_or(&gs.name).to_string();
            let want = GroupSnapRef { pool: self.pool.id(), group: rbd_group.clone(), snap: gs.name.clone() };
            let members = member_snaps
                .iter()
                .filter_map(|(image, snaps)| {
                    snaps.iter().find(|s| s.namespace == SnapNamespace::Group && s.group.as_ref() == Some(&want)).map(
                        |s| MemberSnapshot {
                            volume_id: volume_id_of(image),
                            image: image.clone(),
                            snap_id: s.id,
                            snap_name: s.name.clone(),
                            size: s.size,
                        },
                    )
                })
                .collect();
            let entry = meta.get("snapshots").and_then(|m| m.get(&sid)).cloned().unwrap_or(Value::Null);
            out.push(GroupSnapshot {
                id: sid,
                group_id: id.to_string(),
                rbd_snap: gs.name.clone(),
                name: str_field(&entry, "name"),
                description: str_field(&entry, "description"),
                created_at: entry.get("created_at").and_then(Value::as_u64),
                complete: gs.state == GroupSnapState::Complete,
                members,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Deletes group snapshot `snap_id` and its member snapshots (recipe
    /// `groups.delete_snapshot`, steps [`DELETE_SNAPSHOT_STEPS`]). Volumes restored from it are
    /// independent copies and stay.
    ///
    /// Uses `rbd_group_snap_remove`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for bad ids, [`ErrorKind::NotFound`] when the group or
    /// the snapshot does not exist.
    pub fn delete_snapshot(&self, id: &str, snap_id: &str) -> Result<()> {
        let _span = tracing::info_span!("groups.delete_snapshot", pool = %self.pool.name(), group = id, snap = snap_id)
            .entered();
        validate_id("groups.delete_snapshot", "group", id)?;
        validate_id("groups.delete_snapshot", "group snapshot", snap_id)?;
        let group = self.group(id);
        let rbd_snap = rbd_snap_name(snap_id);
        let mut s = Saga::new("groups.delete_snapshot");
        s.check("check", || {
            self.require("groups.delete_snapshot", id)?;
            if group.snaps()?.iter().any(|g| g.name == rbd_snap) {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorKind::NotFound,
                    "groups.delete_snapshot",
                    format!("group snapshot {snap_id} of consistency group {id} does not exist"),
                ))
            }
        })?;
        let old = self.read_meta(id)?.get("snapshots").and_then(|m| m.get(snap_id)).cloned();
        s.step(
            "metadata",
            || self.set_snap_meta(id, snap_id, None),
            // Only while the snapshot still exists (a failure after `remove` keeps it deleted).
            || match old {
                Some(e) if group.snaps()?.iter().any(|g| g.name == rbd_snap) => {
                    self.set_snap_meta(id, snap_id, Some(e))
                }
                _ => Ok(()),
            },
        )?;
        s.step("remove", || group.snap_remove(&rbd_snap), || Ok(()))?;
        s.commit()
    }

    /// Deletes consistency group `id` (recipe `groups.delete`, steps [`DELETE_STEPS`]). The
    /// member volumes stay (detached). With group snapshots, `force` removes them first;
    /// without it the group is left unchanged. Removed snapshots cannot be brought back, so a
    /// failure after `remove_snapshots` leaves the group without them (and otherwise intact:
    /// the metadata object is restored); running the delete again completes it.
    ///
    /// Uses `rbd_group_snap_remove`, `rbd_group_remove` and `rados_remove`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a bad id, [`ErrorKind::NotFound`] when the group does
    /// not exist, [`ErrorKind::Busy`] ("... still has dependent cgsnapshots.") with snapshots
    /// and no `force`.
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let _span = tracing::info_span!("groups.delete", pool = %self.pool.name(), group = id, force).entered();
        validate_id("groups.delete", "group", id)?;
        let group = self.group(id);
        let mut s = Saga::new("groups.delete");
        let snaps = s.check("check", || {
            self.require("groups.delete", id)?;
            let snaps = group.snaps()?;
            if !snaps.is_empty() && !force {
                return Err(busy_dependent("groups.delete", id));
            }
            Ok(snaps)
        })?;
        s.step(
            "remove_snapshots",
            || {
                for gs in &snaps {
                    ignore_not_found(group.snap_remove(&gs.name))?;
                }
                Ok(())
            },
            || Ok(()),
        )?;
        let old = self.pool.object_read_full(&Self::meta_oid(id)).ok();
        s.step(
            "metadata",
            || self.remove_meta(id),
            // Only while the group still exists (a failure after `remove` keeps it deleted).
            move || match &old {
                Some(b) if self.exists(id)? => self.pool.object_write_full(&Self::meta_oid(id), b),
                _ => Ok(()),
            },
        )?;
        s.step("remove", || self.pool.group_remove(&rbd_group_name(id)), || Ok(()))?;
        s.commit()
    }

    /// Creates one new volume per member with the member's content at group snapshot
    /// `snap_id` (recipe `groups.restore`, steps [`RESTORE_STEPS`]); see the
    /// [module docs](self) for why this is a copy and not a clone. Each new image gets the
    /// member's object order and features. With [`RestoreSpec::new_group`] the new volumes
    /// also form a new consistency group. Any failure or cancellation removes everything
    /// created.
    ///
    /// Progress reports bytes of member extents processed over all members.
    ///
    /// Uses `rbd_snap_set_by_id`, `rbd_create4`, `rbd_diff_iterate2`, `rbd_aio_read2`,
    /// `rbd_aio_write2`, `rbd_metadata_set`, and the group calls for a new group.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for bad ids or names that do not cover every member,
    /// [`ErrorKind::NotFound`] when the group or snapshot does not exist,
    /// [`ErrorKind::Busy`] for an incomplete group snapshot, [`ErrorKind::Exists`] when a
    /// target volume or the new group exists (all checked before anything is created),
    /// [`ErrorKind::Cancelled`], librbd errors.
    pub fn restore(
        &self,
        id: &str,
        snap_id: &str,
        spec: &RestoreSpec,
        progress: &mut Progress<'_>,
    ) -> Result<RestoredGroup> {
        let _span =
            tracing::info_span!("groups.restore", pool = %self.pool.name(), group = id, snap = snap_id).entered();
        validate_id("groups.restore", "group", id)?;
        validate_id("groups.restore", "group snapshot", snap_id)?;
        if let RestoreNames::Prefix(p) = &spec.names {
            validate_id("groups.restore", "prefix", p)?;
        }
        if let Some((gid, gspec)) = &spec.new_group {
            validate_id("groups.restore", "group", gid)?;
            if gspec.volume_types.is_empty() {
                return Err(Error::invalid("groups.restore", "the new consistency group needs a volume type"));
            }
        }
        let mut s = Saga::new("groups.restore");
        let plan = s.check("check", || self.restore_plan(id, snap_id, spec))?;

        let total: u64 = plan.iter().map(|(m, _)| m.size).sum();
        let mut done_before = 0u64;
        let mut out = Vec::new();
        for (m, new_id) in &plan {
            let name = volume_name(new_id);
            let src = Image::open_at_snap_id(&self.pool, &m.image, m.snap_id)?;
            let head = Image::open_read_only(&self.pool, &m.image)?;
            let mut opts = ImageOptions::new();
            opts.order(src.stat()?.order).features(head.features()?);
            let p = self.pool.clone();
            let n2 = name.clone();
            s.step("create", || self.pool.create_image(&name, m.size, &opts), move || remove_quiet(&p, &n2))?;
            // The new image is opened inside each step, so its handle (a watch) is closed
            // before any undo has to remove it.
            s.check("mark", || Marker::new("groups.restore", new_id, "copy").apply(&Image::open(&self.pool, &name)?))?;
            let size = m.size;
            let stats = s.check("copy", || {
                let dst = Image::open(&self.pool, &name)?;
                let base = done_before;
                let mut cb = |done: u64, tot: u64| {
                    let within =
                        if tot == 0 { 0 } else { (u128::from(done) * u128::from(size) / u128::from(tot)) as u64 };
                    match progress.report(base + within.min(size), total) {
                        Ok(()) => ControlFlow::Continue(()),
                        Err(_) => ControlFlow::Break(()),
                    }
                };
                let mut inner = Progress::new(&mut cb);
                Transfer::new(&src, &dst).to_snap(None).dst_is_zero(true).run(&mut inner)
            })?;
            done_before += size;
            out.push(RestoredVolume {
                source_volume_id: m.volume_id.clone(),
                volume_id: new_id.clone(),
                image: name,
                size,
                bytes_written: stats.bytes_written,
            });
        }
        if let Some((gid, gspec)) = &spec.new_group {
            let meta = json!({
                "id": gid, "name": gspec.name, "description": gspec.description,
                "volume_types": gspec.volume_types, "created_at": now_unix(), "snapshots": {},
                "source": {"group": id, "group_snapshot": snap_id},
            });
            let gname = rbd_group_name(gid);
            s.step(
                "group",
                || {
                    self.pool.group_create(&gname)?;
                    self.write_meta(gid, &meta)
                },
                move || {
                    self.pool.group_remove(&rbd_group_name(gid))?;
                    self.remove_meta(gid)
                },
            )?;
            let group = self.group(gid);
            for v in &out {
                // Removing the group (the undo above) detaches its members.
                s.step("add", || group.add_image(&self.pool, &v.image), || Ok(()))?;
            }
        }
        s.check("unmark", || {
            for v in &out {
                Marker::clear(&Image::open(&self.pool, &v.image)?)?;
            }
            Ok(())
        })?;
        s.commit()?;
        // Done: a cancel request arriving now no longer matters.
        let _ = progress.report(total, total);
        Ok(RestoredGroup { volumes: out, group_id: spec.new_group.as_ref().map(|(g, _)| g.clone()) })
    }

    /// Checks everything a restore needs; returns (member snapshot, new volume id) per member.
    fn restore_plan(&self, id: &str, snap_id: &str, spec: &RestoreSpec) -> Result<Vec<(MemberSnapshot, String)>> {
        const OP: &str = "groups.restore";
        let snap = self.snapshot(id, snap_id)?;
        if !snap.complete {
            return Err(Error::new(ErrorKind::Busy, OP, format!("group snapshot {snap_id} is incomplete")));
        }
        if snap.members.is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                OP,
                format!("group snapshot {snap_id} has no member snapshots"),
            ));
        }
        let mut plan = Vec::new();
        for m in snap.members {
            let new_id = match &spec.names {
                RestoreNames::Prefix(p) => format!("{p}-{}", m.volume_id),
                RestoreNames::Map(map) => map.get(&m.volume_id).cloned().ok_or_else(|| {
                    Error::invalid(OP, format!("no new volume id given for member volume {}", m.volume_id))
                })?,
            };
            validate_id(OP, "volume", &new_id)?;
            if plan.iter().any(|(_, n)| n == &new_id) {
                return Err(Error::invalid(OP, format!("new volume id {new_id} given twice")));
            }
            if self.pool.image_exists(&volume_name(&new_id))? {
                return Err(Error::new(ErrorKind::Exists, OP, format!("volume {new_id} already exists"))
                    .with_target(format!("{}/{}", self.pool.name(), volume_name(&new_id))));
            }
            plan.push((m, new_id));
        }
        if let Some((gid, _)) = &spec.new_group {
            if self.exists(gid)? {
                return Err(Error::new(ErrorKind::Exists, OP, format!("consistency group {gid} already exists")));
            }
        }
        Ok(plan)
    }
}

fn ignore_not_found(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Undo of a created image: remove it (already gone is fine).
fn remove_quiet(pool: &Pool, name: &str) -> Result<()> {
    ignore_not_found(pool.remove_image(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(validate_id("t", "group", "0f5e2a8b-6c8e-4d0c-9a6b-1f2e3d4c5b6a").is_ok());
        assert!(validate_id("t", "group", "a.b_c").is_ok());
        for bad in ["", "a/b", "a@b", "a b", &"x".repeat(129)] {
            assert_eq!(validate_id("t", "group", bad).unwrap_err().kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn names_follow_cinder() {
        assert_eq!(rbd_group_name("g1"), "group-g1");
        assert_eq!(rbd_snap_name("s1"), "group-snapshot-s1");
        assert_eq!(volume_name("v1"), "volume-v1");
        assert_eq!(volume_id_of("volume-v1"), "v1");
        assert_eq!(volume_id_of("other"), "other");
    }

    #[test]
    fn busy_text_is_cinders() {
        let e = busy_dependent("t", "b37f");
        assert_eq!(e.kind(), ErrorKind::Busy);
        assert!(e.to_string().contains("Consistency group b37f still has dependent cgsnapshots."), "{e}");
    }
}
