//! Placement (Cinder's scheduler) against the live cluster: three pools created for the test
//! with different byte quotas; stats follow Cinder's quota-aware formula; the weigher picks the
//! most free pool (positive multiplier) or the least free (negative); a backend where creation
//! fails (a name clash, missing caps) is skipped for the next one; "no valid backend" is a
//! typed NoSpace error saying why for every backend.
mod common;

use common::unique;
use rbd_core::recipes::placement::{create_volume_image, gather_stats, Backend, Scheduler};
use rbd_core::{Cluster, ErrorKind, Image, ImageOptions, Pool};
use serde_json::json;

const MIB: u64 = 1 << 20;

/// Test pools, deleted (with everything in them) on drop.
struct Pools {
    cluster: Cluster,
    names: Vec<String>,
}

impl Pools {
    fn create(c: &Cluster, quotas: &[u64]) -> Pools {
        let mut p = Pools { cluster: c.clone(), names: Vec::new() };
        for (i, q) in quotas.iter().enumerate() {
            let name = unique(&format!("pl{i}"));
            mon(c, json!({"prefix": "osd pool create", "pool": name, "pg_num": 8}));
            p.names.push(name.clone());
            mon(c, json!({"prefix": "osd pool application enable", "pool": name, "app": "rbd"}));
            mon(c, json!({"prefix": "osd pool set-quota", "pool": name, "field": "max_bytes", "val": q.to_string()}));
        }
        // `df` comes from the mgr's PG map, which lists a new pool a moment later.
        let t0 = std::time::Instant::now();
        loop {
            let (out, _) = c.mon_command(r#"{"prefix":"df","format":"json"}"#, b"").unwrap();
            let listed = p.names.iter().all(|n| rbd_core::recipes::placement::parse_df(&out, n).is_ok());
            if listed {
                break;
            }
            assert!(t0.elapsed() < std::time::Duration::from_secs(60), "new pools never appeared in df");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        p
    }
}

impl Drop for Pools {
    fn drop(&mut self) {
        for n in &self.names {
            let cmd = json!({"prefix": "osd pool delete", "pool": n, "pool2": n, "yes_i_really_really_mean_it": true});
            if let Err(e) = self.cluster.mon_command(&cmd.to_string(), b"") {
                eprintln!("deleting test pool {n} failed: {e}");
            }
        }
    }
}

fn mon(c: &Cluster, cmd: serde_json::Value) {
    c.mon_command(&cmd.to_string(), b"").unwrap_or_else(|e| panic!("{cmd}: {e}"));
}

fn backends(c: &Cluster, pools: &Pools) -> Vec<Backend> {
    ["small", "large", "medium"]
        .iter()
        .zip(&pools.names)
        .map(|(label, pool)| {
            let mut b = Backend::new(label, c, pool);
            b.capability("storage_protocol", "ceph").capability("tier", label);
            b
        })
        .collect()
}

#[test]
fn weigher_chooses_by_free_space_and_failures_move_on() {
    let c = live!();
    // Quotas 64, 256 and 128 MiB: free space follows the quotas.
    let pools = Pools::create(&c, &[64 * MIB, 256 * MIB, 128 * MIB]);
    let bs = backends(&c, &pools);
    let opts = ImageOptions::new();

    for (b, q) in bs.iter().zip([64 * MIB, 256 * MIB, 128 * MIB]) {
        let s = gather_stats(b).unwrap();
        assert_eq!(s.quota_bytes, Some(q), "{s:?}");
        assert!(s.free_bytes <= q && s.free_bytes <= s.max_avail_bytes, "{s:?}");
        assert_eq!(s.total_bytes, s.free_bytes + s.used_bytes, "{s:?}");
        assert_eq!(s.provisioned_bytes, 0, "empty pool");
    }

    // Positive multiplier (Cinder's default): most free space first (spreading).
    let v1 = unique("plv");
    let placed = Scheduler::new().place_and_create(&bs, &v1, 8 * MIB, create_volume_image(&opts)).unwrap();
    assert_eq!((placed.backend.as_str(), placed.pool.as_str()), ("large", pools.names[1].as_str()));
    assert_eq!(placed.image, format!("volume-{v1}"));
    assert!(placed.failed.is_empty() && placed.rejected.is_empty());
    let large = Pool::open(&c, &pools.names[1]).unwrap();
    assert_eq!(Image::open_read_only(&large, &placed.image).unwrap().size().unwrap(), 8 * MIB);
    assert_eq!(gather_stats(&bs[1]).unwrap().provisioned_bytes, 8 * MIB, "provisioned = sum of image sizes");

    // Negative multiplier: least free space first (stacking).
    let mut stack = Scheduler::new();
    stack.weight_multiplier(-1.0);
    let v2 = unique("plv");
    let placed = stack.place_and_create(&bs, &v2, 8 * MIB, create_volume_image(&opts)).unwrap();
    assert_eq!(placed.backend, "small");
    assert!(Pool::open(&c, &pools.names[0]).unwrap().image_exists(&placed.image).unwrap());

    // Capabilities filter: only "medium" qualifies.
    let mut picky = Scheduler::new();
    picky.require("capabilities:tier", "<or> medium <or> nvme").require("storage_protocol", "ceph");
    let placed = picky.place_and_create(&bs, &unique("plv"), MIB, create_volume_image(&opts)).unwrap();
    assert_eq!(placed.backend, "medium");
    assert_eq!(placed.rejected.len(), 2);
    assert!(placed.rejected.iter().all(|r| r.reason.contains("capability tier")), "{:?}", placed.rejected);

    // A failing backend is skipped: engineer a name clash on the best one.
    let v3 = unique("plv");
    large.create_image(&format!("volume-{v3}"), 3 * MIB, &opts).unwrap();
    let placed = Scheduler::new().place_and_create(&bs, &v3, 4 * MIB, create_volume_image(&opts)).unwrap();
    assert_eq!(placed.backend, "medium", "the next best backend");
    assert_eq!(placed.failed.len(), 1);
    assert_eq!((placed.failed[0].backend.as_str(), placed.failed[0].kind), ("large", ErrorKind::Exists));
    let clash = Image::open_read_only(&large, &format!("volume-{v3}")).unwrap();
    assert_eq!(clash.size().unwrap(), 3 * MIB, "the existing image was left alone");

    // With max_attempts 1 there is no retry.
    let v4 = unique("plv");
    large.create_image(&format!("volume-{v4}"), MIB, &opts).unwrap();
    let mut once = Scheduler::new();
    once.max_attempts(1);
    let e = once.place_and_create(&bs, &v4, MIB, create_volume_image(&opts)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
    assert!(e.to_string().contains("large: creation failed") && e.to_string().contains("max attempts 1"), "{e}");

    // A backend whose client lacks caps on the pool fails creation (EPERM) and is skipped.
    let cinder = common::cluster_as("cinder");
    let mut denied = Backend::new("large-as-cinder", &cinder, &pools.names[1]);
    denied.provisioned_bytes(Some(0));
    let mut fallback = Backend::new("small", &c, &pools.names[0]);
    fallback.provisioned_bytes(None);
    let v5 = unique("plv");
    let placed = Scheduler::new().place_and_create(&[denied, fallback], &v5, MIB, create_volume_image(&opts)).unwrap();
    assert_eq!(placed.backend, "small");
    assert!(placed.rejected.is_empty(), "client.cinder may read df and quotas: {:?}", placed.rejected);
    assert_eq!(placed.failed.len(), 1);
    assert_eq!(
        (placed.failed[0].backend.as_str(), placed.failed[0].kind),
        ("large-as-cinder", ErrorKind::PermissionDenied)
    );

    // No valid backend: too big for every pool when judged thick (free space only).
    let mut thick = Scheduler::new();
    thick.thick(true);
    let e = thick.place_and_create(&bs, &unique("plv"), 512 * MIB, create_volume_image(&opts)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
    let msg = e.to_string();
    for label in ["small", "large", "medium"] {
        assert!(msg.contains(&format!("{label}: insufficient free space")), "{msg}");
    }
    // Thin provisioning over-subscribes (ratio 20), so the same request fits.
    let placed = Scheduler::new().place_and_create(&bs, &unique("plv"), 512 * MIB, create_volume_image(&opts)).unwrap();
    assert_eq!(placed.backend, "large");

    // Bad input.
    assert_eq!(
        Scheduler::new().place_and_create(&bs, "a/b", MIB, create_volume_image(&opts)).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}
