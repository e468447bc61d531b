//! The comparison benchmark: rbd-core against the `rbd` CLI, python-rbd and the ways OpenStack's
//! drivers use them, in one run on the same clusters.
//!
//! ```text
//! scripts/bench.sh [--quick] [--network]          # the one command: starts its own two clusters
//! cargo bench --bench compare -- [--quick] [--network] [--phases upload,backup,...] \
//!     [--conf C1] [--dst-conf C2]                 # against running clusters (CEPH_CONF, RBD_TEST_CEPH_CONF2)
//! cargo bench --bench compare -- --report-only [--network]
//! ```
//!
//! Phases (each writes `target/bench-results/compare-<mode>-<phase>.json`; `quick/` below it for
//! `--quick`): `upload` (1),
//! `backup` (2), `clones` (3), `python` (4), `memory` (5), `scaling` (6); the report merges
//! them into `compare-<mode>.{json,md,png}` and prints every target as met / not met. Modes:
//! `local` (loopback, as the clusters are) and `network` (`--network`: an injected OSD-side
//! message delay of about 5 ms, set at the start and removed at the end). `--quick` is the smoke
//! version: tiny sizes, one repetition, targets not enforced.
//!
//! Every image, volume and backup id the run creates starts with `b<pid>-`; each phase removes
//! what it made (and sweeps the pools for leftovers with that prefix, also after a failure).

mod backup;
mod chart;
mod clones;
mod env;
mod memory;
mod python;
mod report;
mod scaling;
mod upload;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;

use crate::env::{Env, Facts};
use crate::report::{PhaseOut, PHASES};

#[derive(Parser, Debug)]
#[command(name = "compare", about = "rbd-core against the rbd CLI, python-rbd and OpenStack's ways")]
struct Args {
    /// Smoke run: tiny sizes, one repetition, targets not enforced.
    #[arg(long)]
    quick: bool,
    /// Network mode: inject an OSD-side message delay (about 5 ms) on both clusters.
    #[arg(long)]
    network: bool,
    /// Comma-separated phases to run.
    #[arg(long, value_delimiter = ',', default_value = "upload,backup,clones,python,memory,scaling")]
    phases: Vec<String>,
    /// The source cluster's conf file.
    #[arg(long, env = "CEPH_CONF")]
    conf: Option<PathBuf>,
    /// The destination cluster's conf file (backups); without it, pool `backups` of the source.
    #[arg(long, env = "RBD_TEST_CEPH_CONF2")]
    dst_conf: Option<PathBuf>,
    /// Client id.
    #[arg(long, env = "RBD_TEST_CLIENT_ID", default_value = "admin")]
    id: String,
    /// Repetitions of each measurement (default 3, 1 with --quick).
    #[arg(long)]
    repeat: Option<usize>,
    /// The Python with the `rbd_core` package for the Python comparison (default .venv/bin/python;
    /// scripts/bench.sh builds a release wheel into target/bench-venv for full runs).
    #[arg(long, env = "RBD_BENCH_PYTHON")]
    python: Option<PathBuf>,
    /// `ms_inject_delay_max` (seconds) set in network mode.
    #[arg(long, default_value_t = env::DEFAULT_DELAY_MAX)]
    delay_max: f64,
    /// Daemons that delay client messages in network mode: `osd` (data path) and `mon` (so a
    /// connect pays round trips too, as over a real network).
    #[arg(long, value_delimiter = ',', default_value = "osd,mon")]
    delay_on: Vec<String>,
    /// Only merge the phase files into the report.
    #[arg(long)]
    report_only: bool,
    /// Do not write the merged report (bench.sh runs phases one by one).
    #[arg(long)]
    no_report: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    // --- child mode (memory measurements) ---
    #[arg(long, hide = true)]
    child: Option<String>,
    #[arg(long, hide = true, default_value_t = 0)]
    size: u64,
    #[arg(long, hide = true, default_value = "random")]
    data: String,
    #[arg(long, hide = true)]
    no_hash: bool,
    #[arg(long, hide = true, default_value = "")]
    name: String,
    #[arg(long, hide = true, default_value = "")]
    backup_id: String,
    #[arg(long, hide = true)]
    result: Option<PathBuf>,
    #[arg(long, hide = true, default_value_t = 0)]
    in_flight: usize,
    #[arg(long, hide = true, default_value_t = 0)]
    order: u8,
    #[arg(long, hide = true)]
    file: Option<String>,
    /// The command of `--child exec`.
    #[arg(last = true, hide = true)]
    exec: Vec<String>,
}

fn main() {
    let a = Args::parse();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // Smoke runs write elsewhere, so that they never replace a real run's report.
    let out_dir = if a.quick { root.join("target/bench-results/quick") } else { root.join("target/bench-results") };
    let mode = if a.network { "network" } else { "local" };

    if a.child.as_deref() == Some("exec") {
        let result = a.result.clone().unwrap_or_else(|| PathBuf::from("/dev/null"));
        std::process::exit(env::exec_main(&result, &a.exec));
    }
    if let Some(kind) = &a.child {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        memory::child_main(&memory::ChildArgs {
            kind: kind.clone(),
            conf: path(&a.conf),
            dst_conf: path(&a.dst_conf),
            id: a.id.clone(),
            size: a.size,
            data: a.data.clone(),
            hash: !a.no_hash,
            name: a.name.clone(),
            backup_id: a.backup_id.clone(),
            in_flight: a.in_flight,
            order: a.order,
            file: a.file.clone(),
        });
        return;
    }
    if a.report_only {
        if report::write_report(&out_dir, mode, a.quick).is_none() {
            std::process::exit(1);
        }
        return;
    }
    for p in &a.phases {
        if !PHASES.contains(&p.as_str()) {
            eprintln!("unknown phase {p:?}; phases: {}", PHASES.join(","));
            std::process::exit(2);
        }
    }
    let Some(conf1) = a.conf.clone() else {
        eprintln!(
            "CEPH_CONF (or --conf) is not set. Run scripts/bench.sh, which starts two dev clusters, or point \
             CEPH_CONF (source) and RBD_TEST_CEPH_CONF2 (destination) at running clusters."
        );
        std::process::exit(2)
    };
    let env = setup(&a, &root, &out_dir, conf1, mode);
    if a.phases.len() == PHASES.len() {
        for ph in PHASES {
            let _ = std::fs::remove_file(out_dir.join(format!("compare-{mode}-{ph}.json")));
        }
    }

    // Network mode: the delay stays on both clusters until this guard drops (also on panic).
    let _delay = if a.network {
        let mut confs = vec![(env.conf1.clone(), env.id.clone())];
        if env.two_clusters {
            confs.push((env.conf2.clone(), env.id.clone()));
        }
        Some(env::DelayGuard(confs))
    } else {
        None
    };

    let mut failed = Vec::new();
    for ph in PHASES.iter().filter(|p| a.phases.iter().any(|x| x == *p)) {
        let load = env::loadavg();
        let t0 = Instant::now();
        eprintln!("== phase {ph} ({mode}{}), load {load}", if env.quick { ", quick" } else { "" });
        let mut out = PhaseOut::new(ph);
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| match *ph {
            "upload" => upload::run(&env, &mut out),
            "backup" => backup::run(&env, &mut out),
            "clones" => clones::run(&env, &mut out),
            "python" => python::run(&env, &mut out),
            "memory" => memory::run(&env, &mut out),
            _ => scaling::run(&env, &mut out),
        }));
        sweep(&env);
        if r.is_err() {
            eprintln!("phase {ph} FAILED (see the panic above); its partial results are kept");
            out.note(format!("{ph}: the phase failed part-way; results are partial"));
            failed.push(*ph);
        }
        let p = out.write(&env, t0.elapsed().as_secs_f64(), &load);
        eprintln!("== phase {ph} done in {:.0} s -> {}", t0.elapsed().as_secs_f64(), p.display());
    }
    if !a.no_report {
        report::write_report(&out_dir, mode, a.quick);
    }
    if !failed.is_empty() {
        eprintln!("failed phases: {}", failed.join(", "));
        std::process::exit(1);
    }
}

/// Connects, reads the cluster facts, sets up the network delay and measures the write latency.
fn setup(a: &Args, root: &Path, out_dir: &Path, conf1: PathBuf, mode: &'static str) -> Env {
    let id = a.id.clone();
    let c1 = rbd_core::Cluster::connect(Some(conf1.as_path()), &id).expect("connect to the source cluster");
    let fsid1 = c1.fsid().unwrap_or_default();
    let (conf2, two) = match &a.dst_conf {
        Some(c2) => {
            let other =
                rbd_core::Cluster::connect(Some(c2.as_path()), &id).expect("connect to the destination cluster");
            let two = other.fsid().unwrap_or_default() != fsid1;
            (c2.clone(), two)
        }
        None => (conf1.clone(), false),
    };
    let (ceph_version, objectstore, osds) = env::cluster_facts(&conf1, &id);
    let tag = format!("b{}", std::process::id());
    if a.network {
        env::inject_delay(&conf1, &id, a.delay_max, &a.delay_on);
        if two {
            env::inject_delay(&conf2, &id, a.delay_max, &a.delay_on);
        }
    }
    let rtt1 = env::write_rtt_ms(&id, &conf1, &tag);
    let rtt2 = if two { env::write_rtt_ms(&id, &conf2, &tag) } else { rtt1 };
    let connect_ms = env::connect_ms(&id, &conf1);
    eprintln!(
        "4 KiB synchronous write: {rtt1:.2} ms (source), {rtt2:.2} ms (destination); connect + ioctx + shutdown \
         {connect_ms:.1} ms"
    );
    let memstore_page_set = env::ceph(&conf1, &id, &["config", "get", "osd.0", "memstore_page_set"]);
    let python_rbd = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import rbd; print('librbd %d.%d.%d' % rbd.RBD().version())"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Env {
        conf1,
        conf2,
        two_clusters: two,
        id,
        quick: a.quick,
        repeat: a.repeat.unwrap_or(if a.quick { 1 } else { 3 }).max(1),
        tag,
        root: root.to_path_buf(),
        out_dir: out_dir.to_path_buf(),
        data_dir: root.join("target/bench-data"),
        sys_python: "/usr/bin/python3".into(),
        venv_python: a.python.clone().unwrap_or_else(|| root.join(".venv/bin/python")).display().to_string(),
        facts: Facts {
            mode,
            ceph_version,
            objectstore,
            osds,
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            delay_max_s: if a.network { a.delay_max } else { 0.0 },
            write_rtt_ms: rtt1,
            write_rtt_ms_dst: rtt2,
            delay_on: if a.network { a.delay_on.join(",") } else { "none".into() },
            connect_ms,
            topology: if two {
                "two clusters (source, backup destination)".into()
            } else {
                "ONE cluster (backups go to pool `backups` of the source cluster)".into()
            },
            python_rbd,
            memstore_page_set,
        },
    }
}

/// Removes whatever the phase left with this run's tag, on both clusters.
fn sweep(env: &Env) {
    let pools = ["images", "volumes", "vms", "backups", "rbd"];
    let c1 = env.connect(&env.conf1, None);
    env::sweep(&c1, &pools, &env.tag);
    if env.two_clusters {
        let c2 = env.connect(&env.conf2, None);
        env::sweep(&c2, &pools, &env.tag);
    }
    let _ = std::fs::remove_file(env.data_dir.join(format!("{}.diff", env.tag)));
}
