//! Snapshots against the live cluster: list fields, protect/unprotect, rename, rollback with
//! progress (data restored), limits, remove flags, error kinds.
mod common;

use std::ops::ControlFlow;
use std::time::{Duration, SystemTime};

use common::{pattern, ScratchImage};
use rbd_core::{ErrorKind, Progress, SnapCreateFlags, SnapNamespace, SnapRemoveFlags};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

fn sha(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

#[test]
fn snapshot_list_fields_protection_and_rename() {
    let c = live!();
    let started = SystemTime::now() - Duration::from_secs(300);
    let s = ScratchImage::new(&c, "rbd", "snaplist", 8 * MIB);
    let img = s.open();
    img.write(0, &pattern(1, 64 * 1024)).unwrap();

    assert!(img.snapshots().unwrap().is_empty());
    img.snap_create("s1").unwrap();
    img.resize(16 * MIB, false).unwrap();
    img.snap_create("s2").unwrap();

    let snaps = img.snapshots().unwrap();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    let (s1, s2) = (&snaps[0], &snaps[1]);
    assert_eq!((s1.name.as_str(), s2.name.as_str()), ("s1", "s2"));
    assert!(s1.id < s2.id, "ids increase: {snaps:?}");
    assert_eq!((s1.size, s2.size), (8 * MIB, 16 * MIB));
    for s in &snaps {
        assert_eq!(s.namespace, SnapNamespace::User);
        assert_eq!(s.protected, Some(false));
        assert_eq!(s.group, None);
        assert_eq!(s.trash_original_name, None);
        let ts = s.timestamp.expect("Pacific records snapshot timestamps");
        assert!(ts >= started && ts <= SystemTime::now() + Duration::from_secs(300), "{ts:?}");
    }

    // Lookups by name and id.
    assert!(img.snap_exists("s1").unwrap());
    assert!(!img.snap_exists("nope").unwrap());
    assert_eq!(img.snap_id("s1").unwrap(), s1.id);
    assert_eq!(img.snap_name_by_id(s2.id).unwrap(), "s2");
    assert_eq!(img.snap_id("nope").unwrap_err().kind(), ErrorKind::NotFound);

    // Protection.
    img.snap_protect("s1").unwrap();
    assert!(img.snap_is_protected("s1").unwrap());
    assert_eq!(img.snap_protect("s1").unwrap_err().kind(), ErrorKind::Busy, "already protected");
    assert_eq!(img.snap_unprotect("s2").unwrap_err().kind(), ErrorKind::InvalidArgument, "not protected");
    assert_eq!(img.snap_remove("s1").unwrap_err().kind(), ErrorKind::Busy, "protected snapshots cannot be removed");
    let listed: Vec<_> = img.snapshots().unwrap().into_iter().map(|s| (s.name, s.protected)).collect();
    assert_eq!(listed, vec![("s1".to_string(), Some(true)), ("s2".to_string(), Some(false))]);

    // Rename.
    img.snap_rename("s2", "s2-renamed").unwrap();
    assert!(!img.snap_exists("s2").unwrap());
    assert_eq!(img.snap_id("s2-renamed").unwrap(), s2.id);
    assert_eq!(img.snap_rename("s1", "s2-renamed").unwrap_err().kind(), ErrorKind::Exists);

    // Removing an image with snapshots.
    drop(img);
    assert_eq!(s.pool.remove_image(&s.name).unwrap_err().kind(), ErrorKind::HasSnapshots);

    // Remove with UNPROTECT in one call, then a plain remove.
    let img = s.open();
    img.snap_remove_with_flags("s1", SnapRemoveFlags::UNPROTECT, &mut Progress::none()).unwrap();
    img.snap_remove("s2-renamed").unwrap();
    assert!(img.snapshots().unwrap().is_empty());
    assert_eq!(img.snap_remove("s1").unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn snap_remove_by_id_and_create_flags() {
    let c = live!();
    let s = ScratchImage::new(&c, "rbd", "snapflags", 4 * MIB);
    let img = s.open();
    // Without SKIP_QUIESCE librbd notifies quiesce watchers; with none registered it proceeds.
    img.snap_create_with_flags("plain", SnapCreateFlags::NONE).unwrap();
    img.snap_create_with_flags("ignore", SnapCreateFlags::IGNORE_QUIESCE_ERROR).unwrap();
    img.snap_create("skip").unwrap();
    assert_eq!(img.snap_create("skip").unwrap_err().kind(), ErrorKind::Exists);
    let names: Vec<_> = img.snapshots().unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["plain", "ignore", "skip"]);
    let id = img.snap_id("ignore").unwrap();
    img.snap_remove_by_id(id).unwrap();
    assert_eq!(img.snap_remove_by_id(id).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(img.snapshots().unwrap().len(), 2);
}

#[test]
fn rollback_with_progress_restores_data() {
    let c = live!();
    let size = 12 * MIB; // three 4 MiB objects
    let s = ScratchImage::new(&c, "rbd", "rollback", size);
    let img = s.open();
    let a = pattern(11, size as usize);
    img.write(0, &a).unwrap();
    img.snap_create("good").unwrap();
    let b = pattern(12, size as usize);
    img.write(0, &b).unwrap();
    assert_eq!(sha(&img.read_vec(0, size as usize).unwrap()), sha(&b));

    // A callback returning Break stops the rollback.
    let mut cancel = |_d: u64, _t: u64| ControlFlow::Break(());
    let err = img.snap_rollback_with_progress("good", &mut Progress::new(&mut cancel)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");

    let mut calls = 0u64;
    let mut last_total = 0u64;
    let mut cb = |_d: u64, t: u64| {
        calls += 1;
        last_total = t;
        ControlFlow::Continue(())
    };
    img.snap_rollback_with_progress("good", &mut Progress::new(&mut cb)).unwrap();
    assert!(calls >= 1, "progress was reported");
    assert!(last_total >= 1);
    assert_eq!(sha(&img.read_vec(0, size as usize).unwrap()), sha(&a), "data rolled back");

    // Plain rollback of a missing snapshot.
    assert_eq!(img.snap_rollback("missing").unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn snap_limit_is_enforced() {
    let c = live!();
    let s = ScratchImage::new(&c, "rbd", "snaplimit", 4 * MIB);
    let img = s.open();
    assert_eq!(img.snap_limit().unwrap(), None);
    img.snap_set_limit(2).unwrap();
    assert_eq!(img.snap_limit().unwrap(), Some(2));
    img.snap_create("a").unwrap();
    img.snap_create("b").unwrap();
    // librbd's own EDQUOT (quiesce notifications on).
    let e = img.snap_create_with_flags("c", SnapCreateFlags::NONE).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
    // With SKIP_QUIESCE Pacific returns 0 without creating anything; snap_create notices.
    let e = img.snap_create("c").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
    assert!(!img.snap_exists("c").unwrap());
    // Lowering the limit below the current count is refused.
    assert_eq!(img.snap_set_limit(1).unwrap_err().kind(), ErrorKind::OutOfRange);
    img.snap_remove_limit().unwrap();
    assert_eq!(img.snap_limit().unwrap(), None);
    img.snap_create("c").unwrap();
    assert_eq!(img.snapshots().unwrap().len(), 3);
}

#[test]
fn snapshot_handle_reads_old_data() {
    let c = live!();
    let s = ScratchImage::new(&c, "rbd", "snapread", 4 * MIB);
    let img = s.open();
    let a = pattern(21, 8192);
    img.write(0, &a).unwrap();
    img.snap_create("v1").unwrap();
    img.write(0, &pattern(22, 8192)).unwrap();
    let at = rbd_core::Image::open_at_snap(&s.pool, &s.name, "v1").unwrap();
    assert_eq!(at.read_vec(0, 8192).unwrap(), a);
    let by_id = rbd_core::Image::open_at_snap_id(&s.pool, &s.name, img.snap_id("v1").unwrap()).unwrap();
    assert_eq!(by_id.read_vec(0, 8192).unwrap(), a);
}
