//! Trash (move/list/get/restore/remove/purge, in a dedicated RBD namespace for purge) and
//! consistency groups (members, group snapshots, rollback) against the live cluster.
mod common;

use std::ops::ControlFlow;
use std::time::{Duration, SystemTime};

use common::{pattern, unique, ScratchImage};
use rbd_core::{
    ErrorKind, Group, GroupImageState, GroupSnapRef, GroupSnapState, Image, ImageOptions, Pool, Progress,
    SnapNamespace, TrashSource,
};

const MIB: u64 = 1 << 20;

/// Removes a trashed image by id on drop (if a test fails half-way).
struct TrashGuard<'a> {
    pool: &'a Pool,
    id: String,
}

impl Drop for TrashGuard<'_> {
    fn drop(&mut self) {
        let _ = self.pool.trash_remove(&self.id, true);
    }
}

/// Empties and removes an RBD namespace on drop.
struct NamespaceGuard {
    pool: Pool,
    ns: String,
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        if let Ok(p) = self.pool.with_namespace(&self.ns) {
            for e in p.trash_list().unwrap_or_default() {
                let _ = p.trash_remove(&e.id, true);
            }
            for name in p.image_names().unwrap_or_default() {
                common::purge_image(&p, &name);
            }
        }
        let _ = self.pool.namespace_remove(&self.ns);
    }
}

/// Removes a group on drop (detaching members, removing group snapshots).
struct GroupGuard {
    pool: Pool,
    name: String,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let _ = self.pool.group_remove(&self.name);
    }
}

#[test]
fn trash_move_list_get_restore_remove() {
    let c = live!();
    let s = ScratchImage::new(&c, "rbd", "trash", 4 * MIB);
    s.open().write(0, b"keep me").unwrap();
    let id = s.open().id().unwrap();
    let before = SystemTime::now() - Duration::from_secs(300);

    s.pool.trash_move(&s.name, Duration::from_secs(3600)).unwrap();
    let _guard = TrashGuard { pool: &s.pool, id: id.clone() };
    assert!(!s.pool.image_exists(&s.name).unwrap());
    assert_eq!(Image::open(&s.pool, &s.name).unwrap_err().kind(), ErrorKind::NotFound);

    let entry = s.pool.trash_list().unwrap().into_iter().find(|e| e.id == id).expect("listed in the trash");
    assert_eq!(entry.name, s.name);
    assert_eq!(entry.source, TrashSource::User);
    assert!(entry.deletion_time >= before);
    let deferred = entry.deferment_end_time.duration_since(entry.deletion_time).unwrap();
    assert!(deferred >= Duration::from_secs(3599) && deferred <= Duration::from_secs(3601), "{deferred:?}");
    assert_eq!(s.pool.trash_get(&id).unwrap(), entry);

    // Before the deferment end a remove needs force.
    let e = s.pool.trash_remove(&id, false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");

    // Restore under the original name ("" = keep it); data intact.
    s.pool.trash_restore(&id, "").unwrap();
    assert!(s.pool.image_exists(&s.name).unwrap());
    assert_eq!(s.open().read_vec(0, 7).unwrap(), b"keep me");
    assert_eq!(s.pool.trash_get(&id).unwrap_err().kind(), ErrorKind::NotFound);

    // Restore under a new name.
    s.pool.trash_move(&s.name, Duration::ZERO).unwrap();
    let renamed = unique("trash-renamed");
    s.pool.trash_restore(&id, &renamed).unwrap();
    let renamed_guard = ScratchImage { pool: s.pool.clone(), name: renamed.clone() };
    assert_eq!(Image::open(&s.pool, &renamed).unwrap().read_vec(0, 7).unwrap(), b"keep me");

    // Move without delay and remove with progress.
    s.pool.trash_move(&renamed, Duration::ZERO).unwrap();
    let mut calls = 0;
    let mut cb = |_d: u64, _t: u64| {
        calls += 1;
        ControlFlow::Continue(())
    };
    s.pool.trash_remove_with_progress(&id, false, &mut Progress::new(&mut cb)).unwrap();
    assert!(calls >= 1, "progress reported");
    assert_eq!(s.pool.trash_get(&id).unwrap_err().kind(), ErrorKind::NotFound);
    assert!(!s.pool.image_exists(&renamed).unwrap());
    drop(renamed_guard);

    assert_eq!(s.pool.trash_remove(&id, true).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(s.pool.trash_move("rbdcore-t-no-such-image", Duration::ZERO).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn trash_purge_in_a_dedicated_namespace() {
    let c = live!();
    let rbd = Pool::open(&c, "rbd").unwrap();
    let ns = unique("ns");
    rbd.namespace_create(&ns).unwrap();
    let _ns_guard = NamespaceGuard { pool: rbd.clone(), ns: ns.clone() };
    assert!(rbd.namespace_exists(&ns).unwrap());
    assert!(rbd.namespace_list().unwrap().contains(&ns));
    assert_eq!(rbd.namespace_create(&ns).unwrap_err().kind(), ErrorKind::Exists);

    let p = Pool::open_ns(&c, "rbd", &ns).unwrap();
    assert!(p.trash_list().unwrap().is_empty(), "a new namespace has an empty trash");
    for tag in ["now", "later"] {
        p.create_image(tag, 4 * MIB, &ImageOptions::new()).unwrap();
        Image::open(&p, tag).unwrap().write(0, &pattern(61, 4096)).unwrap();
    }
    p.trash_move("now", Duration::ZERO).unwrap();
    p.trash_move("later", Duration::from_secs(3600)).unwrap();
    assert!(!rbd.trash_list().unwrap().iter().any(|e| e.name == "now" || e.name == "later"), "namespaces are isolated");

    assert_eq!(p.trash_purge(None, Some(1.5), &mut Progress::none()).unwrap_err().kind(), ErrorKind::InvalidArgument);

    // Purge now: only the expired entry goes.
    let mut calls = 0;
    let mut cb = |_d: u64, _t: u64| {
        calls += 1;
        ControlFlow::Continue(())
    };
    p.trash_purge(None, None, &mut Progress::new(&mut cb)).unwrap();
    assert!(calls >= 1, "progress reported");
    let left: Vec<_> = p.trash_list().unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(left, ["later"]);

    // Purge with an expiry after the deferment end takes the rest.
    p.trash_purge(Some(SystemTime::now() + Duration::from_secs(7200)), None, &mut Progress::none()).unwrap();
    assert!(p.trash_list().unwrap().is_empty());

    // The namespace is empty now and can be removed.
    rbd.namespace_remove(&ns).unwrap();
    assert!(!rbd.namespace_exists(&ns).unwrap());
    assert_eq!(rbd.namespace_remove(&ns).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn group_snapshots_and_rollback() {
    let c = live!();
    let images: Vec<ScratchImage> = (0..3).map(|i| ScratchImage::new(&c, "rbd", &format!("g{i}"), 8 * MIB)).collect();
    let pool = images[0].pool.clone();
    let gname = unique("group");
    pool.group_create(&gname).unwrap();
    let _g = GroupGuard { pool: pool.clone(), name: gname.clone() };
    assert!(pool.group_list().unwrap().contains(&gname));
    assert_eq!(pool.group_create(&gname).unwrap_err().kind(), ErrorKind::Exists);

    let group = Group::new(&pool, &gname);
    for s in &images {
        group.add_image(&pool, &s.name).unwrap();
    }
    // Pacific: adding a member again is a no-op; adding it to another group is EEXIST.
    group.add_image(&pool, &images[0].name).unwrap();
    let other = unique("group-other");
    pool.group_create(&other).unwrap();
    let _g_other = GroupGuard { pool: pool.clone(), name: other.clone() };
    let e = Group::new(&pool, &other).add_image(&pool, &images[0].name).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Exists, "{e}");
    pool.group_remove(&other).unwrap();
    let mut members = group.images().unwrap();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let mut want: Vec<_> = images.iter().map(|s| s.name.clone()).collect();
    want.sort();
    assert_eq!(members.iter().map(|m| m.name.clone()).collect::<Vec<_>>(), want);
    assert!(members.iter().all(|m| m.pool == pool.id() && m.state == GroupImageState::Attached));
    for s in &images {
        assert_eq!(s.open().group().unwrap(), Some((pool.id(), gname.clone())));
    }

    // Data A, group snapshot, data B.
    let a: Vec<_> = (0..3).map(|i| pattern(70 + i, 8 * MIB as usize)).collect();
    let b: Vec<_> = (0..3).map(|i| pattern(80 + i, 8 * MIB as usize)).collect();
    for (s, d) in images.iter().zip(&a) {
        s.open().write(0, d).unwrap();
    }
    group.snap_create("gs1").unwrap();
    assert_eq!(group.snap_create("gs1").unwrap_err().kind(), ErrorKind::Exists);
    let snaps = group.snaps().unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!((snaps[0].name.as_str(), snaps[0].state), ("gs1", GroupSnapState::Complete));
    for s in &images {
        let member_snaps = s.open().snapshots().unwrap();
        assert_eq!(member_snaps.len(), 1, "{member_snaps:?}");
        assert_eq!(member_snaps[0].namespace, SnapNamespace::Group);
        assert_eq!(member_snaps[0].protected, None);
        assert_eq!(
            member_snaps[0].group,
            Some(GroupSnapRef { pool: pool.id(), group: gname.clone(), snap: "gs1".to_string() })
        );
        // Group snapshots are readable by id.
        let at = Image::open_at_snap_id(&s.pool, &s.name, member_snaps[0].id).unwrap();
        assert_eq!(at.read_vec(0, 4096).unwrap(), a[images.iter().position(|x| x.name == s.name).unwrap()][..4096]);
    }
    for (s, d) in images.iter().zip(&b) {
        s.open().write(0, d).unwrap();
    }

    // Rollback with progress restores A everywhere (handles are closed: rollback needs the
    // exclusive lock on every member).
    let mut calls = 0;
    let mut cb = |_d: u64, _t: u64| {
        calls += 1;
        ControlFlow::Continue(())
    };
    group.snap_rollback("gs1", &mut Progress::new(&mut cb)).unwrap();
    assert!(calls >= 1, "progress reported");
    for (s, d) in images.iter().zip(&a) {
        assert!(s.open().read_vec(0, d.len()).unwrap() == *d, "rolled back {}", s.name);
    }

    // Rename and remove the group snapshot; member snapshots go with it.
    group.snap_rename("gs1", "gs2").unwrap();
    assert_eq!(group.snaps().unwrap().iter().map(|s| s.name.clone()).collect::<Vec<_>>(), ["gs2"]);
    assert_eq!(group.snap_remove("gs1").unwrap_err().kind(), ErrorKind::NotFound);
    group.snap_remove("gs2").unwrap();
    assert!(group.snaps().unwrap().is_empty());
    for s in &images {
        assert!(s.open().snapshots().unwrap().is_empty());
    }

    // Members leave; rename and remove the group.
    group.remove_image(&pool, &images[2].name).unwrap();
    assert_eq!(group.images().unwrap().len(), 2);
    assert_eq!(images[2].open().group().unwrap(), None);
    let renamed = unique("group-renamed");
    pool.group_rename(&gname, &renamed).unwrap();
    let _g2 = GroupGuard { pool: pool.clone(), name: renamed.clone() };
    let group = Group::new(&pool, &renamed);
    assert_eq!(group.images().unwrap().len(), 2);
    assert_eq!(images[0].open().group().unwrap(), Some((pool.id(), renamed.clone())));
    pool.group_remove(&renamed).unwrap();
    assert!(!pool.group_list().unwrap().contains(&renamed));
    for s in &images {
        assert_eq!(s.open().group().unwrap(), None);
    }
    // Pacific: removing a missing group succeeds; listing one is empty.
    pool.group_remove(&renamed).unwrap();
    assert!(group.images().unwrap().is_empty());
    assert_eq!(Group::new(&pool, &renamed).add_image(&pool, &images[0].name).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn group_snapshot_fails_when_a_member_is_at_its_limit() {
    let c = live!();
    let s = ScratchImage::new(&c, "rbd", "glimit", 4 * MIB);
    let gname = unique("glimit");
    s.pool.group_create(&gname).unwrap();
    let _g = GroupGuard { pool: s.pool.clone(), name: gname.clone() };
    let group = Group::new(&s.pool, &gname);
    group.add_image(&s.pool, &s.name).unwrap();
    let img = s.open();
    img.snap_set_limit(1).unwrap();
    img.snap_create("user").unwrap();
    drop(img);
    // Pacific returns ENOENT here; Group::snap_create reports the limit.
    let e = group.snap_create("gs").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
    assert!(e.to_string().contains(&s.name), "{e}");
    assert!(group.snaps().unwrap().iter().all(|g| g.name != "gs" || g.state != GroupSnapState::Complete));
    let names: Vec<_> = s.open().snapshots().unwrap().into_iter().map(|x| x.namespace).collect();
    assert_eq!(names, [SnapNamespace::User], "no member snapshot left behind");
}
