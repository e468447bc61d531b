//! Consistency-group recipes against the live cluster: the Cinder lifecycle (create with
//! volume types, add/remove volumes, membership frozen by group snapshots with Cinder's
//! message, delete with and without force), a crash-consistent group snapshot under concurrent
//! writes, restores that match the members at the snapshot, and the undo at every step
//! boundary of every recipe.
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{pattern, purge_image, unique};
use rbd_core::recipes::failpoint::{self, Action};
use rbd_core::recipes::groups::{
    rbd_group_name, volume_name, ConsistencyGroups, GroupSpec, RestoreNames, RestoreSpec, ADD_STEPS, CREATE_STEPS,
    DELETE_SNAPSHOT_STEPS, DELETE_STEPS, META_PREFIX, REMOVE_STEPS, RESTORE_STEPS, SNAPSHOT_STEPS,
};
use rbd_core::recipes::provenance;
use rbd_core::{Cluster, ErrorKind, Group, Image, ImageOptions, Pool, Progress, SnapNamespace};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
const POOL: &str = "volumes";

/// Every test runs group recipes: failpoints are process-global.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes the test's groups (with their snapshots and metadata objects) and then its volumes.
struct Cleanup {
    pool: Pool,
    groups: Vec<String>,
    volumes: Vec<String>,
}

impl Cleanup {
    fn new(pool: &Pool) -> Cleanup {
        Cleanup { pool: pool.clone(), groups: Vec::new(), volumes: Vec::new() }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for g in &self.groups {
            let _ = self.pool.group_remove(&rbd_group_name(g));
            let _ = self.pool.object_remove(&format!("{META_PREFIX}{g}"));
        }
        for v in &self.volumes {
            purge_image(&self.pool, &volume_name(v));
        }
    }
}

/// Creates volume `volume-<id>` of `size` with `seed` data in its first MiB and in its last.
fn volume(pool: &Pool, cleanup: &mut Cleanup, tag: &str, size: u64, seed: u64) -> String {
    let id = unique(tag);
    pool.create_image(&volume_name(&id), size, ImageOptions::new().order(22)).unwrap();
    cleanup.volumes.push(id.clone());
    let img = Image::open(pool, &volume_name(&id)).unwrap();
    img.write(0, &pattern(seed, MIB as usize)).unwrap();
    img.write(size - MIB, &pattern(seed + 1000, MIB as usize)).unwrap();
    id
}

fn sha_image(img: &Image) -> Vec<u8> {
    let size = img.size().unwrap();
    let mut h = Sha256::new();
    let mut off = 0;
    while off < size {
        let n = (4 * MIB).min(size - off);
        h.update(img.read_vec(off, n as usize).unwrap());
        off += n;
    }
    h.finalize().to_vec()
}

/// A group's members, RBD group snapshots and metadata document.
type GroupState = (Vec<String>, Vec<String>, Option<String>);

/// Everything a recipe could have changed, restricted to the test's names.
#[derive(Debug, PartialEq)]
struct State {
    images: Vec<String>,
    snaps: BTreeMap<String, Vec<(String, SnapNamespace)>>,
    groups: BTreeMap<String, GroupState>,
}

fn state(pool: &Pool, volumes: &[String], groups: &[String]) -> State {
    let names: Vec<String> = volumes.iter().map(|v| volume_name(v)).collect();
    let images: Vec<String> = pool.image_names().unwrap().into_iter().filter(|n| names.contains(n)).collect();
    let mut snaps = BTreeMap::new();
    for n in &images {
        let img = Image::open_read_only(pool, n).unwrap();
        snaps.insert(n.clone(), img.snapshots().unwrap().into_iter().map(|s| (s.name, s.namespace)).collect());
        assert_eq!(provenance::Marker::read(&img).unwrap(), None, "{n} left marked");
    }
    let all = pool.group_list().unwrap();
    let mut gs = BTreeMap::new();
    for g in groups {
        let rbd = rbd_group_name(g);
        if !all.contains(&rbd) {
            assert!(pool.object_read_full(&format!("{META_PREFIX}{g}")).is_err(), "metadata of absent group {g}");
            continue;
        }
        let group = Group::new(pool, &rbd);
        let mut members: Vec<String> = group.images().unwrap().into_iter().map(|m| m.name).collect();
        members.sort();
        let snaps: Vec<String> = group.snaps().unwrap().into_iter().map(|s| s.name).collect();
        let meta = pool.object_read_full(&format!("{META_PREFIX}{g}")).ok().map(|b| String::from_utf8(b).unwrap());
        gs.insert(g.clone(), (members, snaps, meta));
    }
    State { images, snaps, groups: gs }
}

fn volumes_pool(c: &Cluster) -> Pool {
    Pool::open(c, POOL).unwrap()
}

#[test]
fn lifecycle_matches_cinder_consistency_groups() {
    let c = live!();
    let _g = lock();
    let pool = volumes_pool(&c);
    let cgs = ConsistencyGroups::new(&pool);
    let mut cleanup = Cleanup::new(&pool);
    let gid = unique("cg");
    cleanup.groups.push(gid.clone());
    let a = volume(&pool, &mut cleanup, "cga", 8 * MIB, 1);
    let b = volume(&pool, &mut cleanup, "cgb", 8 * MIB, 2);
    let extra = volume(&pool, &mut cleanup, "cgx", 4 * MIB, 3);

    // Bad input is refused before anything changes.
    let e = cgs.create(&gid, &GroupSpec::new("my_cg", &[])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "a volume type is required: {e}");
    assert_eq!(cgs.create("bad/id", &GroupSpec::new("x", &["t"])).unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert!(!pool.group_list().unwrap().contains(&rbd_group_name(&gid)));

    let mut spec = GroupSpec::new("my_cg", &["Type1", "Type2"]);
    spec.description = "***".into();
    let g = cgs.create(&gid, &spec).unwrap();
    assert_eq!((g.name.as_str(), g.description.as_str()), ("my_cg", "***"));
    assert_eq!(g.volume_types, vec!["Type1", "Type2"]);
    assert!(g.volumes.is_empty() && g.created_at.is_some());
    assert_eq!(g.rbd_group, format!("group-{gid}"));
    let meta: serde_json::Value =
        serde_json::from_slice(&pool.object_read_full(&format!("rbd_core.cg.{gid}")).unwrap()).unwrap();
    assert_eq!(meta["volume_types"], serde_json::json!(["Type1", "Type2"]));
    assert_eq!(cgs.create(&gid, &spec).unwrap_err().kind(), ErrorKind::Exists);
    assert!(cgs.list().unwrap().contains(&gid));

    // Members.
    assert_eq!(cgs.add_volumes(&gid, &["nope-missing"]).unwrap_err().kind(), ErrorKind::NotFound);
    let g = cgs.add_volumes(&gid, &[&a, &b]).unwrap();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(g.volumes, want);
    assert_eq!(
        Image::open_read_only(&pool, &volume_name(&a)).unwrap().group().unwrap().unwrap().1,
        rbd_group_name(&gid)
    );

    // A group snapshot: one GROUP-namespace snapshot per member.
    let snap_id = unique("cgsnap");
    let s = cgs.create_snapshot(&gid, &snap_id, "my_cg_snapshot", "nightly").unwrap();
    assert!(s.complete);
    assert_eq!((s.name.as_str(), s.description.as_str()), ("my_cg_snapshot", "nightly"));
    assert_eq!(s.rbd_snap, format!("group-snapshot-{snap_id}"));
    assert_eq!(s.members.iter().map(|m| m.volume_id.clone()).collect::<Vec<_>>(), want);
    for m in &s.members {
        let snaps = Image::open_read_only(&pool, &m.image).unwrap().snapshots().unwrap();
        let ms = snaps.iter().find(|x| x.id == m.snap_id).unwrap();
        assert_eq!(ms.namespace, SnapNamespace::Group);
        assert!(ms.name.starts_with(".group."), "{}", ms.name);
        assert_eq!(ms.group.as_ref().unwrap().snap, s.rbd_snap);
    }
    assert_eq!(cgs.snapshots(&gid).unwrap(), vec![s.clone()]);
    assert_eq!(cgs.create_snapshot(&gid, &snap_id, "", "").unwrap_err().kind(), ErrorKind::Exists);

    // Membership is frozen while group snapshots exist (Cinder: 400 "still has dependent cgsnapshots").
    for e in [cgs.add_volumes(&gid, &[&extra]).unwrap_err(), cgs.remove_volumes(&gid, &[&a]).unwrap_err()] {
        assert_eq!(e.kind(), ErrorKind::Busy);
        assert!(e.to_string().contains(&format!("Consistency group {gid} still has dependent cgsnapshots.")), "{e}");
    }
    let e = cgs.delete(&gid, false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert!(e.to_string().contains("still has dependent cgsnapshots"));
    assert_eq!(cgs.get(&gid).unwrap().volumes, want, "unchanged");

    // Delete the group snapshot: the member snapshots go with it; membership can change again.
    cgs.delete_snapshot(&gid, &snap_id).unwrap();
    assert!(cgs.snapshots(&gid).unwrap().is_empty());
    for v in [&a, &b] {
        assert!(Image::open_read_only(&pool, &volume_name(v)).unwrap().snapshots().unwrap().is_empty());
    }
    assert_eq!(cgs.delete_snapshot(&gid, &snap_id).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(cgs.remove_volumes(&gid, &[&extra]).unwrap_err().kind(), ErrorKind::NotFound, "not a member");
    let g = cgs.remove_volumes(&gid, &[&a]).unwrap();
    assert_eq!(g.volumes, vec![b.clone()]);
    cgs.add_volumes(&gid, &[&extra]).unwrap();

    // Delete with force removes the group snapshots; the volumes stay, detached.
    cgs.create_snapshot(&gid, &unique("cgsnap"), "", "").unwrap();
    cgs.delete(&gid, true).unwrap();
    assert!(!pool.group_list().unwrap().contains(&rbd_group_name(&gid)));
    assert!(pool.object_read_full(&format!("rbd_core.cg.{gid}")).is_err(), "metadata removed");
    for v in [&a, &b, &extra] {
        let img = Image::open_read_only(&pool, &volume_name(v)).unwrap();
        assert_eq!(img.group().unwrap(), None);
        assert!(img.snapshots().unwrap().is_empty());
    }
    assert_eq!(cgs.delete(&gid, true).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(cgs.get(&gid).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn group_snapshot_is_crash_consistent_under_concurrent_writes_and_restores_match() {
    let c = live!();
    let _g = lock();
    let pool = volumes_pool(&c);
    let cgs = ConsistencyGroups::new(&pool);
    let mut cleanup = Cleanup::new(&pool);
    let gid = unique("cgw");
    cleanup.groups.push(gid.clone());
    let members: Vec<String> = [8, 12, 16]
        .iter()
        .enumerate()
        .map(|(i, &m)| volume(&pool, &mut cleanup, "cgw", m * MIB, 10 + i as u64))
        .collect();
    cgs.create(&gid, &GroupSpec::new("w", &["ssd"])).unwrap();
    let ids: Vec<&str> = members.iter().map(String::as_str).collect();
    cgs.add_volumes(&gid, &ids).unwrap();

    // The writer: its own connection; sequence number k to member 0, 1, 2, then k+1 ...
    let writer_conn = common::cluster_as(&common::client_id());
    let wpool = Pool::open(&writer_conn, POOL).unwrap();
    let handles: Vec<Image> = members.iter().map(|m| Image::open(&wpool, &volume_name(m)).unwrap()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, seq) = (stop.clone(), seq.clone());
        std::thread::spawn(move || {
            let mut k = 0u64;
            while !stop.load(Ordering::SeqCst) {
                k += 1;
                for h in &handles {
                    h.write(0, &k.to_le_bytes()).unwrap();
                }
                seq.store(k, Ordering::SeqCst);
            }
            k
        })
    };
    while seq.load(Ordering::SeqCst) < 20 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let snap_id = unique("cgsnap");
    let s = cgs.create_snapshot(&gid, &snap_id, "under-load", "").unwrap();
    let at_snap = seq.load(Ordering::SeqCst);
    while seq.load(Ordering::SeqCst) < at_snap + 20 {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    let last = writer.join().unwrap();

    // Read each member at the group snapshot: a barrier prefix.
    let mut values = Vec::new();
    let mut digests = BTreeMap::new();
    for m in &s.members {
        let img = Image::open_at_snap_id(&pool, &m.image, m.snap_id).unwrap();
        let v = u64::from_le_bytes(img.read_vec(0, 8).unwrap().try_into().unwrap());
        values.push(v);
        digests.insert(m.volume_id.clone(), (sha_image(&img), img.size().unwrap()));
    }
    // Members are reported sorted by volume id; the writer's order is `members`.
    let order: Vec<u64> =
        members.iter().map(|id| values[s.members.iter().position(|m| &m.volume_id == id).unwrap()]).collect();
    eprintln!("values at the group snapshot (writer order): {order:?}; writer reached {last}");
    assert!(order[2] >= 20, "taken after the writer started: {order:?}");
    assert!(order.windows(2).all(|w| w[0] >= w[1]), "non-increasing across member order: {order:?}");
    assert!(order[0] - order[2] <= 1, "differ by at most one: {order:?}");
    assert!(last > order[0], "the writer kept going after the snapshot");

    // Heads moved on; volumes made from the snapshot have the snapshot's content.
    let heads: Vec<u64> = members
        .iter()
        .map(|m| {
            let img = Image::open_read_only(&pool, &volume_name(m)).unwrap();
            u64::from_le_bytes(img.read_vec(0, 8).unwrap().try_into().unwrap())
        })
        .collect();
    assert!(heads.iter().all(|&h| h == last), "{heads:?}");
    let prefix = unique("r");
    let mut calls = 0u32;
    let mut cb = |done: u64, total: u64| {
        assert!(done <= total);
        calls += 1;
        std::ops::ControlFlow::Continue(())
    };
    let restored = cgs.restore(&gid, &snap_id, &RestoreSpec::prefix(&prefix), &mut Progress::new(&mut cb)).unwrap();
    cleanup.volumes.extend(restored.volumes.iter().map(|v| v.volume_id.clone()));
    assert!(calls > 0);
    assert_eq!(restored.volumes.len(), 3);
    assert_eq!(restored.group_id, None);
    for v in &restored.volumes {
        assert_eq!(v.volume_id, format!("{prefix}-{}", v.source_volume_id));
        assert_eq!(v.image, volume_name(&v.volume_id));
        let img = Image::open_read_only(&pool, &v.image).unwrap();
        let (want, size) = &digests[&v.source_volume_id];
        assert_eq!((img.size().unwrap(), v.size), (*size, *size));
        assert_eq!(&sha_image(&img), want, "{} matches {}@group snapshot", v.image, v.source_volume_id);
        assert_eq!(img.parent().unwrap(), None, "an independent copy");
        assert!(v.bytes_written < *size, "holes stayed holes ({} of {size} written)", v.bytes_written);
        assert_eq!(provenance::Marker::read(&img).unwrap(), None, "marker cleared");
    }
    // The snapshot can be deleted afterwards: the restored volumes do not depend on it.
    cgs.delete(&gid, true).unwrap();
    for v in &restored.volumes {
        assert!(Image::open_read_only(&pool, &v.image).is_ok());
    }
}

#[test]
fn restore_into_a_new_group_with_explicit_names_and_refusals() {
    let c = live!();
    let _g = lock();
    let pool = volumes_pool(&c);
    let cgs = ConsistencyGroups::new(&pool);
    let mut cleanup = Cleanup::new(&pool);
    let (gid, gid2) = (unique("cgr"), unique("cgr2"));
    cleanup.groups.extend([gid.clone(), gid2.clone()]);
    let a = volume(&pool, &mut cleanup, "cgra", 4 * MIB, 21);
    // Member b is a clone: its restored copy must include the parent's data.
    let b = unique("cgrb");
    cleanup.volumes.push(b.clone());
    let parent = volume(&pool, &mut cleanup, "cgrp", 4 * MIB, 22);
    Image::open(&pool, &volume_name(&parent)).unwrap().snap_create("base").unwrap();
    let mut copts = ImageOptions::new();
    copts.clone_format(rbd_core::CloneFormat::V2);
    rbd_core::clone_image(&pool, &volume_name(&parent), "base", &pool, &volume_name(&b), &copts).unwrap();
    Image::open(&pool, &volume_name(&b)).unwrap().write(MIB, &pattern(23, 4096)).unwrap();
    cgs.create(&gid, &GroupSpec::new("src", &["t"])).unwrap();
    cgs.add_volumes(&gid, &[&a, &b]).unwrap();
    let snap_id = unique("cgsnap");
    cgs.create_snapshot(&gid, &snap_id, "", "").unwrap();
    let (na, nb) = (unique("cgna"), unique("cgnb"));
    cleanup.volumes.extend([na.clone(), nb.clone()]);

    let before = state(&pool, &cleanup.volumes, &cleanup.groups);
    // Names must cover every member; targets and the new group must not exist.
    let partial = RestoreSpec { names: RestoreNames::Map(BTreeMap::from([(a.clone(), na.clone())])), new_group: None };
    let e = cgs.restore(&gid, &snap_id, &partial, &mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let clash = RestoreSpec {
        names: RestoreNames::Map(BTreeMap::from([(a.clone(), na.clone()), (b.clone(), a.clone())])),
        new_group: None,
    };
    assert_eq!(cgs.restore(&gid, &snap_id, &clash, &mut Progress::none()).unwrap_err().kind(), ErrorKind::Exists);
    let into_existing = RestoreSpec::prefix("x").into_group(&gid, GroupSpec::new("n", &["t"]));
    assert_eq!(
        cgs.restore(&gid, &snap_id, &into_existing, &mut Progress::none()).unwrap_err().kind(),
        ErrorKind::Exists
    );
    assert_eq!(
        cgs.restore(&gid, "missing", &RestoreSpec::prefix("x"), &mut Progress::none()).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(state(&pool, &cleanup.volumes, &cleanup.groups), before, "refusals change nothing");

    let spec = RestoreSpec {
        names: RestoreNames::Map(BTreeMap::from([(a.clone(), na.clone()), (b.clone(), nb.clone())])),
        new_group: None,
    }
    .into_group(&gid2, GroupSpec::new("copy", &["t"]));
    let r = cgs.restore(&gid, &snap_id, &spec, &mut Progress::none()).unwrap();
    assert_eq!(r.group_id.as_deref(), Some(gid2.as_str()));
    let g2 = cgs.get(&gid2).unwrap();
    let mut want = vec![na.clone(), nb.clone()];
    want.sort();
    assert_eq!(g2.volumes, want);
    assert_eq!(g2.name, "copy");
    for (src, new) in [(&a, &na), (&b, &nb)] {
        let s = Image::open_read_only(&pool, &volume_name(src)).unwrap();
        let n = Image::open_read_only(&pool, &volume_name(new)).unwrap();
        assert_eq!(sha_image(&s), sha_image(&n), "no writes since the snapshot: heads match");
        assert_eq!(n.parent().unwrap(), None, "{new} is independent");
    }
}

/// Runs `f` with failpoint `name` armed; it must fail at that step.
fn fail_at<T: std::fmt::Debug>(name: &str, f: impl FnOnce() -> rbd_core::Result<T>) {
    failpoint::set(name, Action::Error);
    let r = f();
    failpoint::clear(name);
    let e = r.expect_err(name);
    assert!(e.to_string().contains(&format!("injected failure at {name}")), "{name}: {e}");
}

#[test]
fn every_step_boundary_undoes() {
    let c = live!();
    let _g = lock();
    let pool = volumes_pool(&c);
    let cgs = ConsistencyGroups::new(&pool);
    let mut cleanup = Cleanup::new(&pool);
    let gid = unique("cgf");
    let gnew = unique("cgfn");
    cleanup.groups.extend([gid.clone(), gnew.clone()]);
    let a = volume(&pool, &mut cleanup, "cgfa", 4 * MIB, 31);
    let b = volume(&pool, &mut cleanup, "cgfb", 4 * MIB, 32);
    let prefix = unique("cgfr");
    cleanup.volumes.extend([format!("{prefix}-{a}"), format!("{prefix}-{b}")]);
    let snap_id = unique("cgfs");
    let spec = GroupSpec::new("f", &["t"]);

    // create
    let before = state(&pool, &cleanup.volumes, &cleanup.groups);
    for step in CREATE_STEPS.iter().chain(&["commit"]) {
        fail_at(&format!("groups.create.{step}"), || cgs.create(&gid, &spec));
        assert_eq!(state(&pool, &cleanup.volumes, &cleanup.groups), before, "groups.create.{step}");
    }
    cgs.create(&gid, &spec).unwrap();

    // add
    let before = state(&pool, &cleanup.volumes, &cleanup.groups);
    for step in ADD_STEPS.iter().chain(&["commit"]) {
        fail_at(&format!("groups.add.{step}"), || cgs.add_volumes(&gid, &[&a, &b]));
        assert_eq!(state(&pool, &cleanup.volumes, &cleanup.groups), before, "groups.add.{step}");
    }
    cgs.add_volumes(&gid, &[&a, &b]).unwrap();

    // remove
    let before = state(&pool, &cleanup.volumes, &cleanup.groups);
    for step in REMOVE_STEPS.iter().chain(&["commit"]) {
        fail_at(&format!("groups.remove.{step}"), || cgs.remove_volumes(&gid, &[&a, &b]));
        assert_eq!(state(&pool, &cleanup.volumes, &cleanup.groups), before, "groups.remove.{step}");
    }

    // snapshot
    for step in SNAPSHOT_STEPS.iter().chain(&["commit"]) {
        fail_at(&format!("groups.snapshot.{step}"), || cgs.create_snapshot(&gid, &snap_id, "n", "d"));
        assert_eq!(state(&pool, &cleanup.volumes, &cleanup.groups), before, "groups.snapshot.{step}");
    }
    cgs.create_snapshot(&gid, &snap_id, "n", "d").unwrap();

    // restore (into a new group, so every step runs)
    let before = state(&pool, &cleanup.volumes, &cleanup.groups);
    let rspec = RestoreSpec::prefix(&prefix).into_group(&gnew, spec.clone());
    for step in RESTORE_STEPS.iter().chain(&["commit"]) {
        fail_at(&format!("groups.restore.{step}"), || cgs.restore(&gid, &snap_id, &rspec, &mut Progress::none()));
        assert_eq!(state(&pool, &cleanup.volumes, &cleanup.groups), before, "groups.restore.{step}");
    }
    // A cancelled restore undoes like a failed one.
    let token = rbd_core::CancelToken::new();
    token.cancel();
    let e = cgs.restore(&gid, &snap_id, &rspec, &mut Progress::none().with_cancel(token)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    assert_eq!(state(&pool, &cleanup.volumes, &cleanup.groups), before, "cancelled restore");

    // delete snapshot: the removal is the last step, so every boundary leaves it intact; past
    // the commit point it stays deleted (metadata entry included)
    for step in DELETE_SNAPSHOT_STEPS {
        fail_at(&format!("groups.delete_snapshot.{step}"), || cgs.delete_snapshot(&gid, &snap_id));
        assert_eq!(state(&pool, &cleanup.volumes, &cleanup.groups), before, "groups.delete_snapshot.{step}");
    }
    fail_at("groups.delete_snapshot.commit", || cgs.delete_snapshot(&gid, &snap_id));
    assert!(cgs.snapshots(&gid).unwrap().is_empty());
    let meta: serde_json::Value =
        serde_json::from_slice(&pool.object_read_full(&format!("{META_PREFIX}{gid}")).unwrap()).unwrap();
    assert_eq!(meta["snapshots"], serde_json::json!({}), "no stale entry");
    cgs.create_snapshot(&gid, &snap_id, "n", "d").unwrap();
    let before = state(&pool, &cleanup.volumes, &cleanup.groups);

    // delete: before the irreversible step nothing changes; after it the group is intact but
    // without its snapshots, and a retry completes.
    for step in &DELETE_STEPS[..2] {
        fail_at(&format!("groups.delete.{step}"), || cgs.delete(&gid, true));
        assert_eq!(state(&pool, &cleanup.volumes, &cleanup.groups), before, "groups.delete.{step}");
    }
    let (members, _, meta) = before.groups[&gid].clone();
    for step in &DELETE_STEPS[2..] {
        fail_at(&format!("groups.delete.{step}"), || cgs.delete(&gid, true));
        let after = state(&pool, &cleanup.volumes, &cleanup.groups);
        assert_eq!(after.groups[&gid], (members.clone(), vec![], meta.clone()), "groups.delete.{step}");
    }
    fail_at("groups.delete.commit", || cgs.delete(&gid, true));
    assert!(state(&pool, &cleanup.volumes, &cleanup.groups).groups.is_empty(), "deleted before the commit point");
    assert_eq!(cgs.delete(&gid, true).unwrap_err().kind(), ErrorKind::NotFound);
}
