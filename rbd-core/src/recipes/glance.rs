//! Glance (image service) recipes: upload, download and delete images the way
//! `glance_store`'s RBD driver does, with its failure modes fixed.
//!
//! ```no_run
//! use rbd_core::recipes::glance::{GlanceStore, HashAlgo};
//! # let cluster = rbd_core::Cluster::shared(None, "glance")?;
//! let images = rbd_core::Pool::open(&cluster, "images")?;
//! let mut store = GlanceStore::new(&images);
//! store.hash(HashAlgo::Sha512);
//! let file = std::fs::File::open("cirros.raw")?;
//! let up = store.upload("0f5e2a8b-6c8e-4d0c-9a6b-1f2e3d4c5b6a", file, None, &mut rbd_core::Progress::none())?;
//! println!("{} ({} bytes, md5 {:?})", up.location, up.bytes_written, up.checksum);
//! let mut back = store.download(&up.location)?;
//! std::io::copy(&mut back, &mut std::io::sink())?;
//! store.delete(&up.location)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What the recipes do (the `rbd` commands of the seed, §2.2)
//!
//! **Upload** (`glance.upload`, steps [`UPLOAD_STEPS`]):
//! `rbd create --order 23 images/<id>` (features from `rbd_default_features`, layering when
//! unset) → mark it half-made (image metadata [`crate::recipes::provenance::KEY`]) → write the
//! data with a bounded window of AIO writes, skipping all-zero pieces (the image is fresh, so
//! holes read as zeros) and hashing **every** byte (md5 `checksum` plus the `os_hash_value`
//! multihash, sha512 by default) → for an unknown size, grow while writing (Glance's doubling
//! steps, at most 8 GiB at a time) and trim to the bytes written → `rbd snap create
//! images/<id>@snap` → `rbd snap protect images/<id>@snap` → clear the mark. Any failure,
//! cancellation or size mismatch removes the snapshot and the image (Glance's `_delete_image`).
//! The resize state is per upload (Glance keeps it on the store singleton).
//!
//! **Delete** (`glance.delete`, steps [`DELETE_STEPS`]): refuses with [`ErrorKind::Busy`]
//! ("image has dependent clones: ...") **before changing anything** when `snap` has clones
//! (Glance used to remove `snap` and leave a broken image, bug 1954883); otherwise unprotect
//! (already unprotected is fine), `rbd snap rm`, `rbd rm`. Only when the remove fails because
//! of trash-namespace snapshots (a clone-v2 parent snapshot removed earlier while clones
//! exist) is the image moved to the RBD trash ([`DeleteOutcome::Trashed`]), as Glance does.
//!
//! **Download**: [`ImageDownload`] reads `image@snap` with read-ahead (a bounded AIO window on
//! a helper thread) and does not read holes from the OSDs at all (it asks `rbd_diff_iterate2`
//! which extents hold data and produces zeros for the rest).
//!
//! Names: the image is the Glance image id, the snapshot is always `snap` ([`SNAP_NAME`]).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::Read;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use librbd_sys as rbd_raw;

use crate::aio::{is_all_zero, zero_runs, AioReader, AioWriter};
use crate::cluster::Cluster;
use crate::diff::{DiffExtent, DiffOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::options::{Features, ImageOptions};
use crate::pool::Pool;
use crate::progress::Progress;
use crate::recipes::hashing::Hashers;
use crate::recipes::location::Location;
use crate::recipes::provenance::Marker;
use crate::recipes::saga::Saga;
use crate::snapshot::SnapNamespace;

/// The snapshot every Glance image carries (`DEFAULT_SNAPNAME`; not configurable in Glance).
pub const SNAP_NAME: &str = "snap";

/// Glance's default object order: 8 MiB objects (`rbd_store_chunk_size = 8`).
pub const DEFAULT_ORDER: u8 = 23;

/// The largest single growth step of an upload of unknown size (Glance: 8 GiB).
pub const MAX_RESIZE_STEP: u64 = 8 << 30;

/// Step names of the upload recipe, in order; failpoints are `glance.upload.<step>`.
pub const UPLOAD_STEPS: [&str; 7] = ["create", "mark", "write", "trim", "create_snap", "protect_snap", "unmark"];

/// Step names of the delete recipe, in order; failpoints are `glance.delete.<step>`.
pub const DELETE_STEPS: [&str; 5] = ["check_children", "unprotect", "remove_snap", "remove", "trash"];

/// The multihash algorithm of an upload (Glance's `hashing_algorithm`, `os_hash_value`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HashAlgo {
    /// sha256.
    Sha256,
    /// sha512 (Glance's default).
    #[default]
    Sha512,
    /// No multihash.
    None,
}

impl HashAlgo {
    /// The name Glance uses (`sha256`, `sha512`), or `none`.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha512 => "sha512",
            HashAlgo::None => "none",
        }
    }
}

impl std::str::FromStr for HashAlgo {
    type Err = Error;
    /// Parses `sha256`, `sha512` or `none` (case-insensitive).
    fn from_str(s: &str) -> Result<HashAlgo> {
        match s.to_ascii_lowercase().as_str() {
            "sha256" => Ok(HashAlgo::Sha256),
            "sha512" => Ok(HashAlgo::Sha512),
            "none" => Ok(HashAlgo::None),
            _ => Err(Error::invalid("hash_algo", format!("unknown hash algorithm {s:?} (sha256, sha512, none)"))),
        }
    }
}

/// The result of [`GlanceStore::upload`].
#[derive(Debug, Clone, PartialEq)]
pub struct UploadedImage {
    /// `rbd://<fsid>/<pool>/<image>/snap`.
    pub location: Location,
    /// Bytes read from the reader: the image size.
    pub bytes_written: u64,
    /// Bytes actually sent to the OSDs (the rest were all-zero pieces left as holes).
    pub bytes_stored: u64,
    /// md5 of all bytes, hex (Glance's `checksum`); `None` when turned off.
    pub checksum: Option<String>,
    /// The multihash of all bytes, hex (Glance's `os_hash_value`); `None` for [`HashAlgo::None`].
    pub multihash: Option<String>,
    /// The multihash algorithm.
    pub hash_algo: HashAlgo,
}

/// What [`GlanceStore::delete`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The snapshot and the image are gone.
    Removed,
    /// The image still had trash-namespace snapshots (clone-v2 parent snapshots kept for
    /// clones); it was moved to the RBD trash, where it stays until those clones are gone and
    /// the trash is purged.
    Trashed {
        /// The image id (its name in the trash).
        image_id: String,
    },
}

/// The Glance RBD store: one pool plus upload settings. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GlanceStore {
    pool: Pool,
    order: u8,
    features: Option<Features>,
    hash: HashAlgo,
    checksum: bool,
    thin: bool,
    sparse_size: usize,
    in_flight: usize,
    window_bytes: u64,
    hash_thread: bool,
}

impl GlanceStore {
    /// A store on `pool` (Glance's `rbd_store_pool`, usually `images`) with Glance's defaults:
    /// order 23, features from `rbd_default_features`, md5 checksum plus sha512 multihash,
    /// thin (zero pieces skipped at 64 KiB granularity), 8 writes in flight, hashing on helper
    /// threads.
    pub fn new(pool: &Pool) -> GlanceStore {
        GlanceStore {
            pool: pool.clone(),
            order: DEFAULT_ORDER,
            features: None,
            hash: HashAlgo::Sha512,
            checksum: true,
            thin: true,
            sparse_size: 64 << 10,
            in_flight: 8,
            window_bytes: 16 << 20,
            hash_thread: true,
        }
    }

    /// The pool images are uploaded to.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Object order of new images (12..=25; 23 = 8 MiB). Uploads also read in pieces of
    /// this size.
    pub fn order(&mut self, order: u8) -> &mut Self {
        self.order = order;
        self
    }

    /// Features of new images (default: the cluster's `rbd_default_features`, or layering).
    pub fn features(&mut self, features: Features) -> &mut Self {
        self.features = Some(features);
        self
    }

    /// The multihash algorithm ([`HashAlgo::None`] turns it off).
    pub fn hash(&mut self, algo: HashAlgo) -> &mut Self {
        self.hash = algo;
        self
    }

    /// Whether to compute the md5 checksum (default on). Turn it and the multihash off to
    /// measure raw upload speed.
    pub fn checksum(&mut self, on: bool) -> &mut Self {
        self.checksum = on;
        self
    }

    /// Whether all-zero pieces are skipped (left as holes) instead of written (default on;
    /// Glance's `rbd_thin_provisioning`).
    pub fn thin(&mut self, on: bool) -> &mut Self {
        self.thin = on;
        self
    }

    /// Granularity of zero detection inside a non-zero object-sized piece (default 64 KiB;
    /// 0 = only whole all-zero pieces are skipped, as Glance does).
    pub fn sparse_size(&mut self, bytes: usize) -> &mut Self {
        self.sparse_size = bytes;
        self
    }

    /// How many writes (or download reads) are in flight at once (default 8).
    pub fn in_flight(&mut self, n: usize) -> &mut Self {
        self.in_flight = n.max(1);
        self
    }

    /// Bytes of write buffers in flight (default 16 MiB: 2 writes of Glance's 8 MiB objects, or
    /// 4 of 4 MiB). Bounds upload memory whatever the object size; locally 16 MiB was as fast as
    /// 32 or 64 (the OSD is the bottleneck) and kept a 4 GiB upload's peak RSS at 113 MiB.
    pub fn window_bytes(&mut self, bytes: u64) -> &mut Self {
        self.window_bytes = bytes.max(1);
        self
    }

    /// Whether hashing runs on helper threads (one per hash: md5 and the multihash in
    /// parallel) while the calling thread reads and submits writes (default on). Off: every
    /// hash runs on the calling thread.
    pub fn hash_thread(&mut self, on: bool) -> &mut Self {
        self.hash_thread = on;
        self
    }

    /// Uploads `reader` as image `image_id` and returns its location and hashes. `size` is the
    /// declared size; `None` means unknown (the image grows while writing and is trimmed at
    /// the end). Reads happen on the calling thread; `progress` gets `(bytes, size)` after
    /// every piece and may cancel.
    ///
    /// Wraps `rbd_create4`, `rbd_metadata_set`, `rbd_aio_write2`, `rbd_resize2`,
    /// `rbd_snap_create2`, `rbd_snap_protect` and `rbd_metadata_remove`.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidArgument`] before anything is created for a bad image id or
    ///   order, and after reading (everything removed again) when the reader yields more or
    ///   fewer bytes than `size`.
    /// - [`ErrorKind::Exists`] when the image exists (it is left alone).
    /// - [`ErrorKind::Cancelled`] when `progress` cancels; [`ErrorKind::NoSpace`],
    ///   [`ErrorKind::PermissionDenied`], I/O errors from the reader.
    ///
    /// Every error after the create has removed the snapshot and the image again.
    pub fn upload(
        &self,
        image_id: &str,
        reader: impl Read,
        size: Option<u64>,
        progress: &mut Progress<'_>,
    ) -> Result<UploadedImage> {
        let pool = &self.pool;
        let _span = tracing::info_span!("glance.upload", pool = %pool.name(), image = image_id, size = ?size).entered();
        Pool::validate_image_name(image_id).map_err(|e| e.with_message(format!("invalid image id {image_id:?}")))?;
        if !(12..=25).contains(&self.order) {
            return Err(Error::invalid("glance.upload", format!("object order {} is not in 12..=25", self.order)));
        }
        let fsid = pool.cluster().fsid()?;
        let features = self.features.unwrap_or_else(|| configured_features(pool.cluster()));
        let mut opts = ImageOptions::new();
        opts.format(2).order(self.order).features(features);

        // One handle serves every step after the create (each open costs a round trip per
        // object it reads: ~60 ms at 5 ms RTT). Undos close it before removing the image, since
        // librbd refuses to remove an image that still has a watcher.
        let handle = OpenImage::default();
        let mut s = Saga::new("glance.upload");
        s.step(
            "create",
            || pool.create_image(image_id, size.unwrap_or(0), &opts),
            || {
                handle.close();
                remove_image_if_exists(pool, image_id)
            },
        )?;
        s.check("mark", || {
            handle.open(pool, image_id, |img| Marker::new("glance.upload", image_id, "create").apply(img))
        })?;
        let written = s.check("write", || handle.with(|img| self.write_data(img, reader, size, progress)))?;
        s.check("trim", || handle.with(|img| grow_or_trim(img, size, written.bytes)))?;
        s.step(
            "create_snap",
            || handle.with(|i| i.snap_create(SNAP_NAME)),
            || handle.undo(|i| remove_snap_on(i, SNAP_NAME)),
        )?;
        s.step(
            "protect_snap",
            || handle.with(|i| i.snap_protect(SNAP_NAME)),
            || handle.undo(|i| unprotect_tolerant(i, SNAP_NAME)),
        )?;
        s.check("unmark", || handle.with(Marker::clear))?;
        s.commit()?;
        tracing::info!(image = image_id, bytes = written.bytes, stored = written.stored, "uploaded");
        Ok(UploadedImage {
            location: Location::new(&fsid, pool.name(), image_id, SNAP_NAME),
            bytes_written: written.bytes,
            bytes_stored: written.stored,
            checksum: written.md5,
            multihash: written.multihash,
            hash_algo: self.hash,
        })
    }

    /// The write loop of [`GlanceStore::upload`]: read, hash, skip zeros, grow, write.
    fn write_data(
        &self,
        img: &Image,
        mut reader: impl Read,
        size: Option<u64>,
        progress: &mut Progress<'_>,
    ) -> Result<Written> {
        let piece = 1usize << self.order;
        let mut sink = Sink {
            w: AioWriter::new(img, self.in_flight).with_max_bytes(self.window_bytes),
            thin: self.thin,
            sparse_size: self.sparse_size,
            stored: 0,
        };
        let mut feed = Feed { size, image_size: size.unwrap_or(0), resize_step: piece as u64, off: 0 };
        let mut hashers = Hashers::new(self.checksum, self.hash);
        if hashers.is_empty() || !self.hash_thread {
            loop {
                let mut buf = sink.w.buffer();
                let Some(off) = feed.next(img, &mut reader, &mut buf, piece, progress)? else { break };
                hashers.update(&buf);
                let zero = sink.thin && is_all_zero(&buf);
                sink.put(off, buf, zero)?;
            }
        } else {
            // The calling thread reads and submits writes; each hash (md5, the multihash) runs
            // on its own thread over a shared piece, so hashing costs the slowest hash, not the
            // sum. A piece is written once every hasher has let go of it.
            std::thread::scope(|sc| -> Result<()> {
                let (ack_tx, acks) = mpsc::channel::<()>();
                let mut feeds = Vec::new();
                let mut helpers = Vec::new();
                for mut h in hashers.parts.drain(..) {
                    let (tx, rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(HASH_QUEUE);
                    let ack = ack_tx.clone();
                    helpers.push(sc.spawn(move || {
                        for buf in rx {
                            h.update(&buf);
                            drop(buf);
                            let _ = ack.send(());
                        }
                        h
                    }));
                    feeds.push(tx);
                }
                drop(ack_tx);
                let mut queue = VecDeque::new();
                let r = (|| {
                    loop {
                        let mut buf = sink.w.buffer();
                        let Some(off) = feed.next(img, &mut reader, &mut buf, piece, progress)? else { break };
                        let buf = Arc::new(buf);
                        for tx in &feeds {
                            tx.send(Arc::clone(&buf)).map_err(|_| hashing_stopped())?;
                        }
                        queue.push_back((off, buf));
                        write_hashed(&mut queue, &mut sink, &acks, HASH_QUEUE)?;
                    }
                    drop(feeds);
                    write_hashed(&mut queue, &mut sink, &acks, 0)
                })();
                // Join every helper (they stop once their channel closes) before returning.
                for h in helpers {
                    match h.join() {
                        Ok(h) => hashers.parts.push(h),
                        Err(panic) => std::panic::resume_unwind(panic),
                    }
                }
                r
            })?;
        }
        let (md5, multihash) = hashers.finish();
        if let Some(want) = size {
            if feed.off != want {
                return Err(size_mismatch(want, feed.off, "fewer"));
            }
        }
        let Sink { w, stored, .. } = sink;
        w.finish()?;
        Ok(Written { bytes: feed.off, stored, md5, multihash })
    }

    /// Opens `location` for reading: a [`std::io::Read`] over `image@snap` that reads ahead
    /// (up to [`GlanceStore::in_flight`] object-sized reads in flight, on a helper thread) and
    /// produces holes as zeros without reading them.
    ///
    /// Wraps `rbd_open_read_only`, `rbd_diff_iterate2` and `rbd_aio_read2`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a location on another cluster;
    /// [`ErrorKind::NotFound`] when the pool, image or snapshot does not exist.
    pub fn download(&self, location: &Location) -> Result<ImageDownload> {
        let _span = tracing::info_span!("glance.download", location = %location).entered();
        let pool = self.resolve(location, "glance.download")?;
        let img = match &location.snap {
            Some(snap) => Image::open_at_snap(&pool, &location.image, snap)?,
            None => Image::open_read_only(&pool, &location.image)?,
        };
        ImageDownload::start(img, self.in_flight, 1u64 << self.order.clamp(12, 25))
    }

    /// Deletes the image at `location` (its snapshot first). See the [module docs](self).
    ///
    /// Wraps `rbd_list_children3`, `rbd_snap_unprotect`, `rbd_snap_remove2`,
    /// `rbd_remove_with_progress` and (fallback) `rbd_trash_move`.
    ///
    /// # Errors
    /// - [`ErrorKind::Busy`] with "image has dependent clones: ..." when the snapshot has
    ///   clones (nothing changed), or when the image has watchers.
    /// - [`ErrorKind::HasSnapshots`] when the image has other user snapshots (nothing changed).
    /// - [`ErrorKind::NotFound`] when the image does not exist;
    ///   [`ErrorKind::InvalidArgument`] for a location on another cluster.
    pub fn delete(&self, location: &Location) -> Result<DeleteOutcome> {
        let _span = tracing::info_span!("glance.delete", location = %location).entered();
        let pool = &self.resolve(location, "glance.delete")?;
        let name = location.image.as_str();
        // Inspect through a read-only handle (no watch of our own), change nothing yet.
        let ro = Image::open_read_only(pool, name)?;
        let snaps = ro.snapshots()?;
        let user_snaps = || snaps.iter().filter(|i| i.namespace == SnapNamespace::User);
        let snap = location.snap.as_deref().filter(|s| user_snaps().any(|i| i.name == *s));
        let others: Vec<&str> = user_snaps().map(|i| i.name.as_str()).filter(|n| Some(*n) != snap).collect();
        if !others.is_empty() {
            return Err(Error::new(
                ErrorKind::HasSnapshots,
                "glance.delete",
                format!("image has other snapshots: {}", others.join(", ")),
            )
            .with_target(location.spec()));
        }
        let watchers = ro.watchers()?;
        if !watchers.is_empty() {
            return Err(Error::new(
                ErrorKind::Busy,
                "glance.delete",
                format!("image is open by {} client(s)", watchers.len()),
            )
            .with_target(location.spec()));
        }
        let image_id = ro.id()?;

        let mut s = Saga::new("glance.delete");
        let was_protected = s.check("check_children", || match snap {
            Some(snap) => {
                check_no_clones(&ro, snap)?;
                ro.snap_is_protected(snap)
            }
            None => Ok(false),
        })?;
        drop(ro);
        if let Some(snap) = snap {
            s.step(
                "unprotect",
                || if was_protected { unprotect_tolerant(&Image::open(pool, name)?, snap) } else { Ok(()) },
                move || if was_protected { protect_if_exists(pool, name, snap) } else { Ok(()) },
            )?;
            s.check("remove_snap", || remove_snap_if_exists(pool, name, snap))?;
        }
        let removed = s.check("remove", || match pool.remove_image(name) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::HasSnapshots && only_trash_snaps(pool, name)? => {
                tracing::info!(image = name, "image has trash-namespace snapshots; moving it to the trash");
                Ok(false)
            }
            Err(e) => Err(e),
        })?;
        if !removed {
            s.check("trash", || pool.trash_move(name, std::time::Duration::ZERO))?;
        }
        s.commit()?;
        Ok(if removed { DeleteOutcome::Removed } else { DeleteOutcome::Trashed { image_id } })
    }

    /// The pool of `location` (the store's pool for the legacy form), after checking that the
    /// location belongs to this cluster.
    fn resolve(&self, location: &Location, op: &'static str) -> Result<Pool> {
        if let Some(fsid) = &location.fsid {
            let ours = self.pool.cluster().fsid()?;
            if !fsid.eq_ignore_ascii_case(&ours) {
                return Err(Error::invalid(op, format!("location {location} is on cluster {fsid}, not {ours}")));
            }
        }
        match &location.pool {
            Some(p) if p != self.pool.name() => Pool::open(self.pool.cluster(), p),
            _ => Ok(self.pool.clone()),
        }
    }
}

/// Fails with [`ErrorKind::Busy`] ("image has dependent clones: pool/image, ...") when `snap` of
/// `img` has clones. When this client may not list them (children in pools it cannot read), a
/// parent that has clone-v2 children (`RBD_OPERATION_FEATURE_CLONE_PARENT`) counts as busy too.
fn check_no_clones(img: &Image, snap: &str) -> Result<()> {
    let busy = |what: String| {
        Error::new(ErrorKind::Busy, "glance.delete", format!("image has dependent clones: {what}"))
            .with_target(format!("{}@{snap}", img.spec()))
    };
    match img.children_of_snap(snap) {
        Ok(children) if children.is_empty() => Ok(()),
        Ok(children) => {
            let names: Vec<String> = children
                .iter()
                .map(|c| {
                    let ns = if c.pool_namespace.is_empty() { String::new() } else { format!("{}/", c.pool_namespace) };
                    format!("{}/{ns}{}{}", c.pool, c.image, if c.trash { " (in trash)" } else { "" })
                })
                .collect();
            Err(busy(names.join(", ")))
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            let clone_parent = u64::from(rbd_raw::RBD_OPERATION_FEATURE_CLONE_PARENT);
            if img.op_features()? & clone_parent != 0 {
                Err(busy("clones exist in pools this client cannot list".into()).with_source(e))
            } else {
                Ok(())
            }
        }
        Err(e) => Err(e),
    }
}

/// True when every snapshot left on `pool/name` is in the trash namespace.
fn only_trash_snaps(pool: &Pool, name: &str) -> Result<bool> {
    let snaps = Image::open_read_only(pool, name)?.snapshots()?;
    Ok(!snaps.is_empty() && snaps.iter().all(|s| s.namespace == SnapNamespace::Trash))
}

/// What the write loop produced.
struct Written {
    bytes: u64,
    stored: u64,
    md5: Option<String>,
    multihash: Option<String>,
}

/// The reading side of an upload: fills object-sized pieces, enforces the declared size and
/// grows the image ahead of the writes when the size is unknown.
struct Feed {
    size: Option<u64>,
    image_size: u64,
    resize_step: u64,
    off: u64,
}

impl Feed {
    /// Reads the next piece into `buf`; returns its offset, or `None` at the end of input.
    fn next(
        &mut self,
        img: &Image,
        reader: &mut impl Read,
        buf: &mut Vec<u8>,
        piece: usize,
        progress: &mut Progress<'_>,
    ) -> Result<Option<u64>> {
        if let Some(want) = self.size {
            // Never read more than one byte past the declared size.
            let left = want.saturating_sub(self.off).saturating_add(1);
            buf.resize(piece.min(usize::try_from(left).unwrap_or(piece)), 0);
        } else {
            buf.resize(piece, 0);
        }
        let n = read_full(reader, buf)?;
        buf.truncate(n);
        if n == 0 {
            return Ok(None);
        }
        let off = self.off;
        let end = off + n as u64;
        match self.size {
            Some(want) if end > want => return Err(size_mismatch(want, end, "more")),
            Some(_) => {}
            None => {
                while self.image_size < end {
                    // Glance's _resize_on_write: double the step (first growth 2 pieces).
                    self.resize_step = (self.resize_step * 2).min(MAX_RESIZE_STEP);
                    self.image_size += self.resize_step;
                    img.resize(self.image_size, false)?;
                }
            }
        }
        self.off = end;
        progress.report(end, self.size.unwrap_or(end))?;
        Ok(Some(off))
    }
}

fn size_mismatch(want: u64, got: u64, which: &str) -> Error {
    Error::invalid(
        "glance.upload",
        format!("size mismatch: the image was declared as {want} bytes but the input has {which} ({got} read)"),
    )
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let msg = format!("reading the image data: {e}");
                return Err(Error::from(e).with_message(msg));
            }
        }
    }
    Ok(n)
}

/// The writing side of an upload.
struct Sink<'a> {
    w: AioWriter<'a>,
    thin: bool,
    sparse_size: usize,
    stored: u64,
}

impl Sink<'_> {
    /// Writes one piece (or its non-zero runs); `zero` says the whole piece is zeros.
    fn put(&mut self, off: u64, buf: Vec<u8>, zero: bool) -> Result<()> {
        if zero {
            self.w.recycle(buf);
            return Ok(());
        }
        if !self.thin || self.sparse_size == 0 || self.sparse_size >= buf.len() {
            self.stored += buf.len() as u64;
            return self.w.write(off, buf);
        }
        let runs: Vec<(usize, usize, bool)> = zero_runs(&buf, self.sparse_size).collect();
        if runs.len() == 1 {
            self.stored += buf.len() as u64;
            return self.w.write(off, buf);
        }
        for (start, len, is_zero) in runs {
            if !is_zero {
                let mut part = self.w.buffer();
                part.extend_from_slice(&buf[start..start + len]);
                self.stored += len as u64;
                self.w.write(off + start as u64, part)?;
            }
        }
        self.w.recycle(buf);
        Ok(())
    }
}

/// Pieces a hashing thread may have queued ahead of it.
const HASH_QUEUE: usize = 2;

fn hashing_stopped() -> Error {
    Error::new(ErrorKind::Io, "glance.upload", "a hashing thread stopped")
}

/// Writes the pieces at the front of `queue` that every hasher is done with; waits for the
/// hashers while more than `limit` pieces are queued.
fn write_hashed(
    queue: &mut VecDeque<(u64, Arc<Vec<u8>>)>,
    sink: &mut Sink<'_>,
    acks: &Receiver<()>,
    limit: usize,
) -> Result<()> {
    loop {
        while let Some((off, buf)) = queue.pop_front() {
            match Arc::try_unwrap(buf) {
                Ok(buf) => {
                    let zero = sink.thin && is_all_zero(&buf);
                    sink.put(off, buf, zero)?;
                }
                Err(buf) => {
                    queue.push_front((off, buf));
                    break;
                }
            }
        }
        if queue.len() <= limit {
            return Ok(());
        }
        // A hasher acknowledges each piece after dropping its reference.
        acks.recv().map_err(|_| hashing_stopped())?;
    }
}

/// One piece of a download, in order.
enum Piece {
    Data(Vec<u8>),
    Zero(u64),
}

/// A reader over an image (at a snapshot) returned by [`GlanceStore::download`].
///
/// A helper thread owns the image handle and keeps a bounded window of AIO reads in flight
/// over the extents that hold data; holes are produced as zeros and never read. Dropping the
/// reader stops the helper and waits for it.
pub struct ImageDownload {
    size: u64,
    pos: u64,
    data_bytes: u64,
    rx: Option<Receiver<Result<Piece>>>,
    recycle: Sender<Vec<u8>>,
    cur: Option<(Piece, usize)>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ImageDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageDownload").field("size", &self.size).field("pos", &self.pos).finish()
    }
}

impl ImageDownload {
    fn start(img: Image, in_flight: usize, piece: u64) -> Result<ImageDownload> {
        let size = img.size()?;
        let opts = DiffOptions { include_parent: true, whole_object: false };
        let data: Vec<DiffExtent> =
            DiffExtent::coalesce(img.diff_extents(None, 0, size, opts)?).into_iter().filter(|e| e.exists).collect();
        let pieces = plan_pieces(&data, size, piece);
        let data_bytes = data.iter().map(|e| e.end().min(size).saturating_sub(e.offset)).sum();
        let (tx, rx) = mpsc::sync_channel::<Result<Piece>>(2);
        let (recycle, recycled) = mpsc::channel::<Vec<u8>>();
        let thread = std::thread::Builder::new()
            .name("rbd-download".into())
            .spawn(move || {
                let r = read_ahead(&img, in_flight, &pieces, &tx, &recycled);
                if let Err(e) = r {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| Error::from(e).with_message("starting the download thread"))?;
        Ok(ImageDownload { size, pos: 0, data_bytes, rx: Some(rx), recycle, cur: None, thread: Some(thread) })
    }

    /// The image size: how many bytes the reader yields.
    pub fn len(&self) -> u64 {
        self.size
    }

    /// True for an empty image.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Bytes yielded so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Bytes in extents that hold data (read from the OSDs); the rest are holes.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }
}

/// Splits `0..size` into data pieces (at most `piece` bytes, not crossing `piece` boundaries)
/// and zero runs, in order.
fn plan_pieces(data: &[DiffExtent], size: u64, piece: u64) -> Vec<(u64, u64, bool)> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    for e in data {
        let (start, end) = (e.offset.max(pos), e.end().min(size));
        if start >= end {
            continue;
        }
        if start > pos {
            out.push((pos, start - pos, false));
        }
        let mut off = start;
        while off < end {
            let boundary = (off / piece + 1) * piece;
            let len = boundary.min(end) - off;
            out.push((off, len, true));
            off += len;
        }
        pos = end;
    }
    if pos < size {
        out.push((pos, size - pos, false));
    }
    out
}

/// The download helper: submits reads ahead, sends pieces in order.
fn read_ahead(
    img: &Image,
    in_flight: usize,
    pieces: &[(u64, u64, bool)],
    tx: &SyncSender<Result<Piece>>,
    recycled: &Receiver<Vec<u8>>,
) -> Result<()> {
    let mut r = AioReader::new(img, in_flight);
    let mut submitted = 0;
    for &(off, len, data) in pieces {
        while let Ok(buf) = recycled.try_recv() {
            r.recycle(buf);
        }
        while submitted < pieces.len() && !r.is_full() {
            let (o, l, d) = pieces[submitted];
            if d {
                r.submit(o, usize::try_from(l).unwrap_or(usize::MAX))?;
            }
            submitted += 1;
        }
        let piece = if data {
            let (got_off, buf) =
                r.next().ok_or_else(|| Error::new(ErrorKind::Io, "glance.download", "read queue empty"))??;
            if got_off != off || buf.len() as u64 != len {
                return Err(Error::new(
                    ErrorKind::Io,
                    "glance.download",
                    format!("short read at {off}: {} of {len} bytes", buf.len()),
                )
                .with_target(img.spec()));
            }
            Piece::Data(buf)
        } else {
            Piece::Zero(len)
        };
        if tx.send(Ok(piece)).is_err() {
            return Ok(()); // the reader was dropped
        }
    }
    Ok(())
}

impl Read for ImageDownload {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match &mut self.cur {
                Some((Piece::Data(buf), at)) if *at < buf.len() => {
                    let n = out.len().min(buf.len() - *at);
                    out[..n].copy_from_slice(&buf[*at..*at + n]);
                    *at += n;
                    self.pos += n as u64;
                    return Ok(n);
                }
                Some((Piece::Zero(left), _)) if *left > 0 => {
                    let n = out.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    out[..n].fill(0);
                    *left -= n as u64;
                    self.pos += n as u64;
                    return Ok(n);
                }
                _ => {}
            }
            if let Some((Piece::Data(buf), _)) = self.cur.take() {
                let _ = self.recycle.send(buf);
            }
            let Some(rx) = &self.rx else { return Ok(0) };
            match rx.recv() {
                Ok(Ok(p)) => self.cur = Some((p, 0)),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) if self.pos == self.size => return Ok(0),
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Io,
                        "glance.download",
                        format!("the read-ahead thread stopped at byte {} of {}", self.pos, self.size),
                    )
                    .into())
                }
            }
        }
    }
}

impl Drop for ImageDownload {
    fn drop(&mut self) {
        // Dropping the receiver unblocks the helper's send; then wait for its reads.
        self.rx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The features new images get: `rbd_default_features` from the client configuration,
/// or layering when it is unset or 0 (what Glance and Nova do).
pub fn configured_features(cluster: &Cluster) -> Features {
    match cluster.conf_get("rbd_default_features").ok().as_deref().and_then(Features::from_names) {
        Some(f) if f.bits() != 0 => f,
        _ => Features::LAYERING,
    }
}

/// The one handle a recipe shares between its steps, after the step that creates the image.
///
/// Each open of an image costs round trips (header, id, object map): ~60 ms at 5 ms RTT, so a
/// recipe opens once. Steps borrow the handle only while they run; the undo of the create
/// closes it first, since librbd refuses to remove an image that still has a watcher.
#[derive(Default)]
pub(crate) struct OpenImage(RefCell<Option<Image>>);

impl OpenImage {
    /// Opens `pool/name`, runs `f` on it, and keeps the handle when `f` succeeds.
    pub(crate) fn open(&self, pool: &Pool, name: &str, f: impl FnOnce(&Image) -> Result<()>) -> Result<()> {
        let img = Image::open(pool, name)?;
        f(&img)?;
        *self.0.borrow_mut() = Some(img);
        Ok(())
    }

    /// Runs `f` on the open handle.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&Image) -> Result<T>) -> Result<T> {
        match self.0.borrow().as_ref() {
            Some(img) => f(img),
            None => Err(Error::new(ErrorKind::InvalidArgument, "recipe", "the image handle is already closed")),
        }
    }

    /// Runs an undo on the open handle; nothing to do when it is closed (the image is gone).
    pub(crate) fn undo(&self, f: impl FnOnce(&Image) -> Result<()>) -> Result<()> {
        match self.0.borrow().as_ref() {
            Some(img) => f(img),
            None => Ok(()),
        }
    }

    /// Closes the handle (if open).
    pub(crate) fn close(&self) {
        self.0.borrow_mut().take();
    }
}

/// After an upload of unknown size, shrinks the image to the bytes written (it grew in
/// object-sized steps while writing).
fn grow_or_trim(img: &Image, size: Option<u64>, written: u64) -> Result<()> {
    if size.is_none() && img.size()? != written {
        img.resize(written, true)?;
    }
    Ok(())
}

/// Removes `pool/name`; already gone is fine. (Undo helper.)
pub(crate) fn remove_image_if_exists(pool: &Pool, name: &str) -> Result<()> {
    match pool.remove_image(name) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes user snapshot `pool/image@snap` (unprotecting it first if needed); a missing image
/// or snapshot is fine. (Undo helper.)
pub(crate) fn remove_snap_if_exists(pool: &Pool, image: &str, snap: &str) -> Result<()> {
    match Image::open(pool, image) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        r => remove_snap_on(&r?, snap),
    }
}

/// Removes user snapshot `snap` of an open image (unprotecting it first if needed); a missing
/// snapshot is fine. (Undo helper.)
pub(crate) fn remove_snap_on(img: &Image, snap: &str) -> Result<()> {
    match img.snap_is_protected(snap) {
        Ok(true) => unprotect_tolerant(img, snap)?,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(false) => {}
    }
    match img.snap_remove(snap) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Protects `pool/image@snap` again; a missing image or snapshot, or one already protected, is
/// fine. (Undo helper.)
pub(crate) fn protect_if_exists(pool: &Pool, image: &str, snap: &str) -> Result<()> {
    let r = Image::open(pool, image).and_then(|img| img.snap_protect(snap));
    match r {
        Err(e) if !matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Busy) => Err(e),
        _ => Ok(()),
    }
}

/// Unprotects `pool/image@snap`; a missing image or snapshot, or one not protected, is fine.
/// (Undo helper.)
pub(crate) fn unprotect_if_protected(pool: &Pool, image: &str, snap: &str) -> Result<()> {
    match Image::open(pool, image) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        r => unprotect_tolerant(&r?, snap),
    }
}

/// `rbd_snap_unprotect`, treating "not protected" (EINVAL) and "no such snapshot" as done.
pub(crate) fn unprotect_tolerant(img: &Image, snap: &str) -> Result<()> {
    match img.snap_unprotect(snap) {
        Err(e) if !matches!(e.kind(), ErrorKind::InvalidArgument | ErrorKind::NotFound) => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_algo_names() {
        for a in [HashAlgo::Sha256, HashAlgo::Sha512, HashAlgo::None] {
            assert_eq!(a.name().parse::<HashAlgo>().unwrap(), a);
        }
        assert_eq!("SHA512".parse::<HashAlgo>().unwrap(), HashAlgo::Sha512);
        assert_eq!("md5".parse::<HashAlgo>().unwrap_err().kind(), ErrorKind::InvalidArgument);
        assert_eq!(HashAlgo::default(), HashAlgo::Sha512);
    }

    #[test]
    fn pieces_cover_the_image_in_order() {
        let e = |offset, len| DiffExtent { offset, len, exists: true };
        let p = plan_pieces(&[e(0, 10), e(25, 10), e(48, 100)], 60, 8);
        assert_eq!(
            p,
            vec![
                (0, 8, true),
                (8, 2, true),
                (10, 15, false),
                (25, 7, true),
                (32, 3, true),
                (35, 13, false),
                (48, 8, true),
                (56, 4, true),
            ]
        );
        assert_eq!(plan_pieces(&[], 20, 8), vec![(0, 20, false)]);
        assert_eq!(plan_pieces(&[], 0, 8), vec![]);
        let total: u64 = p.iter().map(|x| x.1).sum();
        assert_eq!(total, 60);
    }

    #[test]
    fn feed_reads_full_pieces_from_short_reads() {
        struct Dribble(Vec<u8>, usize);
        impl Read for Dribble {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = out.len().min(3).min(self.0.len() - self.1);
                out[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
                self.1 += n;
                Ok(n)
            }
        }
        let mut r = Dribble((0..20u8).collect(), 0);
        let mut buf = vec![0u8; 8];
        assert_eq!(read_full(&mut r, &mut buf).unwrap(), 8);
        assert_eq!(buf, (0..8u8).collect::<Vec<_>>());
        assert_eq!(read_full(&mut r, &mut buf).unwrap(), 8);
        assert_eq!(read_full(&mut r, &mut buf).unwrap(), 4);
        assert_eq!(read_full(&mut r, &mut buf).unwrap(), 0);
    }
}
