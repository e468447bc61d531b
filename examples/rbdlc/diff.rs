//! `rbdlc diff export|import|transfer`: `rbd export-diff` / `import-diff` compatible streams, the
//! image v2 container (`--export-format 2`), and in-process image → image transfers between
//! pools or clusters.
//!
//! ```text
//! rbdlc diff export volumes/volume-1@s2 --from-snap s1 /tmp/v1.diff
//! rbdlc diff import /tmp/v1.diff backups/volume-1
//! rbdlc diff export volumes/volume-1@s2 - | rbd import-diff - backups/volume-1
//! rbdlc diff transfer volumes/volume-1@s2 backups/volume-1 --from-snap s1 --dst-conf /etc/ceph/backup.conf --dst-id cinder-backup
//! ```

use std::fs::File;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rbd_core::export::{DiffExport, ExportStats, ImageExport};
use rbd_core::import::{DiffImport, ImageImport, ImportStats};
use rbd_core::transfer::Transfer;
use rbd_core::{Cluster, Error, Image, ImageOptions, Pool, Progress, Result};
use serde_json::{json, Value};

use crate::output::{bytes, Out};
use crate::spec::Spec;

/// `rbdlc diff` subcommands.
#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Write POOL/IMAGE[@SNAP] (changes since --from-snap) as an `rbd diff v1` stream to FILE or
    /// `-` (stdout); `rbd import-diff` accepts it.
    Export {
        /// POOL/IMAGE[@SNAP]: the end point (a snapshot, or the head).
        spec: Spec,
        /// Output file, or `-` for stdout.
        path: PathBuf,
        /// Start snapshot (default: the beginning of time).
        #[arg(long)]
        from_snap: Option<String>,
        /// Write exactly what `rbd export-diff` writes (one record per extent, zeros only when a
        /// whole extent is zero) instead of the smaller fine-grained stream.
        #[arg(long)]
        cli_identical: bool,
        /// Compare whole objects (fast with fast-diff, coarser).
        #[arg(long)]
        whole_object: bool,
        /// 1: `rbd diff v1` (export-diff); 2: `rbd image v2` container with every snapshot
        /// (`rbd export --export-format 2`; SPEC without @SNAP, --from-snap not allowed).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
        export_format: u8,
        /// Reads in flight.
        #[arg(long, default_value_t = rbd_core::export::DEFAULT_IN_FLIGHT)]
        in_flight: usize,
    },
    /// Apply an `rbd diff v1` stream from FILE or `-` (stdin) to POOL/IMAGE, like
    /// `rbd import-diff`; with --export-format 2, create POOL/IMAGE from an image v2 container.
    Import {
        /// Input file, or `-` for stdin.
        path: PathBuf,
        /// POOL/IMAGE (must exist for a diff; must not exist for --export-format 2).
        spec: Spec,
        /// 1: `rbd diff v1`; 2: `rbd image v2` container.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
        export_format: u8,
        /// Zero-detection block size for data records (`--sparse-size`).
        #[arg(long, default_value_t = 4096)]
        sparse_size: usize,
        /// Writes in flight (also from stdin).
        #[arg(long, default_value_t = rbd_core::import::DEFAULT_IN_FLIGHT)]
        in_flight: usize,
    },
    /// Copy what changed in SRC[@SNAP] since --from-snap into DST (another pool or another
    /// cluster), creating the snapshot on DST after the data; DST is created when missing.
    Transfer {
        /// Source POOL/IMAGE[@SNAP]; the snapshot is also created on the destination.
        src: Spec,
        /// Destination POOL/IMAGE.
        dst: Spec,
        /// Start snapshot; must exist on both images.
        #[arg(long)]
        from_snap: Option<String>,
        /// ceph.conf of the destination cluster (default: the source's connection).
        #[arg(long)]
        dst_conf: Option<PathBuf>,
        /// Client id on the destination cluster (default: the source's --id).
        #[arg(long)]
        dst_id: Option<String>,
        /// Operations in flight on each side.
        #[arg(long, default_value_t = rbd_core::export::DEFAULT_IN_FLIGHT)]
        in_flight: usize,
        /// Zero-detection block size.
        #[arg(long, default_value_t = rbd_core::export::DEFAULT_GRANULARITY)]
        granularity: usize,
        /// Compare whole objects.
        #[arg(long)]
        whole_object: bool,
    },
}

pub fn run(cluster: &Cluster, cmd: &Cmd, out: &Out) -> Result<()> {
    match cmd {
        Cmd::Export { spec, path, from_snap, cli_identical, whole_object, export_format, in_flight } => {
            let pool = Pool::open_ns(cluster, &spec.pool, &spec.namespace)?;
            let to_stdout = path.as_os_str() == "-";
            let bar = if to_stdout { indicatif::ProgressBar::hidden() } else { out.bar("export", 0) };
            let mut cb = |done: u64, total: u64| {
                bar.set_length(total);
                bar.set_position(done);
                ControlFlow::Continue(())
            };
            let mut progress = Progress::new(&mut cb);
            let stats = if *export_format == 2 {
                if spec.snap.is_some() || from_snap.is_some() {
                    return Err(Error::invalid(
                        "rbdlc",
                        "--export-format 2 exports every snapshot and the head: give POOL/IMAGE without @SNAP and \
                         no --from-snap",
                    ));
                }
                let img = Image::open_read_only(&pool, &spec.image)?;
                let mut e = ImageExport::new(&img);
                e.cli_identical(*cli_identical).in_flight(*in_flight);
                with_output(path, |w| e.run(w, &mut progress))?
            } else {
                let img = match &spec.snap {
                    Some(s) => Image::open_at_snap(&pool, &spec.image, s)?,
                    None => Image::open_read_only(&pool, &spec.image)?,
                };
                let mut e = DiffExport::new(&img);
                e.from_snap(from_snap.as_deref())
                    .cli_identical(*cli_identical)
                    .whole_object(*whole_object)
                    .in_flight(*in_flight);
                with_output(path, |w| e.run(w, &mut progress))?
            };
            drop(progress);
            bar.finish_and_clear();
            let v = export_json(spec, path, *cli_identical, &stats);
            report(out, to_stdout, v, |v| {
                format!(
                    "exported {spec} to {} ({}): {} records ({} data, {} zeros), {} stream in {:.2}s",
                    path.display(),
                    v["mode"].as_str().unwrap_or(""),
                    stats.records(),
                    bytes(stats.data_bytes),
                    bytes(stats.zero_bytes),
                    bytes(stats.stream_bytes),
                    stats.elapsed.as_secs_f64()
                )
            });
            Ok(())
        }
        Cmd::Import { path, spec, export_format, sparse_size, in_flight } => {
            let pool = Pool::open_ns(cluster, &spec.pool, &spec.namespace)?;
            if spec.snap.is_some() {
                return Err(Error::invalid(
                    "rbdlc",
                    "the import target is POOL/IMAGE (the stream names the snapshots)",
                ));
            }
            let from_stdin = path.as_os_str() == "-";
            let len = if from_stdin { None } else { std::fs::metadata(path).ok().map(|m| m.len()) };
            let bar = out.bar("import", len.unwrap_or(0));
            let mut cb = |done: u64, total: u64| {
                bar.set_length(total);
                bar.set_position(done);
                ControlFlow::Continue(())
            };
            let mut progress = Progress::new(&mut cb);
            let stats = if *export_format == 2 {
                let mut i = ImageImport::new(&pool, &spec.image);
                i.options(&ImageOptions::new()).sparse_size(*sparse_size).in_flight(*in_flight).expected_len(len);
                with_input(path, |r| i.run(r, &mut progress))?
            } else {
                let img = Image::open(&pool, &spec.image)?;
                let mut i = DiffImport::new(&img);
                i.sparse_size(*sparse_size).in_flight(*in_flight).expected_len(len);
                with_input(path, |r| i.run(r, &mut progress))?
            };
            drop(progress);
            bar.finish_and_clear();
            out.result(import_json(spec, &stats), |_| {
                format!(
                    "imported into {spec}: {} records, {} written, {} zeroed, snapshots created: [{}], {} read in {:.2}s",
                    stats.records,
                    bytes(stats.bytes_written),
                    bytes(stats.bytes_zeroed),
                    stats.snapshots.join(", "),
                    bytes(stats.stream_bytes),
                    stats.elapsed.as_secs_f64()
                )
            });
            Ok(())
        }
        Cmd::Transfer { src, dst, from_snap, dst_conf, dst_id, in_flight, granularity, whole_object } => {
            if dst.snap.is_some() {
                return Err(Error::invalid("rbdlc", "the destination is POOL/IMAGE; the snapshot comes from SRC@SNAP"));
            }
            let dst_cluster = match (dst_conf, dst_id) {
                (None, None) => cluster.clone(),
                (conf, id) => Cluster::shared(conf.as_deref(), id.as_deref().unwrap_or(cluster.client_id()))?,
            };
            let src_pool = Pool::open_ns(cluster, &src.pool, &src.namespace)?;
            let dst_pool = Pool::open_ns(&dst_cluster, &dst.pool, &dst.namespace)?;
            let src_img = match &src.snap {
                Some(s) => Image::open_at_snap(&src_pool, &src.image, s)?,
                None => Image::open_read_only(&src_pool, &src.image)?,
            };
            let created = !dst_pool.image_exists(&dst.image)?;
            if created {
                if from_snap.is_some() {
                    return Err(Error::new(
                        rbd_core::ErrorKind::NotFound,
                        "rbdlc",
                        format!("{dst} does not exist, so it cannot hold --from-snap; run a full transfer first"),
                    ));
                }
                let mut opts = ImageOptions::new();
                opts.order(src_img.stat()?.order);
                dst_pool.create_image(&dst.image, src_img.size()?, &opts)?;
            }
            let dst_img = Image::open(&dst_pool, &dst.image)?;
            let bar = out.bar("transfer", 0);
            let mut cb = |done: u64, total: u64| {
                bar.set_length(total);
                bar.set_position(done);
                ControlFlow::Continue(())
            };
            let stats = Transfer::new(&src_img, &dst_img)
                .from_snap(from_snap.as_deref())
                .in_flight(*in_flight)
                .granularity(*granularity)
                .whole_object(*whole_object)
                .dst_is_zero(created)
                .run(&mut Progress::new(&mut cb))?;
            bar.finish_and_clear();
            let v = json!({
                "src": src.to_string(), "dst": dst.to_string(), "dst_created": created,
                "from_snap": from_snap, "to_snap": src.snap,
                "bytes_read": stats.bytes_read, "bytes_written": stats.bytes_written,
                "bytes_zeroed": stats.bytes_zeroed, "bytes_skipped": stats.bytes_skipped,
                "extents": stats.extents, "bytes": stats.bytes_written + stats.bytes_zeroed,
                "elapsed_ms": ms(stats.elapsed),
            });
            out.result(v, |_| {
                format!(
                    "transferred {src} -> {dst}{}: read {}, wrote {}, zeroed {}, skipped {} ({} extents) in {:.2}s",
                    if created { " (created)" } else { "" },
                    bytes(stats.bytes_read),
                    bytes(stats.bytes_written),
                    bytes(stats.bytes_zeroed),
                    bytes(stats.bytes_skipped),
                    stats.extents,
                    stats.elapsed.as_secs_f64()
                )
            });
            Ok(())
        }
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// Runs `f` on stdout (`-`) or a newly created file (removed again if `f` fails, as the CLI
/// does).
fn with_output<T>(path: &Path, f: impl FnOnce(&mut dyn Write) -> Result<T>) -> Result<T> {
    if path.as_os_str() == "-" {
        let mut stdout = std::io::stdout().lock();
        return f(&mut stdout);
    }
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::from(e).with_message(format!("cannot create {}", path.display())))?;
    let res = f(&mut file);
    if res.is_err() {
        drop(file);
        let _ = std::fs::remove_file(path);
    }
    res
}

/// Runs `f` on stdin (`-`) or the file.
fn with_input<T>(path: &Path, f: impl FnOnce(&mut dyn std::io::Read) -> Result<T>) -> Result<T> {
    if path.as_os_str() == "-" {
        let mut stdin = std::io::stdin().lock();
        return f(&mut stdin);
    }
    let mut file =
        File::open(path).map_err(|e| Error::from(e).with_message(format!("cannot open {}", path.display())))?;
    f(&mut file)
}

fn export_json(spec: &Spec, path: &Path, cli_identical: bool, s: &ExportStats) -> Value {
    json!({
        "image": spec.to_string(), "path": path.display().to_string(),
        "mode": if cli_identical { "cli-identical" } else { "fine-grained" }, "cli_fallbacks": s.cli_fallbacks,
        "records": s.records(), "write_records": s.write_records, "zero_records": s.zero_records,
        "bytes": s.stream_bytes, "data_bytes": s.data_bytes, "zero_bytes": s.zero_bytes,
        "bytes_read": s.bytes_read, "extents": s.extents, "diffs": s.diffs, "elapsed_ms": ms(s.elapsed),
    })
}

fn import_json(spec: &Spec, s: &ImportStats) -> Value {
    json!({
        "image": spec.to_string(), "diffs": s.diffs, "from_snap": s.from_snap, "snapshots": s.snapshots,
        "protected": s.protected, "size": s.size, "records": s.records, "bytes": s.stream_bytes,
        "bytes_written": s.bytes_written, "bytes_zeroed": s.bytes_zeroed, "elapsed_ms": ms(s.elapsed),
    })
}

/// Prints the result; when the stream went to stdout, the result goes to stderr instead.
fn report(out: &Out, to_stdout: bool, v: Value, human: impl FnOnce(&Value) -> String) {
    if to_stdout {
        if out.json {
            eprintln!("{v}");
        } else {
            eprintln!("{}", human(&v));
        }
    } else {
        out.result(v, human);
    }
}
