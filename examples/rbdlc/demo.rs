//! `rbdlc demo`: the lifecycle tour on a live cluster. Everything it creates is removed at the
//! end, also when a step fails.

use std::ops::ControlFlow;
use std::time::Instant;

use rbd_core::{clone_image, CloneFormat, Cluster, Image, ImageOptions, Pool, Progress, Result};
use serde_json::{json, Value};

use crate::output::{bytes, Out};

/// Options of `rbdlc demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Pool for the parent image.
    #[arg(long, default_value = "rbd")]
    pool: String,
    /// Pool for the clone.
    #[arg(long, default_value = "volumes")]
    clone_pool: String,
    /// Bytes of data to write (MiB).
    #[arg(long, default_value_t = 32)]
    data_mib: u64,
}

struct Tour<'a> {
    out: &'a Out,
    steps: Vec<Value>,
    t0: Instant,
}

impl Tour<'_> {
    fn step(&mut self, what: &str, detail: Value) {
        let ms = self.t0.elapsed().as_millis() as u64;
        self.out.line(format!("[{:>6} ms] {what}", ms));
        self.steps.push(json!({"step": what, "at_ms": ms, "detail": detail}));
    }
}

pub fn run(cluster: &Cluster, args: &Args, out: &Out) -> Result<()> {
    let mut tour = Tour { out, steps: Vec::new(), t0: Instant::now() };
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let parent_name = format!("rbdlc-demo-{tag}");
    let clone_name = format!("rbdlc-demo-{tag}-clone");
    let pool = Pool::open(cluster, &args.pool)?;
    let clone_pool = Pool::open(cluster, &args.clone_pool)?;
    tour.step("connect", json!({"fsid": cluster.fsid()?, "client": cluster.client_id()}));

    let result = tour_steps(&mut tour, args, &pool, &clone_pool, &parent_name, &clone_name);

    // Clean up whatever exists, in dependency order, whatever happened above.
    let mut cleanup_errors = Vec::new();
    for (p, name) in [(&clone_pool, &clone_name), (&pool, &parent_name)] {
        if !p.image_exists(name).unwrap_or(false) {
            continue;
        }
        let r = Image::open(p, name).and_then(|img| {
            for s in img.snapshots()? {
                if s.protected == Some(true) {
                    img.snap_unprotect(&s.name)?;
                }
                img.snap_remove(&s.name)?;
            }
            Ok(())
        });
        if let Err(e) = r.and_then(|()| p.remove_image(name)) {
            cleanup_errors.push(e.to_string());
        }
    }
    tour.step("clean up", json!({"removed": [format!("{}/{clone_name}", args.clone_pool), format!("{}/{parent_name}", args.pool)], "errors": cleanup_errors}));
    result?;
    let total = tour.t0.elapsed().as_millis() as u64;
    out.result(json!({"ok": true, "elapsed_ms": total, "steps": tour.steps}), |_| format!("demo finished in {total} ms"));
    Ok(())
}

fn tour_steps(tour: &mut Tour<'_>, args: &Args, pool: &Pool, clone_pool: &Pool, parent: &str, clone: &str) -> Result<()> {
    let size = (args.data_mib.max(8) * 2) << 20;
    pool.create_image(parent, size, ImageOptions::new().order(22))?;
    tour.step(&format!("create {}/{parent}", pool.name()), json!({"size": size}));

    let img = Image::open(pool, parent)?;
    let chunk = 4usize << 20;
    let data: Vec<u8> = (0..chunk).map(|i| (i % 251) as u8).collect();
    let mut written = 0u64;
    while written < args.data_mib << 20 {
        img.write(written, &data)?;
        written += chunk as u64;
    }
    img.flush()?;
    tour.step(&format!("write {}", bytes(written)), json!({"bytes": written}));

    img.snap_create("snap")?;
    img.snap_protect("snap")?;
    tour.step(&format!("snapshot {}/{parent}@snap (protected)", pool.name()), json!({}));

    clone_image(pool, parent, "snap", clone_pool, clone, ImageOptions::new().clone_format(CloneFormat::V2))?;
    let child = Image::open(clone_pool, clone)?;
    let p = child.parent()?.map(|p| format!("{}/{}@{}", p.pool, p.image, p.snap));
    tour.step(&format!("clone -> {}/{clone}", clone_pool.name()), json!({"parent": p}));

    let objects = child.stat()?.num_objs;
    let bar = tour.out.bar("flatten", objects);
    let mut cb = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
        ControlFlow::Continue(())
    };
    child.flatten_with_progress(&mut Progress::new(&mut cb))?;
    bar.finish_and_clear();
    tour.step(&format!("flatten {}/{clone} ({objects} objects)", clone_pool.name()), json!({"parent_after": child.parent()?.is_some()}));

    let same = child.read_vec(0, chunk)? == img.read_vec(0, chunk)?;
    tour.step("verify clone data == parent data", json!({"equal": same}));
    if !same {
        return Err(rbd_core::Error::new(rbd_core::ErrorKind::Io, "demo", "clone data differs from parent"));
    }
    Ok(())
}
