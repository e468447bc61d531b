//! `rbdlc reconcile [POOL[/NS]...] [--apply]`: find what crashed recipes left behind (half-made
//! images, Nova temporary snapshots, childless `.clone_snap` snapshots and `.deleted` volumes,
//! pending delete journals, orphaned backup snapshots, stale flatten-slot locks) and, with
//! `--apply`, remove exactly what a dry run lists. Each finding says why it is an orphan.
//!
//! ```text
//! rbdlc reconcile                                   # dry run over images, volumes, vms
//! rbdlc reconcile volumes vms --min-age 3600 --backup-pool backups --backup-conf /etc/ceph/backup.conf
//! rbdlc --json reconcile --apply
//! ```

use std::path::PathBuf;
use std::time::Duration;

use rbd_core::recipes::reconcile::{Action, Reconcile, DEFAULT_MIN_AGE};
use rbd_core::recipes::throttle::DEFAULT_LEASE;
use rbd_core::{Cluster, Pool, Result};
use serde_json::json;

use crate::output::Out;

/// `rbdlc reconcile` arguments.
#[derive(clap::Args)]
pub struct Args {
    /// Pools to scan, POOL or POOL/NAMESPACE (default: images volumes vms).
    pools: Vec<String>,
    /// Remove what is found (default: a dry run that only lists it).
    #[arg(long)]
    apply: bool,
    /// Leave alone what is younger than this many seconds (a live recipe may be mid-flight).
    #[arg(long, default_value_t = DEFAULT_MIN_AGE.as_secs())]
    min_age: u64,
    /// The backup pool whose `*.backup.*` images hold the counterparts of `backup.*` snapshots
    /// (without it, backup leftovers are not checked).
    #[arg(long)]
    backup_pool: Option<String>,
    /// ceph.conf of the backup cluster (default: this connection).
    #[arg(long)]
    backup_conf: Option<PathBuf>,
    /// Client id on the backup cluster (default: --id).
    #[arg(long)]
    backup_id: Option<String>,
    /// The flatten throttle's lease in seconds (a slot heartbeat older than this may be stale).
    #[arg(long, default_value_t = DEFAULT_LEASE.as_secs())]
    slot_lease: u64,
    /// Only consider images (and journal entries, metadata objects) whose name contains this.
    #[arg(long)]
    only: Option<String>,
}

fn open_pool(cluster: &Cluster, spec: &str) -> Result<Pool> {
    match spec.split_once('/') {
        Some((p, ns)) => Pool::open_ns(cluster, p, ns),
        None => Pool::open(cluster, spec),
    }
}

/// Runs `rbdlc reconcile`.
pub fn run(cluster: &Cluster, args: &Args, out: &Out) -> Result<()> {
    let specs: Vec<String> = if args.pools.is_empty() {
        ["images", "volumes", "vms"].map(String::from).to_vec()
    } else {
        args.pools.clone()
    };
    let pools = specs.iter().map(|s| open_pool(cluster, s)).collect::<Result<Vec<_>>>()?;
    let target = match &args.backup_pool {
        None => None,
        Some(p) => {
            let c = match &args.backup_conf {
                Some(conf) => Cluster::shared(Some(conf), args.backup_id.as_deref().unwrap_or(cluster.client_id()))?,
                None => cluster.clone(),
            };
            Some(open_pool(&c, p)?)
        }
    };
    let refs: Vec<&Pool> = pools.iter().collect();
    let mut r = Reconcile::new(&refs);
    r.backup_target(target.as_ref())
        .min_age(Duration::from_secs(args.min_age))
        .slot_lease(Duration::from_secs(args.slot_lease))
        .dry_run(!args.apply);
    if let Some(only) = args.only.clone() {
        r.filter(move |name| name.contains(&only));
    }
    let report = r.run()?;

    let findings: Vec<_> = report
        .findings
        .iter()
        .map(|f| {
            let (action, error) = match &f.action {
                Action::Failed(m) => ("failed", Some(m.as_str())),
                a => (if *a == Action::Removed { "removed" } else { "planned" }, None),
            };
            json!({"kind": f.kind.name(), "pool": f.pool, "image": f.image, "snap": f.snap, "reason": f.reason,
                "age_s": f.age.map(|a| a.as_secs()), "action": action, "error": error})
        })
        .collect();
    let skipped: Vec<_> = report
        .skipped
        .iter()
        .map(|s| json!({"kind": s.kind.name(), "pool": s.pool, "image": s.image, "snap": s.snap, "reason": s.reason}))
        .collect();
    let v = json!({"dry_run": report.dry_run, "pools": specs, "findings": findings, "skipped": skipped,
        "notes": report.notes, "removed": report.removed(), "failed": report.failed()});
    out.result(v, |_| {
        let mut lines = Vec::new();
        for f in &report.findings {
            let action = match f.action {
                Action::Planned => "planned",
                Action::Removed => "removed",
                Action::Failed(_) => "FAILED",
            };
            lines.push(format!("{action:<8} {:<22} {}", f.kind, f.spec()));
            lines.push(format!("         {}", f.reason));
            if let Action::Failed(m) = &f.action {
                lines.push(format!("         error: {m}"));
            }
        }
        for s in &report.skipped {
            let spec = match &s.snap {
                Some(snap) => format!("{}/{}@{snap}", s.pool, s.image),
                None => format!("{}/{}", s.pool, s.image),
            };
            lines.push(format!("skipped  {:<22} {spec}\n         {}", s.kind, s.reason));
        }
        for n in &report.notes {
            lines.push(format!("note: {n}"));
        }
        lines.push(if report.dry_run {
            format!("{} orphan(s) found (dry run; --apply removes exactly these)", report.findings.len())
        } else {
            format!("{} removed, {} failed", report.removed(), report.failed())
        });
        lines.join("\n")
    });
    Ok(())
}
