//! Least privilege (issue #10, quick part): the recipes run as `client.glance`,
//! `client.cinder` and `client.cinder-backup`, whose caps (see `scripts/vstart.sh`) cover only
//! their own pools (cinder: `images` read-only). Work in their own pools succeeds; every
//! cross-pool attempt fails with [`ErrorKind::PermissionDenied`] and changes nothing (the images
//! carrying the test's marker in every pool are listed as admin before and after).
//!
//! Secrets: all of it runs under a TRACE-level `tracing` subscriber writing to a buffer, and the
//! `Debug`/`Display` output of clusters, builders, errors and recipe results is collected too;
//! none of it may contain a key from the cluster's keyring files.
mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use common::{pattern, unique};
use rbd_core::recipes::backup::{Backup, Restore, VolumeRef};
use rbd_core::recipes::cinder;
use rbd_core::recipes::glance::GlanceStore;
use rbd_core::{Cluster, ClusterBuilder, ErrorKind, Image, ImageOptions, Pool, Progress, Result};
use serde_json::json;

const MIB: u64 = 1 << 20;
const POOLS: [&str; 5] = ["rbd", "images", "volumes", "vms", "backups"];

/// The captured TRACE log of this test binary.
fn log_buffer() -> Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            // Span fields too (every recipe and call opens one with its arguments).
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::NEW)
            .with_ansi(false)
            .with_writer(move || LogWriter(b.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn conf() -> PathBuf {
    PathBuf::from(std::env::var("CEPH_CONF").expect("CEPH_CONF is set for live tests"))
}

/// The base64 keys of every `client.*.keyring` next to the conf file.
fn keyring_keys() -> Vec<(String, String)> {
    let dir = conf().parent().expect("conf dir").to_path_buf();
    let mut keys = Vec::new();
    for e in std::fs::read_dir(&dir).expect("cluster dir") {
        let p = e.expect("entry").path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if name.starts_with("client.") && name.ends_with(".keyring") {
            for line in std::fs::read_to_string(&p).expect("keyring").lines() {
                if let Some((k, v)) = line.split_once('=') {
                    if k.trim() == "key" {
                        keys.push((name.clone(), v.trim().to_string()));
                    }
                }
            }
        }
    }
    assert!(keys.len() >= 4, "expected the keyrings of admin, glance, cinder, cinder-backup in {}", dir.display());
    keys
}

fn key_of(client: &str) -> String {
    keyring_keys()
        .into_iter()
        .find(|(f, _)| f == &format!("client.{client}.keyring"))
        .map(|(_, k)| k)
        .unwrap_or_else(|| panic!("no keyring for client.{client}"))
}

/// Images of every pool whose name contains `marker` (listed as admin).
fn marked(admin: &Cluster, marker: &str) -> BTreeSet<String> {
    let mut s = BTreeSet::new();
    for p in POOLS {
        for n in Pool::open(admin, p).unwrap().image_names().unwrap() {
            if n.contains(marker) {
                s.insert(format!("{p}/{n}"));
            }
        }
    }
    s
}

/// One attempt: who, what, whether it must be allowed, and the call (returning a Debug string).
struct Attempt<'a> {
    who: &'static str,
    what: String,
    allowed: bool,
    run: Box<dyn FnOnce() -> Result<String> + 'a>,
}

fn dbg<T: std::fmt::Debug>(r: Result<T>) -> Result<String> {
    r.map(|v| format!("{v:?}"))
}

#[test]
fn cross_pool_attempts_are_denied_and_no_secret_leaks() {
    let log = log_buffer();
    let admin = live!();
    let marker = unique("fpriv");
    let m: &str = &marker;
    let conf = conf();
    let glance = Cluster::connect(Some(&conf), "glance").expect("connect as glance");
    let cinder_c = Cluster::connect(Some(&conf), "cinder").expect("connect as cinder");
    let backup_c = Cluster::connect(Some(&conf), "cinder-backup").expect("connect as cinder-backup");
    let open = |c: &Cluster, p: &str| Pool::open(c, p).unwrap();
    let (g_images, g_volumes, g_backups) =
        (open(&glance, "images"), open(&glance, "volumes"), open(&glance, "backups"));
    let (c_volumes, c_images, c_backups, c_vms) =
        (open(&cinder_c, "volumes"), open(&cinder_c, "images"), open(&cinder_c, "backups"), open(&cinder_c, "vms"));
    let (b_backups, b_volumes, b_images) =
        (open(&backup_c, "backups"), open(&backup_c, "volumes"), open(&backup_c, "images"));

    // Admin-made fixtures in each pool, for reads and cross-pool writes.
    let a_volumes = open(&admin, "volumes");
    let fixture_vid = format!("{m}-fix");
    cinder::create(&a_volumes, &fixture_vid, 4 * MIB).unwrap();
    let a_images = open(&admin, "images");
    let gimg = format!("{m}-gfix");
    let up = GlanceStore::new(&a_images)
        .upload(&gimg, &pattern(5, MIB as usize)[..], Some(MIB), &mut Progress::none())
        .unwrap();
    let a_backups = open(&admin, "backups");
    let bimg = format!("{m}-bfix");
    a_backups.create_image(&bimg, MIB, &ImageOptions::new()).unwrap();
    // An admin-made backup of the fixture volume, for the restore attempt.
    Backup::new(&VolumeRef::cinder(&a_volumes, &fixture_vid), &a_backups, "fpriv-b1")
        .run(&mut Progress::none())
        .unwrap();
    let fixture_sizes = || {
        (
            Image::open_read_only(&a_volumes, &cinder::volume_name(&fixture_vid)).unwrap().size().unwrap(),
            Image::open_read_only(&a_backups, &bimg).unwrap().snapshots().unwrap().len(),
            Image::open_read_only(&a_images, &gimg).unwrap().snapshots().unwrap().len(),
        )
    };

    let fx: &str = &fixture_vid;
    let gi: &str = &gimg;
    let bi: &str = &bimg;
    let gs = GlanceStore::new(&g_images);
    let g_own = format!("{m}-gown");
    let gv = GlanceStore::new(&g_volumes);
    let c_own = format!("{m}-cown");
    let cg = GlanceStore::new(&c_images);
    let mut attempts: Vec<Attempt<'_>> = Vec::new();
    macro_rules! push {
        ($who:expr, $what:expr, $allowed:expr, $run:expr) => {
            attempts.push(Attempt { who: $who, what: $what.to_string(), allowed: $allowed, run: $run })
        };
    }
    // --- glance: images only ---
    push!(
        "glance",
        "upload into images",
        true,
        Box::new(|| {
            let u = gs.upload(&g_own, &pattern(6, 65536)[..], Some(65536), &mut Progress::none())?;
            let r = format!("{u:?}");
            gs.delete(&u.location)?;
            Ok(r)
        })
    );
    push!(
        "glance",
        "upload into volumes",
        false,
        Box::new(|| dbg(gv.upload(&format!("{m}-gx1"), &[1u8; 4096][..], Some(4096), &mut Progress::none())))
    );
    push!(
        "glance",
        "cinder create in volumes",
        false,
        Box::new(|| dbg(cinder::create(&g_volumes, &format!("{m}-gx2"), MIB)))
    );
    push!(
        "glance",
        "create image in backups",
        false,
        Box::new(|| dbg(g_backups.create_image(&format!("{m}-gx3"), MIB, &ImageOptions::new())))
    );
    push!(
        "glance",
        "read a volume",
        false,
        Box::new(|| dbg(Image::open_read_only(&g_volumes, &cinder::volume_name(fx)).and_then(|i| i.read_vec(0, 4096))))
    );
    push!("glance", "remove a volume", false, Box::new(|| dbg(g_volumes.remove_image(&cinder::volume_name(fx)))));
    // --- cinder: volumes, vms rw; images ro ---
    push!(
        "cinder",
        "create, snapshot, extend, delete a volume",
        true,
        Box::new(|| {
            let v = cinder::create(&c_volumes, &c_own, MIB)?;
            cinder::create_snapshot(&c_volumes, &c_own, "s1")?;
            cinder::extend(&c_volumes, &c_own, 2 * MIB)?;
            cinder::delete_snapshot(&c_volumes, &c_own, "s1", cinder::ChildrenPolicy::Refuse)?;
            cinder::delete_volume(&c_volumes, &c_own)?;
            Ok(format!("{v:?}"))
        })
    );
    push!(
        "cinder",
        "read a Glance image (read-only caps)",
        true,
        Box::new(|| {
            dbg(Image::open_at_snap(&c_images, gi, "snap").and_then(|i| i.read_vec(0, 4096)).map(|d| d.len()))
        })
    );
    push!(
        "cinder",
        "upload into images",
        false,
        Box::new(|| dbg(cg.upload(&format!("{m}-cx1"), &[1u8; 4096][..], Some(4096), &mut Progress::none())))
    );
    push!("cinder", "delete a Glance image", false, Box::new(|| dbg(cg.delete(&up.location))));
    push!(
        "cinder",
        "write a Glance image",
        false,
        Box::new(|| dbg(Image::open(&c_images, gi).and_then(|i| i.write(0, &[7u8; 512]))))
    );
    push!(
        "cinder",
        "snapshot a Glance image",
        false,
        Box::new(|| dbg(Image::open(&c_images, gi).and_then(|i| i.snap_create("cx"))))
    );
    push!(
        "cinder",
        "create image in backups",
        false,
        Box::new(|| dbg(c_backups.create_image(&format!("{m}-cx2"), MIB, &ImageOptions::new())))
    );
    push!("cinder", "remove a backup image", false, Box::new(|| dbg(c_backups.remove_image(bi))));
    push!(
        "cinder",
        "create in vms (own pool)",
        true,
        Box::new(|| {
            let n = format!("{m}-cvm");
            c_vms.create_image(&n, MIB, &ImageOptions::new())?;
            c_vms.remove_image(&n)?;
            Ok(n)
        })
    );
    // --- cinder-backup: backups only ---
    push!(
        "cinder-backup",
        "create and remove in backups",
        true,
        Box::new(|| {
            let n = format!("{m}-bown");
            b_backups.create_image(&n, MIB, &ImageOptions::new())?;
            b_backups.remove_image(&n)?;
            Ok(n)
        })
    );
    push!(
        "cinder-backup",
        "back up a volume it cannot read",
        false,
        Box::new(|| {
            dbg(Backup::new(&VolumeRef::cinder(&b_volumes, fx), &b_backups, "fpriv-b2").run(&mut Progress::none()))
        })
    );
    push!(
        "cinder-backup",
        "restore onto a volume it cannot write",
        false,
        Box::new(|| {
            dbg(Restore::new(&b_backups, fx, "fpriv-b1", &VolumeRef::cinder(&b_volumes, fx)).run(&mut Progress::none()))
        })
    );
    push!(
        "cinder-backup",
        "read a Glance image",
        false,
        Box::new(|| dbg(Image::open_read_only(&b_images, gi).and_then(|i| i.read_vec(0, 512))))
    );
    push!(
        "cinder-backup",
        "create image in images",
        false,
        Box::new(|| dbg(b_images.create_image(&format!("{m}-bx1"), MIB, &ImageOptions::new())))
    );
    push!(
        "cinder-backup",
        "cinder create in volumes",
        false,
        Box::new(|| dbg(cinder::create(&b_volumes, &format!("{m}-bx2"), MIB)))
    );

    let before = (marked(&admin, m), fixture_sizes());
    let mut seen = String::new();
    let (mut denied, mut allowed_ok, mut failures, mut rows) = (0, 0, Vec::new(), Vec::new());
    let n = attempts.len();
    for a in attempts {
        let r = (a.run)();
        match &r {
            Ok(v) => seen.push_str(&format!("{v}\n")),
            Err(e) => seen.push_str(&format!("{e}\n{e:?}\n")),
        }
        let kind = r.as_ref().err().map(|e| e.kind());
        rows.push(json!({ "client": a.who, "attempt": a.what, "allowed": a.allowed, "result": format!("{kind:?}") }));
        match (a.allowed, &r) {
            (true, Ok(_)) => allowed_ok += 1,
            (false, Err(e)) if e.kind() == ErrorKind::PermissionDenied => denied += 1,
            (true, Err(e)) => failures.push(format!("{} {}: should work, got {e}", a.who, a.what)),
            (false, Err(e)) => {
                failures.push(format!("{} {}: expected PermissionDenied, got {:?}: {e}", a.who, a.what, e.kind()))
            }
            (false, Ok(v)) => failures.push(format!("{} {}: should be denied, succeeded: {v}", a.who, a.what)),
        }
    }
    let after = (marked(&admin, m), fixture_sizes());
    let unchanged = before == after;

    // Secrets: Debug/Display of connections and builders, including a builder given a key
    // directly (`set("key", ..)`), and a failed connect with a wrong key.
    for c in [&admin, &glance, &cinder_c, &backup_c] {
        seen.push_str(&format!("{c:?}\n"));
    }
    let mut b = ClusterBuilder::new("glance");
    b.conf_file(&conf).set("key", key_of("glance")).set("keyring", "/nonexistent");
    seen.push_str(&format!("{b:?}\n"));
    match b.connect() {
        Ok(c) => seen.push_str(&format!("{c:?} {}\n", c.client_id())),
        Err(e) => seen.push_str(&format!("{e}\n{e:?}\n")),
    }
    let mut wrong = ClusterBuilder::new("glance");
    wrong.conf_file(&conf).set("key", key_of("cinder")).set("keyring", "/nonexistent");
    wrong.timeout(std::time::Duration::from_secs(5));
    match wrong.connect() {
        Ok(c) => failures.push(format!("connect as glance with cinder's key succeeded: {c:?}")),
        Err(e) => {
            seen.push_str(&format!("{e}\n{e:?}\n"));
            if e.kind() != ErrorKind::PermissionDenied {
                failures.push(format!("connect with a wrong key: expected PermissionDenied, got {:?}: {e}", e.kind()));
            }
        }
    }
    let captured = String::from_utf8_lossy(&log.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    let keys = keyring_keys();
    let mut leaks = Vec::new();
    for (file, key) in &keys {
        if captured.contains(key.as_str()) {
            leaks.push(format!("{file}: key in the tracing log"));
        }
        if seen.contains(key.as_str()) {
            leaks.push(format!("{file}: key in Debug/Display output"));
        }
    }

    let pass = failures.is_empty() && leaks.is_empty() && unchanged;
    common::record_figure(
        "fault_privilege",
        "least_privilege",
        &format!(
            "{n} attempts as glance/cinder/cinder-backup: {allowed_ok} own-pool operations worked, {denied} cross-pool attempts denied (PermissionDenied), {} wrong; cluster unchanged: {unchanged}; secret leaks: {} (keys checked: {}, log bytes scanned: {})",
            failures.len(),
            leaks.len(),
            keys.len(),
            captured.len() + seen.len()
        ),
        pass,
        json!({ "attempts": rows, "failures": failures, "leaks": leaks, "log_bytes": captured.len(), "output_bytes": seen.len() }),
    );

    // Clean up the fixtures as admin.
    let _ = rbd_core::recipes::backup::delete_backup(
        &a_backups,
        &fixture_vid,
        "fpriv-b1",
        Some(&VolumeRef::cinder(&a_volumes, &fixture_vid)),
    );
    let _ = cinder::delete_volume(&a_volumes, &fixture_vid);
    let _ = GlanceStore::new(&a_images).delete(&up.location);
    common::purge_image(&a_backups, &bimg);
    assert!(failures.is_empty(), "privilege checks failed:\n{}", failures.join("\n"));
    assert!(leaks.is_empty(), "secrets leaked: {leaks:?}");
    assert!(unchanged, "a denied attempt changed the cluster: {before:?} -> {after:?}");
    assert!(marked(&admin, m).is_empty(), "leftovers: {:?}", marked(&admin, m));
    assert!(captured.contains("TRACE") || captured.contains("DEBUG"), "the log capture saw nothing");
    let _ = Path::new("");
}
