//! `rbdlc glance upload|download|delete`: the Glance RBD store recipes.

use std::fs::File;
use std::io::{Read, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use rbd_core::recipes::glance::{DeleteOutcome, GlanceStore, HashAlgo};
use rbd_core::recipes::location::Location;
use rbd_core::{Cluster, Error, Pool, Progress, Result};
use serde_json::json;

use crate::output::{bytes, Out};

/// `rbdlc glance` subcommands.
#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Upload FILE (or `-` for stdin) as images/ID@snap (thin, hashed, protected snapshot).
    Upload {
        /// The file to upload, or `-` for stdin.
        file: PathBuf,
        /// The Glance image id (the RBD image name).
        #[arg(long)]
        image_id: String,
        /// Pool of the Glance store.
        #[arg(long, default_value = "images")]
        pool: String,
        /// Declared size in bytes (suffixes K, M, G, T); default: the file's size, unknown for stdin.
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
        /// Multihash algorithm.
        #[arg(long, default_value = "sha512")]
        hash: HashAlgo,
        /// Skip the md5 checksum (with `--hash none`: no hashing at all).
        #[arg(long)]
        no_checksum: bool,
        /// Hash on the reading thread instead of a second thread.
        #[arg(long)]
        hash_inline: bool,
        /// Writes in flight.
        #[arg(long, default_value_t = 8)]
        in_flight: usize,
    },
    /// Download LOCATION (rbd://fsid/pool/image/snap) to FILE (or `-` for stdout).
    Download {
        /// The image location.
        location: Location,
        /// Where to write, or `-` for stdout.
        file: PathBuf,
        /// Pool for the legacy `rbd://image` form.
        #[arg(long, default_value = "images")]
        pool: String,
    },
    /// Delete the image at LOCATION (refused while clones of its snapshot exist).
    Delete {
        /// The image location.
        location: Location,
        /// Pool for the legacy `rbd://image` form.
        #[arg(long, default_value = "images")]
        pool: String,
    },
}

/// Parses a byte count with an optional binary suffix (`512`, `64M`, `10G`).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let (num, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("unknown size suffix in {s:?}")),
            };
            (&s[..i], shift)
        }
        _ => (s, 0),
    };
    let n: u64 = num.parse().map_err(|_| format!("not a size: {s:?}"))?;
    n.checked_shl(shift).filter(|v| v >> shift == n).ok_or_else(|| format!("size too large: {s:?}"))
}

pub fn run(cluster: &Cluster, cmd: &Cmd, out: &Out) -> Result<()> {
    match cmd {
        Cmd::Upload { file, image_id, pool, size, hash, no_checksum, hash_inline, in_flight } => {
            let pool = Pool::open(cluster, pool)?;
            let mut store = GlanceStore::new(&pool);
            store.hash(*hash).checksum(!no_checksum).hash_thread(!hash_inline).in_flight(*in_flight);
            let (reader, size): (Box<dyn Read>, Option<u64>) = if file.as_os_str() == "-" {
                (Box::new(std::io::stdin().lock()), *size)
            } else {
                let f = File::open(file).map_err(|e| Error::from(e).with_target(file.display().to_string()))?;
                let len = f.metadata().map_err(Error::from)?.len();
                (Box::new(f), Some(size.unwrap_or(len)))
            };
            let bar = out.bar("upload", size.unwrap_or(0));
            let mut cb = |done: u64, total: u64| {
                bar.set_length(total.max(done));
                bar.set_position(done);
                ControlFlow::Continue(())
            };
            let t0 = Instant::now();
            let up = store.upload(image_id, reader, size, &mut Progress::new(&mut cb))?;
            bar.finish_and_clear();
            let secs = t0.elapsed().as_secs_f64();
            let mibs = up.bytes_written as f64 / (1 << 20) as f64 / secs.max(1e-9);
            out.result(
                json!({"location": up.location.to_string(), "bytes_written": up.bytes_written,
                    "bytes_stored": up.bytes_stored, "checksum": up.checksum, "multihash": up.multihash,
                    "hash_algo": up.hash_algo.name(), "elapsed_ms": (secs * 1000.0) as u64, "mib_per_s": mibs}),
                |_| {
                    format!(
                        "{}\n  {} read, {} stored, {:.0} MiB/s\n  md5 {}\n  {} {}",
                        up.location,
                        bytes(up.bytes_written),
                        bytes(up.bytes_stored),
                        mibs,
                        up.checksum.as_deref().unwrap_or("-"),
                        up.hash_algo.name(),
                        up.multihash.as_deref().unwrap_or("-")
                    )
                },
            );
            Ok(())
        }
        Cmd::Download { location, file, pool } => {
            let store = GlanceStore::new(&Pool::open(cluster, pool)?);
            let mut r = store.download(location)?;
            let to_stdout = file.as_os_str() == "-";
            let mut w: Box<dyn Write> = if to_stdout {
                Box::new(std::io::stdout().lock())
            } else {
                Box::new(File::create(file).map_err(|e| Error::from(e).with_target(file.display().to_string()))?)
            };
            let bar = out.bar("download", r.len());
            let t0 = Instant::now();
            let mut buf = vec![0u8; 4 << 20];
            loop {
                let n = r.read(&mut buf).map_err(Error::from)?;
                if n == 0 {
                    break;
                }
                w.write_all(&buf[..n]).map_err(Error::from)?;
                bar.set_position(r.position());
            }
            w.flush().map_err(Error::from)?;
            bar.finish_and_clear();
            let v = json!({"location": location.to_string(), "bytes": r.len(), "data_bytes": r.data_bytes(),
                "elapsed_ms": t0.elapsed().as_millis() as u64});
            if to_stdout {
                // stdout carries the data; the result goes to stderr.
                if out.json {
                    eprintln!("{v}");
                }
            } else {
                out.result(v, |_| {
                    format!(
                        "{} -> {} ({}, {} read from data extents)",
                        location,
                        file.display(),
                        bytes(r.len()),
                        bytes(r.data_bytes())
                    )
                });
            }
            Ok(())
        }
        Cmd::Delete { location, pool } => {
            let store = GlanceStore::new(&Pool::open(cluster, pool)?);
            let outcome = store.delete(location)?;
            let (what, id) = match &outcome {
                DeleteOutcome::Removed => ("removed", None),
                DeleteOutcome::Trashed { image_id } => ("trashed", Some(image_id.clone())),
            };
            out.result(json!({"location": location.to_string(), "outcome": what, "trash_id": id}), |_| match &id {
                Some(id) => format!("{location}: moved to the trash as {id} (trash-namespace snapshots remain)"),
                None => format!("{location}: removed"),
            });
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("512"), Ok(512));
        assert_eq!(super::parse_size("64M"), Ok(64 << 20));
        assert_eq!(super::parse_size("1g"), Ok(1 << 30));
        assert!(super::parse_size("1X").is_err());
        assert!(super::parse_size("M").is_err());
        assert!(super::parse_size("99999999999T").is_err());
    }
}
