//! Live-cluster tests for locks (managed exclusive lock with fencing, advisory locks), image
//! and pool metadata, config overrides and QoS.
//!
//! Breaking a lock blocklists the holder's connection, so every client that gets fenced here
//! uses its own connection (`common::cluster_as`), never the shared one.

mod common;

use std::time::{Duration, Instant};

use rbd_core::{ConfigSource, ErrorKind, Features, Image, ImageOptions, LockMode, Pool, QosLimits};

fn lock_opts() -> ImageOptions {
    let mut o = ImageOptions::new();
    o.features(Features::LAYERING | Features::EXCLUSIVE_LOCK);
    o
}

fn plain_opts() -> ImageOptions {
    let mut o = ImageOptions::new();
    o.features(Features::LAYERING);
    o
}

/// Retries `f` until it returns true or `limit` passes.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn managed_lock_contention_owners_and_break_fences_the_owner() {
    let c = live!();
    let s = common::ScratchImage::with_options(&c, "rbd", "mlock", 8 << 20, &lock_opts());
    let id = common::client_id();
    // The first client will be blocklisted: its own connection.
    let c1 = common::cluster_as(&id);
    let c2 = common::cluster_as(&id);
    let img1 = Image::open(&Pool::open(&c1, "rbd").unwrap(), &s.name).unwrap();
    let img2 = Image::open(&Pool::open(&c2, "rbd").unwrap(), &s.name).unwrap();

    assert!(img1.lock_owners().unwrap().is_empty(), "nobody holds it yet");
    img1.lock_acquire_raw().unwrap();
    assert!(img1.is_exclusive_lock_owner().unwrap());
    img1.write(0, b"owner").unwrap();

    // The second client is refused: acquire and write both fail with EROFS.
    let e = img2.lock_acquire().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ReadOnly, "{e}");
    let e = img2.write(0, b"intruder").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ReadOnly, "{e}");
    assert!(!img2.is_exclusive_lock_owner().unwrap());

    let owners = img2.lock_owners().unwrap();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(owners[0].mode, LockMode::Exclusive);
    assert!(!owners[0].owner.is_empty());
    assert_eq!(img1.lock_owners().unwrap(), owners, "both clients see the same owner");

    // Break it: the old owner is blocklisted and its next write fails with ESHUTDOWN.
    img2.lock_break(LockMode::Exclusive, &owners[0].owner).unwrap();
    let mut last = None;
    let fenced = eventually(Duration::from_secs(30), || match img1.write(0, b"late") {
        Err(e) if e.kind() == ErrorKind::Shutdown => true,
        other => {
            last = Some(format!("{other:?}"));
            false
        }
    });
    assert!(fenced, "old owner was not fenced within 30 s; last result {last:?}");
    assert_eq!(img1.read_vec(0, 5).unwrap_err().kind(), ErrorKind::Shutdown, "the fenced client cannot read either");

    // The breaker can now take the lock and write.
    let guard = img2.lock_acquire().unwrap();
    assert!(img2.is_exclusive_lock_owner().unwrap());
    img2.write(0, b"new owner").unwrap();
    let now = img2.lock_owners().unwrap();
    assert_eq!(now.len(), 1);
    assert_ne!(now[0].owner, owners[0].owner);
    guard.release().unwrap();
    assert!(img2.lock_owners().unwrap().is_empty());

    // Data written by the new owner is what a third client reads.
    let ro = Image::open_read_only(&s.pool, &s.name).unwrap();
    assert_eq!(ro.read_vec(0, 9).unwrap(), b"new owner");
    drop(img1);
    drop(c1);
}

#[test]
fn lock_guard_release_on_drop_lets_the_other_client_acquire() {
    let c = live!();
    let s = common::ScratchImage::with_options(&c, "rbd", "mguard", 4 << 20, &lock_opts());
    let id = common::client_id();
    let c1 = common::cluster_as(&id);
    let c2 = common::cluster_as(&id);
    let img1 = Image::open(&Pool::open(&c1, "rbd").unwrap(), &s.name).unwrap();
    let img2 = Image::open(&Pool::open(&c2, "rbd").unwrap(), &s.name).unwrap();
    {
        let _g = img1.lock_acquire().unwrap();
        assert_eq!(img2.lock_acquire().unwrap_err().kind(), ErrorKind::ReadOnly);
        assert_eq!(img1.lock_owners().unwrap().len(), 1);
    } // released by Drop
    assert!(img1.lock_owners().unwrap().is_empty(), "released on drop");
    assert!(!img1.is_exclusive_lock_owner().unwrap());
    let g2 = img2.lock_acquire().expect("the other client acquires after the guard dropped");
    img2.write(0, b"two").unwrap();
    assert_eq!(img1.lock_acquire().unwrap_err().kind(), ErrorKind::ReadOnly);
    drop(g2);
    // Explicit release through the raw API, and releasing when not the owner.
    img1.lock_acquire_raw().unwrap();
    img1.lock_release().unwrap();
    assert_eq!(img1.lock_release().unwrap_err().kind(), ErrorKind::InvalidArgument);
}

#[test]
fn lock_needs_the_exclusive_lock_feature() {
    let c = live!();
    let s = common::ScratchImage::with_options(&c, "rbd", "nolockfeat", 4 << 20, &plain_opts());
    let img = s.open();
    assert_eq!(img.lock_acquire().unwrap_err().kind(), ErrorKind::InvalidArgument);
    // An image with the feature that nobody locked: no owners (Pacific's ENOENT → empty).
    let s2 = common::ScratchImage::with_options(&c, "rbd", "unlocked", 4 << 20, &lock_opts());
    let img2 = s2.open();
    assert!(img2.lock_owners().unwrap().is_empty());
    assert!(!img2.is_exclusive_lock_owner().unwrap());
}

#[test]
fn advisory_locks_round_trip() {
    let c = live!();
    let s = common::ScratchImage::with_options(&c, "rbd", "advlock", 4 << 20, &plain_opts());
    let img = s.open();
    assert_eq!(img.list_lockers().unwrap().lockers, vec![]);

    img.lock_exclusive("cookie-1").unwrap();
    assert_eq!(img.lock_exclusive("cookie-1").unwrap_err().kind(), ErrorKind::Exists);
    let l = img.list_lockers().unwrap();
    assert!(l.exclusive);
    assert_eq!(l.lockers.len(), 1, "{l:?}");
    assert_eq!(l.lockers[0].cookie, "cookie-1");
    assert!(l.lockers[0].client.starts_with("client."), "{l:?}");
    assert!(!l.lockers[0].addr.is_empty());
    // Advisory locks do not block I/O.
    img.write(0, b"still writable").unwrap();
    img.unlock("cookie-1").unwrap();
    assert_eq!(img.unlock("cookie-1").unwrap_err().kind(), ErrorKind::NotFound);

    // Shared locks with one tag from two clients; the second client gets broken (and fenced),
    // so it uses its own connection.
    img.lock_shared("s-1", "tag-a").unwrap();
    let other = common::cluster_as(&common::client_id());
    let img2 = Image::open(&Pool::open(&other, "rbd").unwrap(), &s.name).unwrap();
    img2.lock_shared("s-2", "tag-a").unwrap();
    assert_eq!(img2.lock_exclusive("x").unwrap_err().kind(), ErrorKind::Busy);
    let l = img.list_lockers().unwrap();
    assert!(!l.exclusive);
    assert_eq!(l.tag, "tag-a");
    let mut cookies: Vec<_> = l.lockers.iter().map(|k| k.cookie.as_str()).collect();
    cookies.sort_unstable();
    assert_eq!(cookies, vec!["s-1", "s-2"]);
    let theirs = l.lockers.iter().find(|k| k.cookie == "s-2").unwrap().clone();
    img.break_lock(&theirs.client, &theirs.cookie).unwrap();
    let l = img.list_lockers().unwrap();
    assert_eq!(l.lockers.len(), 1);
    assert_eq!(l.lockers[0].cookie, "s-1");
    assert_eq!(img.break_lock(&theirs.client, &theirs.cookie).unwrap_err().kind(), ErrorKind::NotFound);
    img.unlock("s-1").unwrap();
    assert!(img.list_lockers().unwrap().lockers.is_empty());
    drop(img2);
    drop(other);
}

#[test]
fn metadata_set_get_list_remove_with_paging() {
    let c = live!();
    let s = common::ScratchImage::new(&c, "rbd", "meta", 4 << 20);
    let img = s.open();
    assert!(img.metadata_list().unwrap().is_empty());
    assert_eq!(img.metadata_get("missing").unwrap_err().kind(), ErrorKind::NotFound);
    // 150 keys: three pages of 64. One empty value, one long value.
    let mut want: Vec<(String, String)> = (0..150).map(|i| (format!("key-{i:03}"), format!("value {i}"))).collect();
    want[7].1 = String::new();
    want[8].1 = "x".repeat(10_000);
    for (k, v) in &want {
        img.metadata_set(k, v).unwrap();
    }
    assert_eq!(img.metadata_get("key-042").unwrap(), "value 42");
    assert_eq!(img.metadata_get("key-007").unwrap(), "");
    assert_eq!(img.metadata_get("key-008").unwrap().len(), 10_000);
    assert_eq!(img.metadata_list().unwrap(), want);
    // Another handle sees them too.
    assert_eq!(Image::open_read_only(&s.pool, &s.name).unwrap().metadata_list().unwrap().len(), 150);
    img.metadata_set("key-042", "changed").unwrap();
    assert_eq!(img.metadata_get("key-042").unwrap(), "changed");
    img.metadata_remove("key-042").unwrap();
    assert_eq!(img.metadata_get("key-042").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(img.metadata_remove("key-042").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(img.metadata_list().unwrap().len(), 149);
    assert_eq!(img.metadata_set("bad\0key", "v").unwrap_err().kind(), ErrorKind::InvalidArgument);
    // conf_ keys are validated by librbd.
    assert_eq!(img.metadata_set("conf_rbd_no_such_option", "1").unwrap_err().kind(), ErrorKind::InvalidArgument);
}

#[test]
fn qos_round_trip_shows_in_config_list() {
    let c = live!();
    let s = common::ScratchImage::new(&c, "rbd", "qos", 4 << 20);
    let img = s.open();
    assert_eq!(img.qos().unwrap(), QosLimits::default());
    let source_of = |img: &Image, name: &str| {
        img.config_list().unwrap().into_iter().find(|o| o.name == name).map(|o| (o.value, o.source))
    };
    assert_eq!(source_of(&img, "rbd_qos_iops_limit").map(|x| x.1), Some(ConfigSource::Config));

    let limits = QosLimits { iops: Some(100), write_bps: Some(1 << 20), read_iops: Some(0), ..QosLimits::default() };
    img.set_qos(&limits).unwrap();
    assert_eq!(img.qos().unwrap(), limits);
    assert_eq!(img.metadata_get("conf_rbd_qos_iops_limit").unwrap(), "100");
    assert_eq!(source_of(&img, "rbd_qos_iops_limit"), Some(("100".to_string(), ConfigSource::Image)));
    assert_eq!(source_of(&img, "rbd_qos_write_bps_limit"), Some(((1u64 << 20).to_string(), ConfigSource::Image)));
    assert_eq!(source_of(&img, "rbd_qos_bps_limit").map(|x| x.1), Some(ConfigSource::Config));
    // A fresh handle sees the override.
    let other = Image::open_read_only(&s.pool, &s.name).unwrap();
    assert_eq!(other.qos().unwrap(), limits);

    // Clearing one limit removes its key; clearing all restores the defaults.
    img.set_qos(&QosLimits { iops: None, ..limits }).unwrap();
    assert_eq!(img.qos().unwrap().iops, None);
    assert_eq!(img.metadata_get("conf_rbd_qos_iops_limit").unwrap_err().kind(), ErrorKind::NotFound);
    img.set_qos(&QosLimits::default()).unwrap();
    assert_eq!(img.qos().unwrap(), QosLimits::default());
    assert!(img.metadata_list().unwrap().is_empty());
    assert_eq!(source_of(&img, "rbd_qos_write_bps_limit").map(|x| x.1), Some(ConfigSource::Config));
}

#[test]
fn pool_metadata_round_trip() {
    let c = live!();
    let pool = Pool::open(&c, "rbd").unwrap();
    let key = common::unique("poolmeta");
    assert_eq!(pool.pool_metadata_get(&key).unwrap_err().kind(), ErrorKind::NotFound);
    pool.pool_metadata_set(&key, "hello").unwrap();
    assert_eq!(pool.pool_metadata_get(&key).unwrap(), "hello");
    assert!(pool.pool_metadata_list().unwrap().contains(&(key.clone(), "hello".to_string())));
    pool.pool_metadata_remove(&key).unwrap();
    assert_eq!(pool.pool_metadata_get(&key).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(pool.pool_metadata_remove(&key).unwrap_err().kind(), ErrorKind::NotFound);
}
