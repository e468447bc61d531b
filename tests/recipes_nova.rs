//! Nova recipes against the live cluster: is_cloneable, boot from image (end state, bad sizes,
//! undo), the direct VM snapshot (end state and undo at every step boundary), instance disk
//! deletion (prefix match, `nova-resize`, busy retries), and the resize snapshot.
mod common;

use std::io::Cursor;
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use common::{pattern, purge_image, unique};
use rbd_core::recipes::failpoint::{self, Action};
use rbd_core::recipes::glance::{GlanceStore, SNAP_NAME};
use rbd_core::recipes::location::Location;
use rbd_core::recipes::nova::{
    self, BootDisk, Cloneability, DiskOutcome, InstanceSnapshot, NotCloneable, RetryPolicy, BOOT_STEPS, RESIZE_SNAP,
    SNAPSHOT_STEPS,
};
use rbd_core::recipes::provenance;
use rbd_core::{Cluster, ErrorKind, Image, ImageOptions, Pool, Progress};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

/// Tests that run the boot or snapshot recipes hold this: failpoints are process-global.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

struct Cleanup(Vec<(Pool, String)>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (pool, name) in self.0.iter().rev() {
            purge_image(pool, name);
        }
    }
}

fn sha(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A Glance image holding `data`, uploaded with the Glance recipe.
fn glance_image(c: &Cluster, tag: &str, data: &[u8]) -> Location {
    let pool = Pool::open(c, "images").unwrap();
    let id = unique(tag);
    GlanceStore::new(&pool).upload(&id, Cursor::new(data), None, &mut Progress::none()).unwrap().location
}

fn read_all(img: &Image) -> Vec<u8> {
    let size = img.size().unwrap();
    img.read_vec(0, size as usize).unwrap()
}

fn snap_names(pool: &Pool, image: &str) -> Vec<String> {
    let mut v: Vec<String> =
        Image::open(pool, image).unwrap().snapshots().unwrap().into_iter().map(|s| s.name).collect();
    v.sort();
    v
}

#[test]
fn is_cloneable_checks_url_cluster_format_and_snapshot() {
    let c = live!();
    let images = Pool::open(&c, "images").unwrap();
    let loc = glance_image(&c, "n-cloneable", &pattern(1, MIB as usize));
    let _cleanup = Cleanup(vec![(images.clone(), loc.image.clone())]);
    let url = loc.to_string();
    assert_eq!(nova::is_cloneable(&c, &url, "raw").unwrap(), Cloneability::Cloneable(loc.clone()));
    let no = |u: &str, f: &str| match nova::is_cloneable(&c, u, f).unwrap() {
        Cloneability::NotCloneable(why) => why,
        Cloneability::Cloneable(_) => panic!("{u} {f} should not be cloneable"),
    };
    assert!(matches!(no("http://x/y", "raw"), NotCloneable::BadLocation(_)));
    assert!(matches!(no("rbd://a/b/c", "raw"), NotCloneable::BadLocation(_)));
    assert_eq!(no(&format!("rbd://{}", loc.image), "raw"), NotCloneable::Legacy);
    let other = Location::new("00000000-0000-0000-0000-000000000000", "images", &loc.image, "snap");
    assert!(matches!(no(&other.to_string(), "raw"), NotCloneable::OtherCluster { .. }));
    assert_eq!(no(&url, "qcow2"), NotCloneable::NotRaw("qcow2".into()));
    let fsid = c.fsid().unwrap();
    let missing_snap = Location::new(&fsid, "images", &loc.image, "nosuch");
    assert!(matches!(no(&missing_snap.to_string(), "raw"), NotCloneable::Unreadable { kind: ErrorKind::NotFound, .. }));
    let missing_pool = Location::new(&fsid, "nosuchpool", &loc.image, "snap");
    assert!(matches!(no(&missing_pool.to_string(), "raw"), NotCloneable::Unreadable { .. }));
}

#[test]
fn boot_disk_clones_across_pools_and_grows() {
    let c = live!();
    let _g = lock();
    let images = Pool::open(&c, "images").unwrap();
    let data = pattern(2, 12 * MIB as usize);
    let loc = glance_image(&c, "n-boot", &data);
    // Least privilege: Nova's user (client.cinder: vms rw, images read-only) boots the disk.
    let cinder = common::cluster_as("cinder");
    let vms = Pool::open(&cinder, "vms").unwrap();
    let admin_vms = Pool::open(&c, "vms").unwrap();
    let id = uuid();
    let _cleanup = Cleanup(vec![(images.clone(), loc.image.clone()), (admin_vms.clone(), format!("{id}_disk"))]);
    let before = vms.image_names().unwrap();

    // A flavor smaller than the image: refused before anything is created.
    let e = BootDisk::new(&loc, &id).size(8 * MIB).run(&vms).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let e = BootDisk::new(&loc, "not-a-uuid").run(&vms).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let e = BootDisk::new(&Location::legacy(&loc.image), &id).run(&vms).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(vms.image_names().unwrap().iter().all(|n| before.contains(n) || !n.starts_with(&id)));

    let disk = nova::boot_disk(&loc, &vms, &id, "disk", Some(64 * MIB)).unwrap();
    assert_eq!(disk.name, format!("{id}_disk"));
    assert_eq!(disk.pool, "vms");
    assert_eq!(disk.parent, format!("images/{}@snap", loc.image));
    assert_eq!(disk.size, 64 * MIB);
    let img = Image::open(&vms, &disk.name).unwrap();
    let p = img.parent().unwrap().unwrap();
    assert_eq!((p.pool.as_str(), p.image.as_str(), p.snap.as_str()), ("images", loc.image.as_str(), SNAP_NAME));
    let st = img.stat().unwrap();
    assert_eq!((st.size, st.order), (64 * MIB, 23), "grown, order inherited from the image");
    let all = read_all(&img);
    assert_eq!(sha(&all[..data.len()]), sha(&data));
    assert!(all[data.len()..].iter().all(|&b| b == 0));
    drop(img);

    // Booting the same disk again: Exists, and the disk is left alone.
    let e = BootDisk::new(&loc, &id).run(&vms).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Exists, "{e}");
    assert!(vms.image_exists(&disk.name).unwrap());

    let report = nova::delete_instance_disks(&vms, &id, &RetryPolicy::default()).unwrap();
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].outcome, DiskOutcome::Removed);
}

#[test]
fn boot_disk_failure_at_every_step_leaves_nothing() {
    let c = live!();
    let _g = lock();
    let images = Pool::open(&c, "images").unwrap();
    let vms = Pool::open(&c, "vms").unwrap();
    let loc = glance_image(&c, "n-bootfp", &pattern(3, 2 * MIB as usize));
    let _cleanup = Cleanup(vec![(images.clone(), loc.image.clone())]);
    for step in BOOT_STEPS.iter().copied().chain(["commit"]) {
        let id = uuid();
        let _c = Cleanup(vec![(vms.clone(), format!("{id}_disk"))]);
        let fp = format!("nova.boot.{step}");
        failpoint::set(&fp, Action::Error);
        let r = BootDisk::new(&loc, &id).size(16 * MIB).run(&vms);
        failpoint::clear(&fp);
        let e = r.unwrap_err();
        assert_eq!(e.recipe_step(), Some(("nova.boot", step)), "{e}");
        assert!(!vms.image_exists(&format!("{id}_disk")).unwrap(), "{step}: disk left behind");
        assert_eq!(snap_names(&images, &loc.image), vec![SNAP_NAME.to_string()]);
        assert!(Image::open(&images, &loc.image).unwrap().children().unwrap().is_empty(), "{step}");
    }
}

/// Boots a disk for a new instance and writes `extra` at 5 MiB.
fn booted_disk(c: &Cluster, loc: &Location, extra: &[u8]) -> (Pool, String) {
    let vms = Pool::open(c, "vms").unwrap();
    let disk = BootDisk::new(loc, &uuid()).size(32 * MIB).run(&vms).unwrap();
    let img = Image::open(&vms, &disk.name).unwrap();
    img.write(5 * MIB, extra).unwrap();
    img.flush().unwrap();
    (vms, disk.name)
}

#[test]
fn snapshot_instance_makes_a_flat_protected_glance_image() {
    let c = live!();
    let _g = lock();
    let images = Pool::open(&c, "images").unwrap();
    let loc = glance_image(&c, "n-snapbase", &pattern(4, 8 * MIB as usize));
    let new_id = unique("n-vmsnap");
    let _cleanup = Cleanup(vec![(images.clone(), loc.image.clone()), (images.clone(), new_id.clone())]);
    let (vms, disk) = booted_disk(&c, &loc, &pattern(5, 3 * MIB as usize));
    let _c2 = Cleanup(vec![(vms.clone(), disk.clone())]);
    let at_snapshot = read_all(&Image::open(&vms, &disk).unwrap());

    let mut calls = 0u64;
    let mut cb = |_d: u64, _t: u64| {
        calls += 1;
        std::ops::ControlFlow::Continue(())
    };
    let snap = nova::snapshot_instance(&vms, &disk, "images", &new_id, &mut Progress::new(&mut cb)).unwrap();
    assert!(calls > 0, "flatten reported progress");
    let fsid = c.fsid().unwrap();
    assert_eq!(snap.location, Location::new(&fsid, "images", &new_id, "snap"));
    assert_eq!(snap.size, 32 * MIB);
    assert_eq!(snap.temp_snap.len(), 32);
    assert!(snap.temp_snap.chars().all(|ch| ch.is_ascii_hexdigit() && !ch.is_ascii_uppercase()));

    // The new image: in the Glance pool, flat, `snap` protected, no marker, same data.
    let img = Image::open(&images, &new_id).unwrap();
    assert_eq!(img.parent().unwrap(), None, "flattened");
    let snaps = img.snapshots().unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!((snaps[0].name.as_str(), snaps[0].protected), (SNAP_NAME, Some(true)));
    assert_eq!(provenance::Marker::read(&img).unwrap(), None);
    let at = Image::open_at_snap(&images, &new_id, SNAP_NAME).unwrap();
    assert_eq!(sha(&read_all(&at)), sha(&at_snapshot));
    drop((img, at));

    // No temporary snapshot left on the disk, which is still a clone of the base image; later
    // writes to the disk do not reach the snapshot image.
    assert!(snap_names(&vms, &disk).is_empty());
    let d = Image::open(&vms, &disk).unwrap();
    assert_eq!(d.parent().unwrap().map(|p| p.image), Some(loc.image.clone()));
    d.write(0, &pattern(6, MIB as usize)).unwrap();
    d.flush().unwrap();
    drop(d);
    let at = Image::open_at_snap(&images, &new_id, SNAP_NAME).unwrap();
    assert_eq!(sha(&read_all(&at)), sha(&at_snapshot));
    drop(at);

    // It is a normal Glance image: Nova can clone it, and Glance can delete it.
    assert!(nova::is_cloneable(&c, &snap.location.to_string(), "raw").unwrap().is_cloneable());
    let store = GlanceStore::new(&images);
    store.delete(&snap.location).unwrap();
    assert!(!images.image_exists(&new_id).unwrap());
}

#[test]
fn snapshot_instance_failure_at_every_step_changes_nothing() {
    let c = live!();
    let _g = lock();
    let images = Pool::open(&c, "images").unwrap();
    let loc = glance_image(&c, "n-snapfp", &pattern(7, 4 * MIB as usize));
    let _cleanup = Cleanup(vec![(images.clone(), loc.image.clone())]);
    let (vms, disk) = booted_disk(&c, &loc, &pattern(8, MIB as usize));
    let _c2 = Cleanup(vec![(vms.clone(), disk.clone())]);
    let disk_snaps_before = snap_names(&vms, &disk);
    for step in SNAPSHOT_STEPS.iter().copied().chain(["commit"]) {
        let new_id = unique("n-snapfp-new");
        let _c3 = Cleanup(vec![(images.clone(), new_id.clone())]);
        let fp = format!("nova.snapshot.{step}");
        failpoint::set(&fp, Action::Error);
        let r = InstanceSnapshot::new("images", &new_id).run(&vms, &disk, &mut Progress::none());
        failpoint::clear(&fp);
        let e = r.unwrap_err();
        assert_eq!(e.recipe_step(), Some(("nova.snapshot", step)), "{e}");
        assert!(e.undo_errors().is_empty(), "{step}: {e}");
        assert_eq!(snap_names(&vms, &disk), disk_snaps_before, "{step}: disk snapshots changed");
        assert!(!images.image_exists(&new_id).unwrap(), "{step}: half-made image left behind");
        assert!(Image::open(&vms, &disk).unwrap().children().unwrap().is_empty(), "{step}");
    }
    // Bad names change nothing either.
    let e = InstanceSnapshot::new("images", "a/b").run(&vms, &disk, &mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(snap_names(&vms, &disk), disk_snaps_before);
}

#[test]
fn delete_instance_disks_removes_exactly_the_instance_disks() {
    let c = live!();
    let vms = Pool::open(&c, "vms").unwrap();
    let (a, b) = (uuid(), uuid());
    let mine = [format!("{a}_disk"), format!("{a}_disk.local"), format!("{a}_disk.eph0")];
    let others = [format!("{b}_disk"), format!("{a}disk"), format!("x{a}_disk")];
    let _cleanup = Cleanup(mine.iter().chain(others.iter()).map(|n| (vms.clone(), n.clone())).collect());
    for n in mine.iter().chain(others.iter()) {
        vms.create_image(n, 4 * MIB, &ImageOptions::new()).unwrap();
    }
    let resized = Image::open(&vms, &mine[2]).unwrap();
    resized.write(0, &pattern(1, 4096)).unwrap();
    nova::resize_snapshot(&vms, &mine[2]).unwrap();
    drop(resized);
    assert_eq!(snap_names(&vms, &mine[2]), vec![RESIZE_SNAP.to_string()]);

    let mut report = nova::delete_instance_disks(&vms, &a, &RetryPolicy::default()).unwrap();
    report.sort_by(|x, y| x.name.cmp(&y.name));
    let mut expected: Vec<String> = mine.to_vec();
    expected.sort();
    assert_eq!(report.iter().map(|d| d.name.clone()).collect::<Vec<_>>(), expected);
    for d in &report {
        assert_eq!(d.outcome, DiskOutcome::Removed, "{d:?}");
        assert_eq!(d.attempts, 1);
        assert_eq!(d.removed_resize_snap, d.name == mine[2], "{d:?}");
    }
    let names = vms.image_names().unwrap();
    assert!(mine.iter().all(|n| !names.contains(n)));
    assert!(others.iter().all(|n| names.contains(n)), "other instances' images are untouched");
    assert!(nova::delete_instance_disks(&vms, &a, &RetryPolicy::default()).unwrap().is_empty());
    assert_eq!(
        nova::delete_instance_disks(&vms, "", &RetryPolicy::default()).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        nova::delete_instance_disks(&vms, &a[..8], &RetryPolicy::default()).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );

    // Other snapshots than nova-resize are reported, not removed.
    Image::open(&vms, &others[0]).unwrap().snap_create("user-snap").unwrap();
    let r = nova::delete_instance_disks(&vms, &b, &RetryPolicy::default()).unwrap();
    assert!(matches!(r[0].outcome, DiskOutcome::Error { kind: ErrorKind::HasSnapshots, .. }), "{r:?}");
    assert_eq!(snap_names(&vms, &others[0]), vec!["user-snap".to_string()]);
}

#[test]
fn busy_disk_is_removed_after_retries() {
    let c = live!();
    let vms = Pool::open(&c, "vms").unwrap();
    let id = uuid();
    let name = format!("{id}_disk");
    let _cleanup = Cleanup(vec![(vms.clone(), name.clone())]);
    vms.create_image(&name, 4 * MIB, &ImageOptions::new()).unwrap();

    // Held open (a watch) by another, non-shared connection.
    let (opened_tx, opened_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let holder_name = name.clone();
    let holder = std::thread::spawn(move || {
        let other = common::cluster_as("admin");
        let p = Pool::open(&other, "vms").unwrap();
        let img = Image::open(&p, &holder_name).unwrap();
        opened_tx.send(()).unwrap();
        let _ = release_rx.recv_timeout(Duration::from_secs(60));
        drop(img);
    });
    opened_rx.recv().unwrap();

    // Too few attempts: reported as busy, nothing removed.
    let quick = RetryPolicy { attempts: 2, initial: Duration::from_millis(100), max: Duration::from_millis(100) };
    let r = nova::delete_instance_disks(&vms, &id, &quick).unwrap();
    assert_eq!((r[0].outcome.clone(), r[0].attempts), (DiskOutcome::Busy, 2));
    assert!(vms.image_exists(&name).unwrap());

    // Released after ~2 s from another thread: removed after retries.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        release_tx.send(()).unwrap();
    });
    let patient = RetryPolicy { attempts: 12, initial: Duration::from_millis(500), max: Duration::from_secs(1) };
    let r = nova::delete_instance_disks(&vms, &id, &patient).unwrap();
    releaser.join().unwrap();
    holder.join().unwrap();
    assert_eq!(r[0].outcome, DiskOutcome::Removed, "{r:?}");
    assert!(r[0].attempts > 1, "{r:?}");
    assert!(!vms.image_exists(&name).unwrap());
}

/// The resize itself: grow to 16 MiB and write `data`.
fn write_grown(pool: &Pool, name: &str, data: &[u8]) {
    let img = Image::open(pool, name).unwrap();
    img.resize(16 * MIB, false).unwrap();
    img.write(0, data).unwrap();
    img.flush().unwrap();
}

#[test]
fn resize_snapshot_revert_and_confirm() {
    let c = live!();
    let vms = Pool::open(&c, "vms").unwrap();
    let name = format!("{}_disk", uuid());
    let _cleanup = Cleanup(vec![(vms.clone(), name.clone())]);
    vms.create_image(&name, 8 * MIB, &ImageOptions::new()).unwrap();
    let (a, b) = (pattern(10, 8 * MIB as usize), pattern(11, 16 * MIB as usize));
    let img = Image::open(&vms, &name).unwrap();
    img.write(0, &a).unwrap();
    img.flush().unwrap();

    drop(img);

    // Revert: back to the old data and size, snapshot gone. (The guest is stopped: a handle
    // that holds the exclusive lock makes the rollback fail with ReadOnly on Pacific.)
    nova::resize_snapshot(&vms, &name).unwrap();
    assert_eq!(nova::resize_snapshot(&vms, &name).unwrap_err().kind(), ErrorKind::Exists);
    write_grown(&vms, &name, &b);
    let holder = Image::open(&vms, &name).unwrap();
    holder.write(0, b"lock").unwrap();
    let e = nova::revert_resize(&vms, &name, &mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ReadOnly, "{e}");
    drop(holder);
    write_grown(&vms, &name, &b);
    nova::revert_resize(&vms, &name, &mut Progress::none()).unwrap();
    let img = Image::open(&vms, &name).unwrap();
    assert_eq!(img.size().unwrap(), 8 * MIB);
    assert_eq!(sha(&read_all(&img)), sha(&a));
    drop(img);
    assert!(snap_names(&vms, &name).is_empty());
    assert_eq!(nova::revert_resize(&vms, &name, &mut Progress::none()).unwrap_err().kind(), ErrorKind::NotFound);

    // Confirm: keeps the new data, removes the snapshot; a second confirm finds none.
    nova::resize_snapshot(&vms, &name).unwrap();
    write_grown(&vms, &name, &b);
    assert!(nova::confirm_resize(&vms, &name).unwrap());
    assert!(!nova::confirm_resize(&vms, &name).unwrap());
    let img = Image::open(&vms, &name).unwrap();
    assert_eq!(img.size().unwrap(), 16 * MIB);
    assert_eq!(sha(&read_all(&img)), sha(&b));
    drop(img);
    assert!(snap_names(&vms, &name).is_empty());
    assert_eq!(nova::confirm_resize(&vms, "no-such-disk").unwrap_err().kind(), ErrorKind::NotFound);
}
