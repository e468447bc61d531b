//! `reconcile` against the live clusters: recipes killed (SIGKILL, no undo) at every step
//! boundary in a child process (`examples/recipe_runner.rs` with
//! `RBD_CORE_FAILPOINTS=<recipe>.<step>=kill`), then a dry run that must list exactly what the
//! apply removes, an apply, and checks that no orphan is left and nothing live was touched.
//! Hand-made orphans next to live look-alikes, young artifacts, and a dead flatten-slot holder.
//!
//! Volumes, images and instance disks are on the shared cluster (`CEPH_CONF`); backups go to
//! pool `backups` on the second cluster (`RBD_TEST_CEPH_CONF2`). Every test names what it
//! creates with its own random token and reconciles only names containing it, so tests running
//! in parallel (here or in other test files) are never touched.
mod common;
use common::RunnerOutcome as Outcome;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{pattern, purge_image};
use rbd_core::recipes::backup::{self, backup_image_name, meta_object_name, Backup, VolumeRef, CREATE_STEPS};
use rbd_core::recipes::cinder::{self, DeleteVolume, VolumeFromVolume, JOURNAL_KEY_PREFIX};
use rbd_core::recipes::glance::GlanceStore;
use rbd_core::recipes::nova::{self, SNAPSHOT_STEPS};
use rbd_core::recipes::provenance::Marker;
use rbd_core::recipes::reconcile::{Action, FindingKind, Reconcile, ReconcileReport};
use rbd_core::recipes::throttle::Throttle;
use rbd_core::{CloneFormat, Cluster, Image, ImageOptions, Pool, Progress, SnapNamespace};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Fixtures.

/// An instance uuid ending in the token (so `<uuid>_disk` passes the test's filter).
fn instance_uuid(tok: &str) -> String {
    let h = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}-4{}-8{}-{tok}", &h[..8], &h[8..12], &h[13..16], &h[17..20])
}

/// A uuid4 in hex, as Nova names its temporary snapshots.
fn uuid4_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn pool(c: &Cluster, name: &str) -> Pool {
    Pool::open(c, name).unwrap()
}

/// Runs one recipe in a child process, crashing it at `kill_at` (`<recipe>.<step>`).
fn run_recipe(args: &[&str], kill_at: Option<&str>) -> Outcome {
    match kill_at {
        Some(fp) => common::run_runner(args, &[("RBD_CORE_FAILPOINTS", &format!("{fp}=kill"))]),
        None => common::run_runner(args, &[]),
    }
}

/// A reconcile restricted to names containing `tok`.
fn reconcile(pools: &[&Pool], target: Option<&Pool>, tok: &str, min_age: Duration, dry: bool) -> ReconcileReport {
    let t = tok.to_string();
    Reconcile::new(pools)
        .backup_target(target)
        .min_age(min_age)
        .dry_run(dry)
        .filter(move |n| n.contains(&t))
        .run()
        .expect("reconcile")
}

type Row = (FindingKind, String, String, Option<String>, String);

fn rows(r: &ReconcileReport) -> Vec<Row> {
    r.findings.iter().map(|f| (f.kind, f.pool.clone(), f.image.clone(), f.snap.clone(), f.reason.clone())).collect()
}

/// `kind pool/image[@snap]` of each finding, in order.
fn specs(r: &ReconcileReport) -> Vec<(FindingKind, String)> {
    r.findings.iter().map(|f| (f.kind, f.spec())).collect()
}

/// Dry run, apply, dry run again: the apply removes exactly (and in the same order) what the
/// dry run listed, every removal succeeds, and nothing is left.
fn dry_then_apply(pools: &[&Pool], target: Option<&Pool>, tok: &str, min_age: Duration) -> ReconcileReport {
    let dry = reconcile(pools, target, tok, min_age, true);
    assert!(dry.dry_run);
    assert!(dry.findings.iter().all(|f| f.action == Action::Planned), "{dry:#?}");
    let applied = reconcile(pools, target, tok, min_age, false);
    assert_eq!(rows(&dry), rows(&applied), "a dry run lists exactly what an apply removes, in the same order");
    for f in &applied.findings {
        assert_eq!(f.action, Action::Removed, "{f:#?}");
    }
    let again = reconcile(pools, target, tok, min_age, true);
    assert!(again.findings.is_empty(), "orphans left after an apply: {:#?}", again.findings);
    applied
}

fn user_snaps(p: &Pool, image: &str) -> Vec<String> {
    Image::open_read_only(p, image)
        .unwrap()
        .snapshots()
        .unwrap()
        .into_iter()
        .filter(|s| s.namespace == SnapNamespace::User)
        .map(|s| s.name)
        .collect()
}

fn sha(img: &Image, len: u64) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(img.read_vec(0, len as usize).unwrap());
    h.finalize().to_vec()
}

/// Creates `pool/name` with `MIB` bytes of pattern data at the start.
fn image_with_data(p: &Pool, name: &str, size: u64, seed: u64) {
    p.create_image(name, size, &ImageOptions::new()).unwrap();
    Image::open(p, name).unwrap().write(0, &pattern(seed, MIB as usize)).unwrap();
}

/// Removes, on drop, every image of the listed pools whose name contains the token
/// (children first), the token's journal entries, and the token's backup metadata objects.
struct Cleanup {
    pools: Vec<Pool>,
    tok: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for _round in 0..4 {
            for p in &self.pools {
                let names: Vec<String> = p.image_names().unwrap_or_default();
                // Children before parents: clones have a parent, so try those first.
                let mut ours: Vec<String> = names.into_iter().filter(|n| n.contains(&self.tok)).collect();
                ours.sort_by_key(|n| {
                    Image::open_read_only(p, n).ok().and_then(|i| i.parent().ok().flatten()).is_none()
                });
                for n in ours {
                    purge_image(p, &n);
                }
            }
        }
        for p in &self.pools {
            for (k, _) in p.pool_metadata_list().unwrap_or_default() {
                if k.starts_with(JOURNAL_KEY_PREFIX) && k.contains(&self.tok) {
                    let _ = p.pool_metadata_remove(&k);
                }
            }
            if p.name() == "backups" {
                for o in p.object_list().unwrap_or_default() {
                    if o.starts_with("backup.") && o.ends_with(".meta") && o.contains(&self.tok) {
                        let _ = p.object_remove(&o);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kill sweeps.

#[test]
fn nova_snapshot_killed_at_each_step_is_reconciled() {
    let c = live!();
    let (images, vms) = (pool(&c, "images"), pool(&c, "vms"));
    let tok = common::token();
    let _cleanup = Cleanup { pools: vec![images.clone(), vms.clone()], tok: tok.clone() };
    for (i, step) in SNAPSHOT_STEPS.iter().copied().chain(["commit"]).enumerate() {
        let disk = format!("{}_disk", instance_uuid(&tok));
        image_with_data(&vms, &disk, 8 * MIB, i as u64);
        let want = sha(&Image::open_read_only(&vms, &disk).unwrap(), MIB);
        let new_image = format!("rcn-{tok}-vmsnap{i}");
        let out =
            run_recipe(&["nova.snapshot", "vms", &disk, "images", &new_image], Some(&format!("nova.snapshot.{step}")));
        assert_eq!(out, Outcome::Killed, "nova.snapshot.{step}");
        let temp: Vec<String> = user_snaps(&vms, &disk);

        let applied = dry_then_apply(&[&images, &vms], None, &tok, Duration::ZERO);
        let disk_spec = |s: &str| format!("vms/{disk}@{s}");
        let img_spec = format!("images/{new_image}");
        let expected: Vec<(FindingKind, String)> = match step {
            // Nothing made yet; a finished snapshot.
            "create_temp_snap" | "commit" => vec![],
            // Killed before the clone: the temporary snapshot (and, from mark_disk on, an intent
            // marker on the disk that names the clone-to-be and so proves nothing about the disk).
            "protect_temp_snap" | "mark_disk" | "clone" => vec![(FindingKind::NovaTempSnapshot, disk_spec(&temp[0]))],
            // The clone is born carrying the intent marker (librbd copies image metadata into
            // clones), so even a kill right after the clone leaves a provable half-made image.
            // Before the flatten it is still the temporary snapshot's child, so it goes first;
            // after it the two are independent (images is scanned first).
            "mark" | "flatten" | "remove_temp_snap" => vec![
                (FindingKind::HalfMadeImage, img_spec.clone()),
                (FindingKind::NovaTempSnapshot, disk_spec(&temp[0])),
            ],
            _ => vec![(FindingKind::HalfMadeImage, img_spec.clone())],
        };
        assert_eq!(specs(&applied), expected, "nova.snapshot.{step}");

        // The instance disk is live: untouched, same data.
        assert_eq!(sha(&Image::open_read_only(&vms, &disk).unwrap(), MIB), want, "{step}");
        match step {
            "commit" => {
                // Every step ran: a finished Glance image, which is live.
                assert!(images.image_exists(&new_image).unwrap());
                assert_eq!(user_snaps(&images, &new_image), vec!["snap".to_string()]);
                assert!(user_snaps(&vms, &disk).is_empty());
                purge_image(&images, &new_image);
            }
            _ => {
                assert!(!images.image_exists(&new_image).unwrap(), "{step}: half-made image left");
            }
        }
        purge_image(&vms, &disk);
    }
}

#[test]
fn cinder_create_from_volume_killed_at_each_step_is_reconciled() {
    let c = live!();
    let volumes = pool(&c, "volumes");
    let tok = common::token();
    let _cleanup = Cleanup { pools: vec![volumes.clone()], tok: tok.clone() };
    // base@snapshot -> src (depth 1); with max_clone_depth 1 a clone of src is too deep, so the
    // recipe takes its longest path: snapshot, protect (v1), clone, depth, flatten, drop_clone_snap.
    let base = format!("{tok}-base");
    cinder::create(&volumes, &base, 8 * MIB).unwrap();
    Image::open(&volumes, &cinder::volume_name(&base)).unwrap().write(0, &pattern(7, MIB as usize)).unwrap();
    cinder::create_snapshot(&volumes, &base, &format!("{tok}-s")).unwrap();
    let src = format!("{tok}-src");
    cinder::create_from_snapshot(&volumes, &base, &format!("{tok}-s"), &src, 8 * MIB, false).unwrap();
    let src_name = cinder::volume_name(&src);
    // A live look-alike: a `.clone_snap` with its clone.
    let live = format!("{tok}-live");
    VolumeFromVolume::new(&src, &live, 8 * MIB).max_clone_depth(5).run(&volumes, &mut Progress::none()).unwrap();
    let live_snap = cinder::clone_snap_name(&cinder::volume_name(&live));
    let steps = [
        "inspect",
        "snapshot",
        "protect",
        "clone",
        "depth",
        "flatten",
        "drop_clone_snap",
        "resize",
        "describe",
        "commit",
    ];
    for (i, step) in steps.into_iter().enumerate() {
        let dst = format!("{tok}-d{i}");
        let dst_name = cinder::volume_name(&dst);
        let csnap = cinder::clone_snap_name(&dst_name);
        let out = run_recipe(
            &["cinder.create_from_volume", "volumes", &src, &dst, &(8 * MIB).to_string(), "1", "1"],
            Some(&format!("cinder.create_from_volume.{step}")),
        );
        assert_eq!(out, Outcome::Killed, "cinder.create_from_volume.{step}");
        let applied = dry_then_apply(&[&volumes], None, &tok, Duration::ZERO);
        let expected = match step {
            "protect" | "clone" | "drop_clone_snap" => {
                vec![(FindingKind::CloneSnapshot, format!("volumes/{src_name}@{csnap}"))]
            }
            _ => vec![],
        };
        assert_eq!(specs(&applied), expected, "cinder.create_from_volume.{step}");
        let snaps = user_snaps(&volumes, &src_name);
        assert!(snaps.contains(&live_snap), "{step}: the live clone snapshot was removed");
        match step {
            // The new volume exists (a clone of the clone snapshot, or flattened): it looks like
            // any finished volume, so it stays; a delete cleans the parent snapshot.
            "depth" | "flatten" => {
                assert!(snaps.contains(&csnap), "{step}: a clone snapshot with a child was removed");
                cinder::delete_volume(&volumes, &dst).unwrap();
            }
            "resize" | "describe" | "commit" => {
                assert!(!snaps.contains(&csnap));
                cinder::delete_volume(&volumes, &dst).unwrap();
            }
            _ => {
                assert!(!snaps.contains(&csnap), "{step}: orphan clone snapshot left");
                assert!(!volumes.image_exists(&dst_name).unwrap() || step == "drop_clone_snap");
                if step == "drop_clone_snap" {
                    cinder::delete_volume(&volumes, &dst).unwrap();
                }
            }
        }
    }
    // Live resources survived every reconcile.
    assert!(volumes.image_exists(&cinder::volume_name(&live)).unwrap());
    assert_eq!(
        Image::open_read_only(&volumes, &cinder::volume_name(&live)).unwrap().parent().unwrap().map(|p| p.snap),
        Some(live_snap)
    );
    assert!(user_snaps(&volumes, &cinder::volume_name(&base)).contains(&format!("snapshot-{tok}-s")));
}

#[test]
fn backup_create_killed_at_each_step_is_reconciled() {
    let c = live!();
    let c2 = common::cluster2();
    assert_ne!(c.fsid().unwrap(), c2.fsid().unwrap(), "CEPH_CONF and RBD_TEST_CEPH_CONF2 must be two clusters");
    let volumes = pool(&c, "volumes");
    let backups = pool(&c2, "backups");
    let tok = common::token();
    let _cleanup = Cleanup { pools: vec![volumes.clone(), backups.clone()], tok: tok.clone() };
    let vid = format!("{tok}-v");
    let vname = cinder::volume_name(&vid);
    image_with_data(&volumes, &vname, 8 * MIB, 3);
    // A live backup: its source snapshot has a counterpart.
    let b0 = format!("{tok}-b0");
    let vol = VolumeRef::cinder(&volumes, &vid);
    let full = Backup::new(&vol, &backups, &b0).run(&mut Progress::none()).unwrap();

    // Without a backup target nothing about backups is decided, and the report says so.
    let no_target = reconcile(&[&volumes], None, &tok, Duration::ZERO, true);
    assert!(no_target.findings.is_empty(), "{no_target:#?}");
    assert!(no_target.notes.iter().any(|n| n.contains("not checked")), "{:?}", no_target.notes);

    for (incremental, tag) in [(false, "f"), (true, "i")] {
        for (i, step) in CREATE_STEPS.iter().copied().chain(["commit"]).enumerate() {
            let bid = format!("{tok}-{tag}{i}");
            let mut args = vec!["backup.create", "volumes", vid.as_str(), "backups", bid.as_str()];
            if incremental {
                args.push(&b0);
            }
            let out = run_recipe(&args, Some(&format!("backup.create.{step}")));
            let on_path = if incremental { step != "create_image" } else { step != "rewind" };
            if on_path {
                assert_eq!(out, Outcome::Killed, "backup.create.{step} ({tag})");
            } else {
                assert_eq!(out, Outcome::Ok, "backup.create.{step} is not on the {tag} path");
            }
            let src_snap =
                user_snaps(&volumes, &vname).into_iter().find(|s| s.starts_with(&format!("backup.{bid}.snap.")));
            let applied = dry_then_apply(&[&volumes], Some(&backups), &tok, Duration::ZERO);
            let bimage = backup_image_name(&vid, &bid);
            let mut expected = Vec::new();
            if step == "transfer" {
                let s = src_snap.clone().expect("the source snapshot was taken before the transfer");
                expected.push((FindingKind::BackupSourceSnapshot, format!("volumes/{vname}@{s}")));
            }
            if !incremental && (step == "snapshot" || step == "transfer") {
                expected.push((FindingKind::HalfMadeBackupImage, format!("backups/{bimage}")));
            }
            assert_eq!(specs(&applied), expected, "backup.create.{step} ({tag})");
            // What stays is a complete backup (or nothing).
            let listed = backup::list_backups(&backups, &vid).unwrap();
            let complete = listed.iter().any(|b| b.backup_id == bid);
            let expect_complete = !on_path || matches!(step, "metadata" | "commit");
            assert_eq!(complete, expect_complete, "backup.create.{step} ({tag}): {listed:?}");
            let src_left =
                user_snaps(&volumes, &vname).into_iter().any(|s| s.starts_with(&format!("backup.{bid}.snap.")));
            assert_eq!(src_left, expect_complete, "{step} ({tag})");
            if !incremental && !expect_complete {
                assert!(!backups.image_exists(&bimage).unwrap(), "{step}: half-made backup image left");
            }
            // The metadata object exists exactly for finished backups (it is the last step).
            let meta = backups.object_stat(&meta_object_name(&bid)).is_ok();
            assert_eq!(meta, expect_complete && step != "metadata", "{step} ({tag})");
        }
    }
    // The first backup is intact on both sides.
    assert!(user_snaps(&volumes, &vname).contains(&full.snap));
    assert!(user_snaps(&backups, &full.image).contains(&full.snap));
    assert!(backup::verify(&backups, &vid, &b0, &vol, &mut Progress::none()).unwrap().matches);
}

// ---------------------------------------------------------------------------------------------
// Hand-made orphans next to live look-alikes.

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn orphans_go_and_live_look_alikes_stay() {
    let c = live!();
    let c2 = common::cluster2();
    let (images, vms, volumes) = (pool(&c, "images"), pool(&c, "vms"), pool(&c, "volumes"));
    let backups = pool(&c2, "backups");
    let tok = common::token();
    let _cleanup =
        Cleanup { pools: vec![vms.clone(), volumes.clone(), images.clone(), backups.clone()], tok: tok.clone() };
    let none = &mut Progress::none();

    // --- Live look-alikes.
    // A Glance image (with `snap`) and an instance disk cloned from it.
    let glance_id = format!("rcn-{tok}-glance");
    let data = pattern(11, 2 * MIB as usize);
    let up = GlanceStore::new(&images).upload(&glance_id, &data[..], Some(data.len() as u64), none).unwrap();
    let uuid = instance_uuid(&tok);
    let disk = format!("{uuid}_disk");
    nova::boot_disk(&up.location, &vms, &uuid, "disk", None).unwrap();
    // On the disk, a uuid4-hex snapshot with an unmarked clone child (somebody's own clone, or
    // a VM snapshot that died between clone and mark): not provable, stays.
    let hex_with_child = uuid4_hex();
    Image::open(&vms, &disk).unwrap().snap_create(&hex_with_child).unwrap();
    let users_clone = format!("rcn-{tok}-users-clone");
    let mut v2 = ImageOptions::new();
    v2.clone_format(CloneFormat::V2);
    rbd_core::clone_image(&vms, &disk, &hex_with_child, &images, &users_clone, &v2).unwrap();
    // Volumes A -> B through `volume-B.clone_snap`, and a backup of A with its counterpart.
    let (a, b) = (format!("{tok}-a"), format!("{tok}-b"));
    cinder::create(&volumes, &a, 4 * MIB).unwrap();
    VolumeFromVolume::new(&a, &b, 4 * MIB).run(&volumes, none).unwrap();
    let a_name = cinder::volume_name(&a);
    let b_clone_snap = cinder::clone_snap_name(&cinder::volume_name(&b));
    let live_backup =
        Backup::new(&VolumeRef::cinder(&volumes, &a), &backups, &format!("{tok}-live")).run(none).unwrap();
    // A uuid4-hex snapshot on a volume (not an instance disk).
    let hex_on_volume = uuid4_hex();
    Image::open(&volumes, &a_name).unwrap().snap_create(&hex_on_volume).unwrap();
    // C.deleted with its clone D.
    let (cc, d) = (format!("{tok}-c"), format!("{tok}-d"));
    cinder::create(&volumes, &cc, 4 * MIB).unwrap();
    VolumeFromVolume::new(&cc, &d, 4 * MIB).run(&volumes, none).unwrap();
    let del = DeleteVolume::new(&cc).keep_children_as_clones(true).run(&volumes, none).unwrap();
    assert_eq!(del.outcome, cinder::DeleteOutcome::RenamedDeleted);
    let c_deleted = format!("{}.deleted", cinder::volume_name(&cc));
    // A half-made image that is in use (held open read-write below).
    let in_use = format!("rcn-{tok}-in-use");
    images.create_image(&in_use, MIB, &ImageOptions::new()).unwrap();
    let in_use_handle = Image::open(&images, &in_use).unwrap();
    Marker::new("glance.upload", &in_use, "create").apply(&in_use_handle).unwrap();

    // --- Orphans, built as crashed recipes leave them.
    // A Glance upload that died after protecting `snap`.
    let half = format!("rcn-{tok}-halfmade");
    images.create_image(&half, MIB, &ImageOptions::new()).unwrap();
    {
        let img = Image::open(&images, &half).unwrap();
        Marker::new("glance.upload", &half, "create").apply(&img).unwrap();
        img.snap_create("snap").unwrap();
        img.snap_protect("snap").unwrap();
    }
    // A VM snapshot that died after taking its temporary snapshot on another instance's disk.
    let uuid2 = instance_uuid(&tok);
    let disk2 = format!("{uuid2}_disk");
    vms.create_image(&disk2, 4 * MIB, &ImageOptions::new()).unwrap();
    let tmp = uuid4_hex();
    {
        let img = Image::open(&vms, &disk2).unwrap();
        img.snap_create(&tmp).unwrap();
        img.snap_protect(&tmp).unwrap();
    }
    // E@volume-G.clone_snap whose clone G is gone, and G's delete journal (died before the
    // parent clean-up).
    let (e, g) = (format!("{tok}-e"), format!("{tok}-g"));
    cinder::create(&volumes, &e, 4 * MIB).unwrap();
    let e_name = cinder::volume_name(&e);
    let g_name = cinder::volume_name(&g);
    let g_clone_snap = cinder::clone_snap_name(&g_name);
    let e_id = {
        let img = Image::open(&volumes, &e_name).unwrap();
        img.snap_create(&g_clone_snap).unwrap();
        img.snap_protect(&g_clone_snap).unwrap();
        img.id().unwrap()
    };
    let journal_key = format!("{JOURNAL_KEY_PREFIX}{g_name}");
    volumes
        .pool_metadata_set(
            &journal_key,
            &serde_json::json!({"pool": "volumes", "namespace": "", "image_id": e_id, "image": e_name, "snap": g_clone_snap})
                .to_string(),
        )
        .unwrap();
    // A stale journal entry whose parent snapshot is still used by another clone (B): only the
    // entry goes.
    let k_name = cinder::volume_name(&format!("{tok}-k"));
    let a_id = Image::open_read_only(&volumes, &a_name).unwrap().id().unwrap();
    let k_key = format!("{JOURNAL_KEY_PREFIX}{k_name}");
    volumes
        .pool_metadata_set(
            &k_key,
            &serde_json::json!({"pool": "volumes", "namespace": "", "image_id": a_id, "image": a_name, "snap": b_clone_snap})
                .to_string(),
        )
        .unwrap();
    // F.deleted without children, with a snapshot.
    let f_deleted = format!("{}.deleted", cinder::volume_name(&format!("{tok}-f")));
    volumes.create_image(&f_deleted, 4 * MIB, &ImageOptions::new()).unwrap();
    Image::open(&volumes, &f_deleted).unwrap().snap_create("snapshot-x").unwrap();
    // A chain H.deleted -> I.deleted (through H@volume-I.clone_snap): both go, I first.
    let (h, ii) = (format!("{tok}-h"), format!("{tok}-i"));
    cinder::create(&volumes, &h, 4 * MIB).unwrap();
    VolumeFromVolume::new(&h, &ii, 4 * MIB).run(&volumes, none).unwrap();
    let h_deleted = format!("{}.deleted", cinder::volume_name(&h));
    let i_deleted = format!("{}.deleted", cinder::volume_name(&ii));
    volumes.rename_image(&cinder::volume_name(&h), &h_deleted).unwrap();
    volumes.rename_image(&cinder::volume_name(&ii), &i_deleted).unwrap();
    // A backup of A whose backup-side snapshot is gone (an interrupted delete): the source
    // snapshot and the metadata object are left.
    let gone_bid = format!("{tok}-gone");
    let gone_snap = backup::snap_name(&gone_bid, SystemTime::now());
    Image::open(&volumes, &a_name).unwrap().snap_create(&gone_snap).unwrap();
    backups.object_write_full(&meta_object_name(&gone_bid), br#"{"version": 2}"#).unwrap();

    // --- Reconcile.
    let pools = [&images, &vms, &volumes];
    let applied = dry_then_apply(&pools, Some(&backups), &tok, Duration::ZERO);
    let got: BTreeSet<(FindingKind, String)> = specs(&applied).into_iter().collect();
    let want: BTreeSet<(FindingKind, String)> = [
        (FindingKind::HalfMadeImage, format!("images/{half}")),
        (FindingKind::NovaTempSnapshot, format!("vms/{disk2}@{tmp}")),
        (FindingKind::CloneSnapshot, format!("volumes/{e_name}@{g_clone_snap}")),
        (FindingKind::DeletedVolume, format!("volumes/{f_deleted}")),
        (FindingKind::DeletedVolume, format!("volumes/{i_deleted}")),
        (FindingKind::DeletedVolume, format!("volumes/{h_deleted}")),
        (FindingKind::BackupSourceSnapshot, format!("volumes/{a_name}@{gone_snap}")),
        (FindingKind::BackupMetadata, format!("backups/{}", meta_object_name(&gone_bid))),
        (FindingKind::DeleteJournal, format!("volumes/{g_name}")),
        (FindingKind::DeleteJournal, format!("volumes/{k_name}")),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want, "{applied:#?}");
    let pos = |k: FindingKind, spec: &str| specs(&applied).iter().position(|x| x.0 == k && x.1 == spec).unwrap();
    assert!(
        pos(FindingKind::DeletedVolume, &format!("volumes/{i_deleted}"))
            < pos(FindingKind::DeletedVolume, &format!("volumes/{h_deleted}"))
    );
    assert!(
        pos(FindingKind::CloneSnapshot, &format!("volumes/{e_name}@{g_clone_snap}"))
            < pos(FindingKind::DeleteJournal, &format!("volumes/{g_name}"))
    );
    let journal = |name: &str| applied.findings.iter().find(|f| f.image == name).unwrap().reason.clone();
    assert!(journal(&g_name).contains("removed by this run"), "{}", journal(&g_name));
    assert!(journal(&k_name).contains("still used by other clones"), "{}", journal(&k_name));
    // Near misses are reported, with the reason.
    assert!(applied.skipped.iter().any(|s| s.image == in_use && s.reason.contains("in use")), "{:#?}", applied.skipped);
    assert!(
        applied.skipped.iter().any(|s| s.image == disk && s.snap.as_deref() == Some(hex_with_child.as_str())),
        "{:#?}",
        applied.skipped
    );

    // --- Orphans are gone.
    for (p, n) in [(&images, &half), (&volumes, &f_deleted), (&volumes, &h_deleted), (&volumes, &i_deleted)] {
        assert!(!p.image_exists(n).unwrap(), "{n} left");
    }
    assert!(user_snaps(&vms, &disk2).is_empty());
    assert!(user_snaps(&volumes, &e_name).is_empty());
    assert!(!user_snaps(&volumes, &a_name).contains(&gone_snap));
    assert!(volumes.pool_metadata_get(&journal_key).is_err());
    assert!(volumes.pool_metadata_get(&k_key).is_err());
    assert!(backups.object_stat(&meta_object_name(&gone_bid)).is_err());

    // --- Live look-alikes stayed.
    assert_eq!(user_snaps(&images, &glance_id), vec!["snap".to_string()]);
    let disk_parent = Image::open_read_only(&vms, &disk).unwrap().parent().unwrap().unwrap();
    assert_eq!((disk_parent.image.as_str(), disk_parent.snap.as_str()), (glance_id.as_str(), "snap"));
    assert!(user_snaps(&vms, &disk).contains(&hex_with_child));
    assert!(images.image_exists(&users_clone).unwrap());
    let a_snaps = user_snaps(&volumes, &a_name);
    assert!(a_snaps.contains(&b_clone_snap) && a_snaps.contains(&live_backup.snap) && a_snaps.contains(&hex_on_volume));
    assert!(user_snaps(&backups, &live_backup.image).contains(&live_backup.snap));
    assert!(volumes.image_exists(&c_deleted).unwrap());
    assert_eq!(
        Image::open_read_only(&volumes, &cinder::volume_name(&d)).unwrap().parent().unwrap().map(|p| p.image),
        Some(c_deleted.clone())
    );
    assert!(images.image_exists(&in_use).unwrap());
    assert!(Marker::read(&in_use_handle).unwrap().is_some());
    drop(in_use_handle);
    // Children before parents for the cleanup.
    purge_image(&images, &users_clone);
}

#[test]
fn young_artifacts_are_left_alone() {
    let c = live!();
    let (images, volumes) = (pool(&c, "images"), pool(&c, "volumes"));
    let tok = common::token();
    let _cleanup = Cleanup { pools: vec![images.clone(), volumes.clone()], tok: tok.clone() };
    let hour = Duration::from_secs(3600);
    // A marked image whose recipe started just now (it may still be running) ...
    let young = format!("rcn-{tok}-young");
    images.create_image(&young, MIB, &ImageOptions::new()).unwrap();
    Marker::new("glance.upload", &young, "create").apply(&Image::open(&images, &young).unwrap()).unwrap();
    // ... and one whose recipe started two hours ago.
    let old = format!("rcn-{tok}-old");
    images.create_image(&old, MIB, &ImageOptions::new()).unwrap();
    let mut m = Marker::new("nova.snapshot", &old, "clone");
    m.started = unix_now() - 2 * 3600;
    m.apply(&Image::open(&images, &old).unwrap()).unwrap();
    // A childless clone snapshot taken just now, and a journal entry pointing at it.
    let v = format!("{tok}-v");
    cinder::create(&volumes, &v, MIB).unwrap();
    let v_name = cinder::volume_name(&v);
    let gone = cinder::volume_name(&format!("{tok}-gone"));
    let cs = cinder::clone_snap_name(&gone);
    let img = Image::open(&volumes, &v_name).unwrap();
    img.snap_create(&cs).unwrap();
    let key = format!("{JOURNAL_KEY_PREFIX}{gone}");
    volumes
        .pool_metadata_set(
            &key,
            &serde_json::json!({"pool": "volumes", "namespace": "", "image_id": img.id().unwrap(), "image": v_name, "snap": cs})
                .to_string(),
        )
        .unwrap();
    drop(img);

    let applied = dry_then_apply(&[&images, &volumes], None, &tok, hour);
    assert_eq!(specs(&applied), vec![(FindingKind::HalfMadeImage, format!("images/{old}"))]);
    assert!(applied.findings[0].age.unwrap() >= 2 * hour - Duration::from_secs(60));
    assert!(!images.image_exists(&old).unwrap());
    assert!(images.image_exists(&young).unwrap());
    assert!(user_snaps(&volumes, &v_name).contains(&cs));
    assert!(volumes.pool_metadata_get(&key).is_ok());
    let skipped: Vec<(FindingKind, String)> = applied.skipped.iter().map(|s| (s.kind, s.image.clone())).collect();
    assert!(skipped.contains(&(FindingKind::HalfMadeImage, young.clone())), "{skipped:?}");
    assert!(skipped.contains(&(FindingKind::CloneSnapshot, v_name.clone())), "{skipped:?}");
    assert!(skipped.contains(&(FindingKind::DeleteJournal, gone.clone())), "{skipped:?}");
    // With min_age 0 they are orphans.
    let applied = dry_then_apply(&[&images, &volumes], None, &tok, Duration::ZERO);
    let got: BTreeSet<(FindingKind, String)> = specs(&applied).into_iter().collect();
    let want: BTreeSet<(FindingKind, String)> = [
        (FindingKind::HalfMadeImage, format!("images/{young}")),
        (FindingKind::CloneSnapshot, format!("volumes/{v_name}@{cs}")),
        (FindingKind::DeleteJournal, format!("volumes/{gone}")),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
}

#[test]
fn delete_killed_before_parent_clean_up_is_finished() {
    let c = live!();
    let volumes = pool(&c, "volumes");
    let tok = common::token();
    let _cleanup = Cleanup { pools: vec![volumes.clone()], tok: tok.clone() };
    // P -> Q (P@volume-Q.clone_snap); delete P keeping Q as a clone (P.deleted); then Q's delete
    // dies after removing Q, before cleaning P.deleted.
    let (p, q) = (format!("{tok}-p"), format!("{tok}-q"));
    cinder::create(&volumes, &p, 4 * MIB).unwrap();
    VolumeFromVolume::new(&p, &q, 4 * MIB).run(&volumes, &mut Progress::none()).unwrap();
    DeleteVolume::new(&p).keep_children_as_clones(true).run(&volumes, &mut Progress::none()).unwrap();
    let out = run_recipe(&["cinder.delete_volume", "volumes", &q], Some("cinder.delete_volume.parent_refs"));
    assert_eq!(out, Outcome::Killed);
    let q_name = cinder::volume_name(&q);
    let p_deleted = format!("{}.deleted", cinder::volume_name(&p));
    assert!(!volumes.image_exists(&q_name).unwrap());
    assert!(volumes.image_exists(&p_deleted).unwrap());
    let applied = dry_then_apply(&[&volumes], None, &tok, Duration::ZERO);
    assert_eq!(
        specs(&applied),
        vec![
            (FindingKind::DeletedVolume, format!("volumes/{p_deleted}")),
            (FindingKind::DeleteJournal, format!("volumes/{q_name}")),
        ]
    );
    assert!(!volumes.image_exists(&p_deleted).unwrap());
    assert!(volumes.pool_metadata_get(&format!("{JOURNAL_KEY_PREFIX}{q_name}")).is_err());
}

#[test]
fn glance_upload_killed_at_each_step_is_reconciled() {
    let c = live!();
    let images = pool(&c, "images");
    let tok = common::token();
    let _cleanup = Cleanup { pools: vec![images.clone()], tok: tok.clone() };
    for (i, step) in rbd_core::recipes::glance::UPLOAD_STEPS.iter().copied().chain(["commit"]).enumerate() {
        let id = format!("rcn-{tok}-up{i}");
        let out = run_recipe(
            &["glance.upload", "images", &id, &(3 * MIB).to_string()],
            Some(&format!("glance.upload.{step}")),
        );
        assert_eq!(out, Outcome::Killed, "glance.upload.{step}");
        let applied = dry_then_apply(&[&images], None, &tok, Duration::ZERO);
        let expected = match step {
            // Nothing yet, or an image not yet marked (not provable: it stays), or a finished one.
            "create" | "mark" | "commit" => vec![],
            _ => vec![(FindingKind::HalfMadeImage, format!("images/{id}"))],
        };
        assert_eq!(specs(&applied), expected, "glance.upload.{step}");
        let exists = images.image_exists(&id).unwrap();
        assert_eq!(exists, matches!(step, "mark" | "commit"), "{step}");
        if exists {
            purge_image(&images, &id);
        }
    }
}

#[test]
fn stale_slot_lock_is_broken_and_live_slot_kept() {
    let c = live!();
    let rbd = pool(&c, "rbd");
    let tok = common::token();
    let prefix = format!("rcn-{tok}-slot");
    let mut t = Throttle::new(&rbd, 2).unwrap();
    t.prefix(&prefix);
    let _cleanup = Cleanup { pools: vec![rbd.clone()], tok: tok.clone() };
    // A holder in another process takes a slot and dies.
    let mut child = Command::new(common::runner_bin())
        .args(["throttle.hold", "rbd", &prefix, "2"])
        .env("RBD_TEST_CLIENT_ID", common::client_id())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    while line.is_empty() || line.starts_with("ADDR ") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "runner exited before holding a slot");
    }
    let dead_slot: usize =
        line.trim().strip_prefix("HOLDING ").unwrap_or_else(|| panic!("runner said {line:?}")).parse().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // This process holds the other slot: live.
    let live = t.acquire(Some(Duration::from_secs(30))).unwrap();
    assert_ne!(live.slot(), dead_slot);
    let dead_image = t.slot_image(dead_slot);
    // The dead holder's heartbeat goes stale after the lease.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let dry = loop {
        let r = reconcile(&[&rbd], None, &tok, Duration::ZERO, true);
        if !r.findings.is_empty() || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(specs(&dry), vec![(FindingKind::StaleSlotLock, format!("rbd/{dead_image}"))], "{dry:#?}");
    let applied = dry_then_apply(&[&rbd], None, &tok, Duration::ZERO);
    assert_eq!(specs(&applied), specs(&dry));
    let slots = t.slots().unwrap();
    assert_eq!(slots[dead_slot].owner, None, "{slots:?}");
    assert!(slots[live.slot()].owner.is_some(), "the live slot was broken: {slots:?}");
    assert!(!live.is_lost());
    // The freed slot can be taken at once.
    let again = t.try_acquire().unwrap().expect("the broken slot is free");
    assert_eq!(again.slot(), dead_slot);
    drop(again);
    drop(live);
    t.remove_slots().unwrap();
}
