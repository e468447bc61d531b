//! Glance recipes against the live cluster: sparse upload with hashes, location format,
//! download, unknown-size trim, size mismatches, delete with clones (refused, then allowed),
//! the trash fallback, and the undo at every step boundary of the upload.
mod common;

use std::io::{Cursor, Read, Write};
use std::ops::ControlFlow;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use common::{pattern, purge_image, unique};
use rbd_core::recipes::failpoint::{self, Action};
use rbd_core::recipes::glance::{DeleteOutcome, GlanceStore, HashAlgo, SNAP_NAME, UPLOAD_STEPS};
use rbd_core::recipes::location::Location;
use rbd_core::recipes::provenance;
use rbd_core::{clone_image, CloneFormat, Cluster, ErrorKind, Image, ImageOptions, Pool, Progress, SnapNamespace};
use sha2::{Digest, Sha256, Sha512};

const MIB: u64 = 1 << 20;

/// Every test that runs an upload holds this: failpoints are process-global.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes an image (and its snapshots, flattening clones) at the end of a test.
struct Cleanup(Vec<(Pool, String)>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (pool, name) in self.0.iter().rev() {
            purge_image(pool, name);
        }
    }
}

fn md5_hex(data: &[u8]) -> String {
    let mut child = Command::new("md5sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("md5sum");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// 64 MiB (8 objects of 8 MiB) where only objects 1, 4 and 6 hold data.
fn sparse_input() -> Vec<u8> {
    let mut data = vec![0u8; 64 * MIB as usize];
    for (i, obj) in [1usize, 4, 6].into_iter().enumerate() {
        let o = obj * 8 * MIB as usize;
        data[o..o + 8 * MIB as usize].copy_from_slice(&pattern(100 + i as u64, 8 * MIB as usize));
    }
    data
}

fn images(c: &Cluster) -> Pool {
    Pool::open(c, "images").unwrap()
}

fn download_all(store: &GlanceStore, loc: &Location) -> Vec<u8> {
    let mut r = store.download(loc).unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    assert_eq!(out.len() as u64, r.len());
    out
}

#[test]
fn upload_is_thin_hashes_everything_and_downloads_back() {
    let c = live!();
    let _g = lock();
    let pool = images(&c);
    let id = unique("g-sparse");
    let _cleanup = Cleanup(vec![(pool.clone(), id.clone())]);
    let data = sparse_input();
    let mut store = GlanceStore::new(&pool);
    store.hash(HashAlgo::Sha256); // sha512 (the default) is covered below; it is slow in debug builds

    let mut seen = Vec::new();
    let mut cb = |done: u64, total: u64| {
        seen.push((done, total));
        ControlFlow::Continue(())
    };
    let up = store.upload(&id, Cursor::new(&data), Some(data.len() as u64), &mut Progress::new(&mut cb)).unwrap();
    assert_eq!(seen.last(), Some(&(64 * MIB, 64 * MIB)));

    // Location, byte counts, hashes of the whole input (zero pieces included).
    let fsid = c.fsid().unwrap();
    assert_eq!(up.location, Location::new(&fsid, "images", &id, "snap"));
    assert_eq!(up.location.to_string(), format!("rbd://{fsid}/images/{id}/snap"));
    assert_eq!(up.bytes_written, 64 * MIB);
    assert_eq!(up.bytes_stored, 24 * MIB);
    assert_eq!(up.hash_algo, HashAlgo::Sha256);
    assert_eq!(up.checksum.as_deref(), Some(md5_hex(&data).as_str()));
    assert_eq!(up.multihash.as_deref(), Some(hex(&Sha256::digest(&data)).as_str()));

    // End state: image of the right size and order, `snap` protected, no marker, and only the
    // three data objects allocated.
    let img = Image::open(&pool, &id).unwrap();
    let st = img.stat().unwrap();
    assert_eq!((st.size, st.order), (64 * MIB, 23));
    let snaps = img.snapshots().unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!((snaps[0].name.as_str(), snaps[0].protected), (SNAP_NAME, Some(true)));
    assert_eq!(provenance::Marker::read(&img).unwrap(), None);
    let at_snap = Image::open_at_snap(&pool, &id, SNAP_NAME).unwrap();
    assert_eq!(at_snap.allocated_bytes(None).unwrap(), 24 * MIB);
    drop((img, at_snap));

    // Download: identical bytes; only the data extents were read.
    let mut r = store.download(&up.location).unwrap();
    assert_eq!((r.len(), r.data_bytes()), (64 * MIB, 24 * MIB));
    let mut back = Vec::new();
    // Small reads exercise piece boundaries.
    let mut buf = vec![0u8; 3 * MIB as usize + 17];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        back.extend_from_slice(&buf[..n]);
    }
    assert_eq!(back.len(), data.len());
    assert!(back == data, "downloaded bytes differ");
    drop(r);

    // Delete: snapshot and image gone.
    assert_eq!(store.delete(&up.location).unwrap(), DeleteOutcome::Removed);
    assert!(!pool.image_exists(&id).unwrap());
    assert_eq!(store.delete(&up.location).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn unknown_size_grows_and_trims_exactly() {
    let c = live!();
    let _g = lock();
    let pool = images(&c);
    let mut store = GlanceStore::new(&pool);
    store.hash(HashAlgo::Sha256);
    for (len, tag) in [(20 * MIB as usize + 12345, "g-unk"), (0, "g-unk0"), (5000, "g-unk-small")] {
        let id = unique(tag);
        let _cleanup = Cleanup(vec![(pool.clone(), id.clone())]);
        let data = pattern(len as u64 + 7, len);
        let up = store.upload(&id, Cursor::new(&data), None, &mut Progress::none()).unwrap();
        assert_eq!(up.bytes_written, len as u64);
        assert_eq!(up.multihash.as_deref(), Some(hex(&Sha256::digest(&data)).as_str()));
        assert_eq!(up.checksum.as_deref(), Some(md5_hex(&data).as_str()));
        let img = Image::open_at_snap(&pool, &id, SNAP_NAME).unwrap();
        assert_eq!(img.size().unwrap(), len as u64, "trimmed to the bytes written");
        assert_eq!(Image::open(&pool, &id).unwrap().size().unwrap(), len as u64);
        drop(img);
        assert!(download_all(&store, &up.location) == data);
        assert_eq!(store.delete(&up.location).unwrap(), DeleteOutcome::Removed);
    }
}

#[test]
fn hashing_off_and_inline_hashing_give_the_same_image() {
    let c = live!();
    let _g = lock();
    let pool = images(&c);
    let data = pattern(9, 10 * MIB as usize);
    let mut off = GlanceStore::new(&pool);
    off.hash(HashAlgo::None).checksum(false);
    let mut inline = GlanceStore::new(&pool);
    inline.hash_thread(false).order(22).in_flight(2);
    let (a, b) = (unique("g-nohash"), unique("g-inline"));
    let _cleanup = Cleanup(vec![(pool.clone(), a.clone()), (pool.clone(), b.clone())]);
    let up_a = off.upload(&a, Cursor::new(&data), Some(data.len() as u64), &mut Progress::none()).unwrap();
    assert_eq!((up_a.checksum, up_a.multihash), (None, None));
    let up_b = inline.upload(&b, Cursor::new(&data), None, &mut Progress::none()).unwrap();
    assert_eq!(up_b.hash_algo, HashAlgo::Sha512, "Glance's default");
    assert_eq!(up_b.multihash.as_deref(), Some(hex(&Sha512::digest(&data)).as_str()));
    assert_eq!(Image::open(&pool, &b).unwrap().stat().unwrap().order, 22);
    assert!(download_all(&off, &up_a.location) == data);
    assert!(download_all(&inline, &up_b.location) == data);
}

#[test]
fn size_mismatch_is_an_error_and_leaves_nothing() {
    let c = live!();
    let _g = lock();
    let pool = images(&c);
    let store = GlanceStore::new(&pool);
    for (declared, actual) in [(16 * MIB, 16 * MIB + 1), (16 * MIB, 10 * MIB), (0, 1), (8 * MIB, 0)] {
        let id = unique("g-mismatch");
        let _cleanup = Cleanup(vec![(pool.clone(), id.clone())]);
        let data = pattern(3, actual as usize);
        let e = store.upload(&id, Cursor::new(&data), Some(declared), &mut Progress::none()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{declared}/{actual}: {e}");
        assert!(e.to_string().contains("size mismatch"), "{e}");
        assert!(e.undo_errors().is_empty(), "{e}");
        assert!(!pool.image_exists(&id).unwrap(), "{declared}/{actual}: image left behind");
    }
}

#[test]
fn bad_input_is_rejected_before_anything_is_created() {
    let c = live!();
    let _g = lock();
    let pool = images(&c);
    let before = pool.image_names().unwrap();
    let mut store = GlanceStore::new(&pool);
    for id in ["", "a/b", "a@b"] {
        let e = store.upload(id, Cursor::new(b"x"), None, &mut Progress::none()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{id:?}");
    }
    store.order(30);
    let e = store.upload(&unique("g-order"), Cursor::new(b"x"), None, &mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(pool.image_names().unwrap(), before);

    // An existing image is left alone.
    let id = unique("g-exists");
    let _cleanup = Cleanup(vec![(pool.clone(), id.clone())]);
    pool.create_image(&id, MIB, &ImageOptions::new()).unwrap();
    let e = GlanceStore::new(&pool).upload(&id, Cursor::new(b"x"), None, &mut Progress::none()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Exists, "{e}");
    assert!(pool.image_exists(&id).unwrap());

    // Locations of another cluster are refused.
    let other = Location::new("00000000-0000-0000-0000-000000000000", "images", &id, "snap");
    assert_eq!(GlanceStore::new(&pool).delete(&other).unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(GlanceStore::new(&pool).download(&other).unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert!(pool.image_exists(&id).unwrap());
}

#[test]
fn failure_at_every_upload_step_leaves_no_image() {
    let c = live!();
    let _g = lock();
    let pool = images(&c);
    // Hashing is not what this test is about (and it is slow in debug builds).
    let mut store = GlanceStore::new(&pool);
    store.hash(HashAlgo::None).checksum(false);
    let data = sparse_input();
    for step in UPLOAD_STEPS.iter().copied().chain(["commit"]) {
        let id = unique("g-fp");
        let _cleanup = Cleanup(vec![(pool.clone(), id.clone())]);
        let fp = format!("glance.upload.{step}");
        failpoint::set(&fp, Action::Error);
        let r = store.upload(&id, Cursor::new(&data[..20 * MIB as usize]), None, &mut Progress::none());
        failpoint::clear(&fp);
        let e = r.unwrap_err();
        assert_eq!(e.recipe_step(), Some(("glance.upload", step)), "{e}");
        assert!(e.undo_errors().is_empty(), "{step}: {e}");
        assert!(!pool.image_exists(&id).unwrap(), "{step}: image left behind");
    }

    // Cancelling from the progress callback undoes the same way.
    let id = unique("g-cancel");
    let _cleanup = Cleanup(vec![(pool.clone(), id.clone())]);
    let mut cb =
        |done: u64, _total: u64| if done >= 16 * MIB { ControlFlow::Break(()) } else { ControlFlow::Continue(()) };
    let e = store.upload(&id, Cursor::new(&data), Some(data.len() as u64), &mut Progress::new(&mut cb)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    assert!(!pool.image_exists(&id).unwrap());

    // A reader error too.
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("network went away"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(7);
            self.0 -= n;
            Ok(n)
        }
    }
    let id = unique("g-readerr");
    let _cleanup2 = Cleanup(vec![(pool.clone(), id.clone())]);
    let e = store.upload(&id, Failing(10 * MIB as usize), None, &mut Progress::none()).unwrap_err();
    assert!(e.to_string().contains("network went away"), "{e}");
    assert!(!pool.image_exists(&id).unwrap());
}

/// Uploads a small image and clones its `snap` into `vms`.
fn image_with_clone(c: &Cluster, store: &GlanceStore, tag: &str) -> (Location, Pool, String) {
    let id = unique(tag);
    let data = pattern(5, 4 * MIB as usize);
    let up = store.upload(&id, Cursor::new(&data), None, &mut Progress::none()).unwrap();
    let vms = Pool::open(c, "vms").unwrap();
    let child = unique(&format!("{tag}-child"));
    clone_image(store.pool(), &id, SNAP_NAME, &vms, &child, &ImageOptions::new()).unwrap();
    (up.location, vms, child)
}

fn assert_untouched(pool: &Pool, id: &str) {
    let img = Image::open(pool, id).unwrap();
    let snaps = img.snapshots().unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!((snaps[0].name.as_str(), snaps[0].protected), (SNAP_NAME, Some(true)));
}

#[test]
fn delete_with_clones_is_refused_until_they_are_gone() {
    let c = live!();
    let _g = lock();
    let pool = images(&c);
    let store = GlanceStore::new(&pool);

    // Flattened child.
    let (loc, vms, child) = image_with_clone(&c, &store, "g-del-flat");
    let _cleanup = Cleanup(vec![(pool.clone(), loc.image.clone()), (vms.clone(), child.clone())]);
    let e = store.delete(&loc).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert!(e.to_string().contains("image has dependent clones"), "{e}");
    assert!(e.to_string().contains(&format!("vms/{child}")), "{e}");
    assert_untouched(&pool, &loc.image);
    let parent = Image::open(&vms, &child).unwrap().parent().unwrap().unwrap();
    assert_eq!(
        (parent.pool.as_str(), parent.image.as_str(), parent.snap.as_str()),
        ("images", loc.image.as_str(), "snap")
    );
    Image::open(&vms, &child).unwrap().flatten().unwrap();
    assert_eq!(store.delete(&loc).unwrap(), DeleteOutcome::Removed);
    assert!(!pool.image_exists(&loc.image).unwrap());

    // Deleted child.
    let (loc, vms, child) = image_with_clone(&c, &store, "g-del-rm");
    let _cleanup2 = Cleanup(vec![(pool.clone(), loc.image.clone()), (vms.clone(), child.clone())]);
    assert_eq!(store.delete(&loc).unwrap_err().kind(), ErrorKind::Busy);
    assert_untouched(&pool, &loc.image);
    vms.remove_image(&child).unwrap();
    assert_eq!(store.delete(&loc).unwrap(), DeleteOutcome::Removed);
    assert!(!pool.image_exists(&loc.image).unwrap());
}

#[test]
fn delete_trashes_an_image_held_by_trash_namespace_snapshots() {
    let c = live!();
    let _g = lock();
    let pool = images(&c);
    let store = GlanceStore::new(&pool);
    let id = unique("g-trash");
    let up = store.upload(&id, Cursor::new(pattern(8, 2 * MIB as usize)), None, &mut Progress::none()).unwrap();
    // A clone-v2 child of another snapshot, which is then removed: it lives on in the trash
    // namespace.
    let img = Image::open(&pool, &id).unwrap();
    img.snap_create("old").unwrap();
    let vms = Pool::open(&c, "vms").unwrap();
    let child = unique("g-trash-child");
    let _cleanup = Cleanup(vec![(pool.clone(), id.clone()), (vms.clone(), child.clone())]);
    let mut o = ImageOptions::new();
    o.clone_format(CloneFormat::V2);
    clone_image(&pool, &id, "old", &vms, &child, &o).unwrap();
    img.snap_remove("old").unwrap();
    assert!(img.snapshots().unwrap().iter().any(|s| s.namespace == SnapNamespace::Trash));
    let image_id = img.id().unwrap();
    drop(img);

    let out = store.delete(&up.location).unwrap();
    assert_eq!(out, DeleteOutcome::Trashed { image_id: image_id.clone() });
    assert!(!pool.image_exists(&id).unwrap());
    assert!(pool.trash_list().unwrap().iter().any(|e| e.id == image_id));

    // Once the clone is gone the trash entry can be removed.
    vms.remove_image(&child).unwrap();
    pool.trash_remove(&image_id, true).unwrap();
}

#[test]
fn delete_refuses_other_snapshots_and_handles_unprotected_and_legacy() {
    let c = live!();
    let _g = lock();
    let pool = images(&c);
    let store = GlanceStore::new(&pool);
    let id = unique("g-other");
    let _cleanup = Cleanup(vec![(pool.clone(), id.clone())]);
    let up = store.upload(&id, Cursor::new(pattern(1, MIB as usize)), None, &mut Progress::none()).unwrap();
    Image::open(&pool, &id).unwrap().snap_create("keep").unwrap();
    assert_eq!(store.delete(&up.location).unwrap_err().kind(), ErrorKind::HasSnapshots);
    assert!(Image::open(&pool, &id).unwrap().snap_is_protected(SNAP_NAME).unwrap(), "nothing changed");
    let img = Image::open(&pool, &id).unwrap();
    img.snap_remove("keep").unwrap();
    // Already unprotected is fine, and the legacy form uses the store's pool.
    img.snap_unprotect(SNAP_NAME).unwrap();
    drop(img);
    assert_eq!(store.delete(&Location::legacy(&id)).unwrap_err().kind(), ErrorKind::HasSnapshots);
    assert_eq!(store.delete(&up.location).unwrap(), DeleteOutcome::Removed);
    assert!(!pool.image_exists(&id).unwrap());
}

#[test]
fn glance_user_has_enough_privileges() {
    let admin = live!();
    let _g = lock();
    let glance = common::cluster_as("glance");
    let pool = Pool::open(&glance, "images").unwrap();
    let store = GlanceStore::new(&pool);
    let id = unique("g-priv");
    let _cleanup = Cleanup(vec![(images(&admin), id.clone())]);
    let data = sparse_input();
    let up = store.upload(&id, Cursor::new(&data[..24 * MIB as usize]), None, &mut Progress::none()).unwrap();
    assert!(download_all(&store, &up.location) == data[..24 * MIB as usize]);
    assert_eq!(store.delete(&up.location).unwrap(), DeleteOutcome::Removed);
}

#[test]
fn delete_failure_before_the_snapshot_is_removed_changes_nothing() {
    let c = live!();
    let _g = lock();
    let pool = images(&c);
    let mut store = GlanceStore::new(&pool);
    store.hash(HashAlgo::None).checksum(false);
    let id = unique("g-delfp");
    let _cleanup = Cleanup(vec![(pool.clone(), id.clone())]);
    let up = store.upload(&id, Cursor::new(pattern(12, MIB as usize)), None, &mut Progress::none()).unwrap();
    for step in ["check_children", "unprotect", "remove_snap"] {
        let fp = format!("glance.delete.{step}");
        failpoint::set(&fp, Action::Error);
        let r = store.delete(&up.location);
        failpoint::clear(&fp);
        let e = r.unwrap_err();
        assert_eq!(e.recipe_step(), Some(("glance.delete", step)), "{e}");
        assert!(e.undo_errors().is_empty(), "{step}: {e}");
        assert_untouched(&pool, &id);
    }
    assert_eq!(store.delete(&up.location).unwrap(), DeleteOutcome::Removed);
}
