//! `rbdlc demo`: the tour of seed 001 on a live cluster, through the recipes: upload a Glance
//! image, boot two VMs by clone, snapshot a VM back into Glance, make Cinder volumes from the
//! image, from a volume and from a snapshot, build a clone chain past the depth limit, then
//! delete everything in an order that exercises the parent clean-up. Everything it creates is
//! removed at the end, also when a step fails.

use std::ops::ControlFlow;
use std::time::Instant;

use rbd_core::recipes::cinder::{self, ChildrenPolicy};
use rbd_core::recipes::glance::{DeleteOutcome, GlanceStore};
use rbd_core::recipes::location::Location;
use rbd_core::recipes::nova::{self, RetryPolicy};
use rbd_core::{Cluster, Image, Pool, Progress, Result};
use serde_json::{json, Value};

use crate::output::{bytes, Out};

/// Options of `rbdlc demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Glance pool.
    #[arg(long, default_value = "images")]
    images: String,
    /// Nova pool.
    #[arg(long, default_value = "vms")]
    vms: String,
    /// Cinder pool.
    #[arg(long, default_value = "volumes")]
    volumes: String,
    /// Size of the uploaded image (MiB); half of it is zeros.
    #[arg(long, default_value_t = 64)]
    image_mib: u64,
    /// Length of the Cinder clone chain.
    #[arg(long, default_value_t = 7)]
    chain: usize,
    /// `max_clone_depth` for the chain.
    #[arg(long, default_value_t = 5)]
    max_clone_depth: u32,
}

struct Tour<'a> {
    out: &'a Out,
    steps: Vec<Value>,
    t0: Instant,
}

impl Tour<'_> {
    fn step(&mut self, what: String, detail: Value) {
        let ms = self.t0.elapsed().as_millis() as u64;
        self.out.line(format!("[{ms:>6} ms] {what}"));
        self.steps.push(json!({"step": what, "at_ms": ms, "detail": detail}));
    }
}

/// What the tour created, for the clean-up.
#[derive(Default)]
struct Created {
    glance: Vec<Location>,
    instances: Vec<String>,
    volumes: Vec<String>,
}

struct Pools {
    images: Pool,
    vms: Pool,
    volumes: Pool,
}

pub fn run(cluster: &Cluster, args: &Args, out: &Out) -> Result<()> {
    let mut tour = Tour { out, steps: Vec::new(), t0: Instant::now() };
    let pools = Pools {
        images: Pool::open(cluster, &args.images)?,
        vms: Pool::open(cluster, &args.vms)?,
        volumes: Pool::open(cluster, &args.volumes)?,
    };
    tour.step("connect".into(), json!({"fsid": cluster.fsid()?, "client": cluster.client_id()}));
    let mut created = Created::default();
    let result = tour_steps(&mut tour, args, &pools, &mut created);
    let leftovers = clean_up(&mut tour, &pools, &created);
    result?;
    let total = tour.t0.elapsed().as_millis() as u64;
    out.result(json!({"ok": true, "elapsed_ms": total, "leftovers": leftovers, "steps": tour.steps}), |_| {
        format!("demo finished in {total} ms; leftovers: {}", leftovers.len())
    });
    Ok(())
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn tour_steps(tour: &mut Tour<'_>, args: &Args, p: &Pools, created: &mut Created) -> Result<()> {
    // 1. Glance: `rbd import` + `snap create` + `snap protect`, thin and hashed.
    let image_id = uuid();
    let size = args.image_mib.max(8) << 20;
    let data: Vec<u8> = (0..size).map(|i| if (i >> 22) % 2 == 0 { (i % 251) as u8 } else { 0 }).collect();
    let store = GlanceStore::new(&p.images);
    let bar = tour.out.bar("upload", size);
    let mut cb = |done: u64, _total: u64| {
        bar.set_position(done);
        ControlFlow::Continue(())
    };
    let up = store.upload(&image_id, &data[..], Some(size), &mut Progress::new(&mut cb))?;
    bar.finish_and_clear();
    created.glance.push(up.location.clone());
    tour.step(
        format!("glance upload {} ({} stored of {})", up.location, bytes(up.bytes_stored), bytes(up.bytes_written)),
        json!({"location": up.location.to_string(), "md5": up.checksum, "sha512": up.multihash, "stored": up.bytes_stored}),
    );

    // 2. Nova: boot two VMs by clone of images/<id>@snap.
    for _ in 0..2 {
        let instance = uuid();
        let disk = nova::boot_disk(&up.location, &p.vms, &instance, "disk", Some(size * 2))?;
        created.instances.push(instance);
        tour.step(format!("nova boot {}/{} <- {}", disk.pool, disk.name, disk.parent), json!({"size": disk.size}));
    }

    // 3. Nova: direct snapshot of VM 1 into Glance (temp snap, clone, flatten, snap + protect).
    let vm1 = format!("{}_disk", created.instances[0]);
    Image::open(&p.vms, &vm1)?.write(0, b"written inside VM 1")?;
    let snap_id = uuid();
    let shot = nova::snapshot_instance(&p.vms, &vm1, p.images.name(), &snap_id, &mut Progress::none())?;
    created.glance.push(shot.location.clone());
    tour.step(format!("nova snapshot {}/{vm1} -> {}", p.vms.name(), shot.location), json!({"flattened": true}));

    // 4. Cinder: volume from image, from volume, snapshot, from snapshot.
    let tag = &uuid()[..8];
    let vol = |n: &str| format!("demo-{tag}-{n}");
    let a = cinder::create_from_image(&p.volumes, &up.location, &vol("a"), size * 2)?;
    created.volumes.push(vol("a"));
    tour.step(format!("cinder volume {} from image <- {}", a.name, a.parent.clone().unwrap_or_default()), json!({}));
    let b = cinder::create_from_volume(&p.volumes, &vol("a"), &vol("b"), size * 2, args.max_clone_depth)?;
    created.volumes.push(vol("b"));
    tour.step(
        format!("cinder volume {} from volume <- {} (depth {})", b.name, b.parent.clone().unwrap_or_default(), b.depth),
        json!({}),
    );
    let s = cinder::create_snapshot(&p.volumes, &vol("b"), "s1")?;
    tour.step(
        format!("cinder snapshot {}@{} (protected)", b.name, cinder::snapshot_name("s1")),
        json!({"snapshot": format!("{s:?}")}),
    );
    let c = cinder::create_from_snapshot(&p.volumes, &vol("b"), "s1", &vol("c"), size * 2, false)?;
    created.volumes.push(vol("c"));
    tour.step(format!("cinder volume {} from snapshot <- {}", c.name, c.parent.clone().unwrap_or_default()), json!({}));

    // 5. A clone chain past the depth limit: each volume from the previous one.
    let mut prev = vol("c");
    let mut depths = Vec::new();
    for i in 0..args.chain {
        let next = vol(&format!("chain{i}"));
        let v = cinder::create_from_volume(&p.volumes, &prev, &next, size * 2, args.max_clone_depth)?;
        created.volumes.push(next.clone());
        depths.push(v.depth);
        prev = next;
    }
    tour.step(
        format!("cinder clone chain of {} (max_clone_depth {}): depths {depths:?}", args.chain, args.max_clone_depth),
        json!({"depths": depths}),
    );

    // 6. Glance refuses to delete an image that still has clones (the VMs, volume a).
    match store.delete(&up.location) {
        Err(e) => tour.step(
            format!("glance delete refused while clones exist: {}", e.kind_name()),
            json!({"error": e.to_string()}),
        ),
        Ok(o) => tour.step(format!("glance delete unexpectedly succeeded: {o:?}"), json!({})),
    }

    // 7. Cinder snapshot delete with children: flatten them, then delete.
    let d = cinder::delete_snapshot(&p.volumes, &vol("b"), "s1", ChildrenPolicy::Flatten)?;
    tour.step(
        format!("cinder delete snapshot {}@snapshot-s1 (children flattened first)", b.name),
        json!({"result": format!("{d:?}")}),
    );
    Ok(())
}

/// Small helper so errors print their kind.
trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for rbd_core::Error {
    fn kind_name(&self) -> String {
        format!("{:?}", self.kind())
    }
}

/// Deletes everything the tour created through the recipes, newest first; returns what could
/// not be removed.
fn clean_up(tour: &mut Tour<'_>, p: &Pools, created: &Created) -> Vec<String> {
    let mut leftovers = Vec::new();
    // Volumes, deliberately oldest first: parents go before children, so the recipes must keep
    // `.deleted` parents and clean `.clone_snap` snapshots as the chain unwinds.
    let mut outcomes = Vec::new();
    for v in &created.volumes {
        match cinder::delete_volume(&p.volumes, v) {
            Ok(o) => outcomes.push(format!("{v}: {o:?}")),
            Err(e) => leftovers.push(format!("volume {v}: {e}")),
        }
    }
    if !created.volumes.is_empty() {
        tour.step(
            format!("cinder delete {} volumes (oldest first)", created.volumes.len()),
            json!({"outcomes": outcomes}),
        );
    }
    for inst in &created.instances {
        match nova::delete_instance_disks(&p.vms, inst, &RetryPolicy::default()) {
            Ok(r) => tour.step(
                format!("nova delete disks of {inst}"),
                json!({"disks": r.iter().map(|d| format!("{} {:?}", d.name, d.outcome)).collect::<Vec<_>>()}),
            ),
            Err(e) => leftovers.push(format!("instance {inst}: {e}")),
        }
    }
    let store = GlanceStore::new(&p.images);
    for loc in created.glance.iter().rev() {
        match store.delete(loc) {
            Ok(DeleteOutcome::Removed) => tour.step(format!("glance delete {loc}"), json!({})),
            Ok(o) => tour.step(format!("glance delete {loc}: {o:?}"), json!({})),
            Err(e) => leftovers.push(format!("glance {loc}: {e}")),
        }
    }
    let mut left_volumes: Vec<String> = p
        .volumes
        .image_names()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| created.volumes.iter().any(|v| n.starts_with(&cinder::volume_name(v))))
        .collect();
    leftovers.append(&mut left_volumes);
    tour.step(format!("clean up: {} leftovers", leftovers.len()), json!({"leftovers": leftovers}));
    leftovers
}
