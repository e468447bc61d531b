//! `rbdlc flatten POOL/IMAGE` and `rbdlc flatten slots`: flatten through the cluster-wide
//! throttle (N slots shared by every process using the same slot pool, prefix and count), and
//! show who holds the slots.

use std::ops::ControlFlow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use rbd_core::recipes::flatten::FlattenGate;
use rbd_core::recipes::throttle::{Throttle, DEFAULT_PREFIX};
use rbd_core::{Cluster, Error, Image, Pool, Progress, Result};
use serde_json::json;

use crate::output::Out;
use crate::spec::Spec;

/// Where the slots live; every process sharing the throttle must agree.
#[derive(clap::Args, Clone)]
pub struct ThrottleArgs {
    /// Pool holding the slot images.
    #[arg(long, default_value = "volumes")]
    slot_pool: String,
    /// Slot image prefix.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    prefix: String,
    /// Number of slots (flattens at once, cluster-wide; Cinder's per-process default is 3).
    #[arg(long, default_value_t = 3)]
    slots: usize,
}

/// `rbdlc flatten POOL/IMAGE` arguments.
#[derive(clap::Args, Clone)]
pub struct RunArgs {
    /// POOL/IMAGE (a clone).
    spec: Spec,
    /// Give up after waiting this many seconds for a slot (default: wait forever).
    #[arg(long)]
    timeout: Option<u64>,
    #[command(flatten)]
    throttle: ThrottleArgs,
}

/// `rbdlc flatten` subcommands.
#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Who holds each flatten slot, since when, and how fresh their heartbeat is.
    Slots {
        #[command(flatten)]
        throttle: ThrottleArgs,
    },
    /// Flatten POOL/IMAGE through the throttle (`rbdlc flatten POOL/IMAGE` is the same).
    Run(RunArgs),
    /// `rbdlc flatten POOL/IMAGE [--slots N] [--timeout S]`.
    #[command(external_subcommand)]
    Image(Vec<String>),
}

/// `rbdlc flatten POOL/IMAGE ...` parsed on its own.
#[derive(Parser)]
#[command(name = "rbdlc flatten")]
struct ImageCli {
    #[command(flatten)]
    args: RunArgs,
    /// Same as the global --json.
    #[arg(long, hide = true)]
    json: bool,
}

fn throttle(cluster: &Cluster, a: &ThrottleArgs) -> Result<Throttle> {
    let mut t = Throttle::new(&Pool::open(cluster, &a.slot_pool)?, a.slots)?;
    t.prefix(&a.prefix);
    Ok(t)
}

fn unix(t: Option<SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs())
}

fn flatten(cluster: &Cluster, a: &RunArgs, out: &Out) -> Result<()> {
    let mut t = throttle(cluster, &a.throttle)?;
    t.wait(a.timeout.map(Duration::from_secs));
    let pool = Pool::open_ns(cluster, &a.spec.pool, &a.spec.namespace)?;
    let img = Image::open(&pool, &a.spec.image)?;
    let bar = out.bar("flatten", 0);
    bar.set_message("waiting");
    let mut cb = |done: u64, total: u64| {
        bar.set_message("flatten");
        bar.set_length(total);
        bar.set_position(done);
        ControlFlow::Continue(())
    };
    let t0 = std::time::Instant::now();
    t.flatten(&img, &mut Progress::new(&mut cb))?;
    bar.finish_and_clear();
    let ms = t0.elapsed().as_millis() as u64;
    out.result(
        json!({"image": a.spec.to_string(), "flattened": true, "elapsed_ms": ms, "slots": a.throttle.slots}),
        |_| format!("{}: flattened in {ms} ms (through {} cluster-wide slots)", a.spec, a.throttle.slots),
    );
    Ok(())
}

pub fn run(cluster: &Cluster, cmd: &Cmd, out: &Out) -> Result<()> {
    match cmd {
        Cmd::Run(a) => flatten(cluster, a, out),
        Cmd::Image(words) => {
            let cli =
                ImageCli::try_parse_from(std::iter::once("rbdlc flatten".to_string()).chain(words.iter().cloned()))
                    .map_err(|e| Error::invalid("rbdlc flatten", e.to_string()))?;
            let out = Out { json: out.json || cli.json };
            flatten(cluster, &cli.args, &out)
        }
        Cmd::Slots { throttle: a } => {
            let states = throttle(cluster, a)?.slots()?;
            let v: Vec<_> = states
                .iter()
                .map(|s| {
                    json!({"slot": s.slot, "image": s.image, "exists": s.exists, "owner": s.owner, "client": s.client,
                        "holder": s.holder, "since": unix(s.since),
                        "heartbeat_age_ms": s.heartbeat_age.map(|d| d.as_millis() as u64)})
                })
                .collect();
            out.result(json!({"pool": a.slot_pool, "prefix": a.prefix, "slots": v}), |_| {
                states
                    .iter()
                    .map(|s| match (&s.owner, &s.holder) {
                        (None, _) => format!("slot {}: free", s.slot),
                        (Some(o), Some(h)) => {
                            let since = s.since.and_then(|t| SystemTime::now().duration_since(t).ok());
                            format!(
                                "slot {}: {h} ({o}, {}) for {:.0?}, heartbeat {:.1?} ago",
                                s.slot,
                                s.client.as_deref().unwrap_or("?"),
                                since.unwrap_or_default(),
                                s.heartbeat_age.unwrap_or_default()
                            )
                        }
                        (Some(o), None) => format!("slot {}: {o} (no heartbeat yet)", s.slot),
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
    }
}
