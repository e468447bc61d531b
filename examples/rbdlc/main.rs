//! `rbdlc`: a command-line front end over rbd-core (like the `rbd` tool, one subcommand per
//! recipe). Global flags: `--conf` (or `CEPH_CONF`), `--id` (client id), `--json` (every
//! subcommand prints one JSON object with its result on stdout).
//!
//! ```text
//! cargo run --example rbdlc -- demo
//! cargo run --example rbdlc -- --json info volumes/volume-1
//! ```

mod backup;
mod cinder;
mod demo;
mod diff;
mod flatten;
mod glance;
mod group;
mod info;
mod nova;
mod output;
mod reconcile;
mod spec;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rbd_core::Cluster;

/// Ceph RBD lifecycle tool (rbd-core).
#[derive(Parser)]
#[command(name = "rbdlc", version, about, long_about = None)]
struct Cli {
    /// Ceph configuration file (default: CEPH_CONF, then librados' search path).
    #[arg(long, global = true, env = "CEPH_CONF")]
    conf: Option<PathBuf>,
    /// Client id to authenticate as (without `client.`).
    #[arg(long, global = true, default_value = "admin", env = "RBD_CLIENT_ID")]
    id: String,
    /// Print one JSON object with the result on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Route every recipe flatten through the cluster-wide throttle with this many slots
    /// (0: flatten directly).
    #[arg(long, global = true, default_value_t = 0, env = "RBDLC_FLATTEN_SLOTS")]
    flatten_slots: usize,
    /// Pool holding the throttle's slot images (the client needs write caps there).
    #[arg(long, global = true, default_value = "rbd", env = "RBDLC_SLOT_POOL")]
    slot_pool: String,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Installs the cluster-wide flatten throttle as the process-wide flatten gate when asked.
fn install_throttle(cluster: &Cluster, cli: &Cli) -> rbd_core::Result<()> {
    if cli.flatten_slots > 0 {
        let pool = rbd_core::Pool::open(cluster, &cli.slot_pool)?;
        let throttle = rbd_core::recipes::throttle::Throttle::new(&pool, cli.flatten_slots)?;
        rbd_core::recipes::flatten::set_default_gate(std::sync::Arc::new(throttle));
    }
    Ok(())
}

#[derive(Subcommand)]
enum Cmd {
    /// The lifecycle tour: create, write, snapshot, clone, flatten (progress bar), clean up.
    Demo(demo::Args),
    /// Show an image: size, order, features, parent, snapshots, watchers.
    Info {
        /// POOL/IMAGE[@SNAP]
        spec: spec::Spec,
    },
    /// Export, import and transfer RBD diffs (`rbd export-diff`/`import-diff` compatible).
    #[command(subcommand)]
    Diff(diff::Cmd),
    /// Glance image recipes: upload, download, delete.
    #[command(subcommand)]
    Glance(glance::Cmd),
    /// Nova instance-disk recipes: boot from image, VM snapshot, delete disks.
    #[command(subcommand)]
    Nova(nova::Cmd),
    /// Cinder volume recipes: create, snapshot, delete, extend, revert.
    #[command(subcommand)]
    Cinder(cinder::Cmd),
    /// Incremental backups across clusters (Cinder ceph backup layout): create, restore, delete, list, verify.
    #[command(subcommand)]
    Backup(backup::Cmd),
    /// Consistency groups: create, add/remove volumes, group snapshots, restore.
    #[command(subcommand)]
    Group(group::Cmd),
    /// Flatten through the cluster-wide throttle; show who holds the slots.
    #[command(subcommand)]
    Flatten(flatten::Cmd),
    /// Find (and with --apply remove) what crashed recipes left behind; each finding says why.
    Reconcile(reconcile::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("RBDLC_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let out = output::Out { json: cli.json };
    let result = Cluster::shared(cli.conf.as_deref(), &cli.id)
        .and_then(|cluster| install_throttle(&cluster, &cli).map(|()| cluster))
        .and_then(|cluster| match &cli.cmd {
            Cmd::Demo(args) => demo::run(&cluster, args, &out),
            Cmd::Info { spec } => info::run(&cluster, spec, &out),
            Cmd::Diff(c) => diff::run(&cluster, c, &out),
            Cmd::Glance(c) => glance::run(&cluster, c, &out),
            Cmd::Nova(c) => nova::run(&cluster, c, &out),
            Cmd::Cinder(c) => cinder::run(&cluster, c, &out),
            Cmd::Backup(c) => backup::run(&cluster, c, &out),
            Cmd::Group(c) => group::run(&cluster, c, &out),
            Cmd::Flatten(c) => flatten::run(&cluster, c, &out),
            Cmd::Reconcile(a) => reconcile::run(&cluster, a, &out),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"error": {"kind": format!("{:?}", e.kind()), "errno": e.errno(), "op": e.op(),
                        "target": e.target(), "message": e.to_string()}})
                );
            } else {
                eprintln!("rbdlc: {e}");
            }
            ExitCode::FAILURE
        }
    }
}
