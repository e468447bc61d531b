//! The bounded AIO window: many image reads or writes in flight at once, a fixed number at a
//! time, with buffers owned by the window until librbd is done with them; plus the fast zero
//! detection ([`is_all_zero`], [`zero_runs`]) that upload, export, import and transfer share.
//!
//! ```no_run
//! use rbd_core::{AioReader, AioWriter, Image, Pool};
//! # let cluster = rbd_core::Cluster::shared(None, "admin")?;
//! # let pool = Pool::open(&cluster, "rbd")?;
//! let image = Image::open(&pool, "disk")?;
//! // Write 64 MiB in 4 MiB pieces, 8 in flight; all-zero pieces become write_zeroes.
//! let mut w = AioWriter::new(&image, 8);
//! for i in 0..16u64 {
//!     let mut buf = w.buffer();
//!     buf.resize(4 << 20, i as u8);
//!     if rbd_core::is_all_zero(&buf) {
//!         w.write_zeroes(i * (4 << 20), 4 << 20)?;
//!         w.recycle(buf);
//!     } else {
//!         w.write(i * (4 << 20), buf)?;
//!     }
//! }
//! let stats = w.finish()?; // drains, flushes, reports the first error
//! assert_eq!(stats.bytes_written, 15 * (4 << 20));
//!
//! // Read it back in order, 8 reads in flight.
//! let mut r = AioReader::new(&image, 8);
//! let (mut next_off, end) = (0u64, 64u64 << 20);
//! loop {
//!     while next_off < end && !r.is_full() {
//!         r.submit(next_off, 4 << 20)?;
//!         next_off += 4 << 20;
//!     }
//!     let Some(res) = r.next() else { break };
//!     let (off, data) = res?;
//!     for (start, len, zero) in rbd_core::zero_runs(&data, 64 << 10) {
//!         println!("{}..{} zero={zero}", off + start as u64, off + (start + len) as u64);
//!     }
//!     r.recycle(data);
//! }
//! # Ok::<(), rbd_core::Error>(())
//! ```
//!
//! # Design
//!
//! * **No completion callbacks.** Every completion is created with a NULL callback
//!   (`rbd_aio_create_completion(NULL, NULL, ..)`) and reaped by the submitting thread with
//!   `rbd_aio_wait_for_complete` → `rbd_aio_get_return_value` → `rbd_aio_release`, oldest first.
//!   No Rust code ever runs on librbd's finisher threads, so a completion can never block them,
//!   call back into librbd from the wrong thread, or unwind into C; and there is no shared state
//!   between threads to lock.
//! * **Bounded.** At most `max_in_flight` operations are outstanding in librbd; submitting the
//!   next one first waits for the oldest. Memory is `max_in_flight` buffers.
//! * **Buffers are owned by the window.** A write's `Vec<u8>` (or a read's destination buffer) is
//!   moved into the in-flight entry and only released or handed back after its completion is
//!   reaped. `Drop` waits for every outstanding operation before any buffer is freed, so
//!   dropping a window mid-flight is memory-safe (errors seen then are logged with `tracing`).
//!   Leaking a window with `mem::forget` leaks its buffers too, which is safe.
//! * **Buffer reuse.** Reaped buffers go to a small free list; take one with `buffer()` and give
//!   one back with `recycle()` so the hot loop does not allocate.

use std::collections::VecDeque;
use std::ffi::c_int;
use std::ptr;

use librbd_sys as rbd_raw;

use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;

/// One completion created with a NULL callback. Released exactly once, by [`Completion::reap`]
/// or [`Completion::reap_quiet`] (both consume it).
struct Completion(rbd_raw::rbd_completion_t);

impl Completion {
    fn new(op: &'static str, image: &Image) -> Result<Completion> {
        let mut c: rbd_raw::rbd_completion_t = ptr::null_mut();
        // SAFETY: NULL callback and argument (no code runs on librbd threads); `c` is written by
        // librbd and released by `reap` or `abandon`.
        let r = unsafe { rbd_raw::rbd_aio_create_completion(ptr::null_mut(), None, &mut c) };
        if r < 0 || c.is_null() {
            let errno = if r < 0 { r } else { -libc::ENOMEM };
            return Err(Error::from_errno(i64::from(errno), op, Some(image.spec()))
                .with_message("rbd_aio_create_completion failed"));
        }
        Ok(Completion(c))
    }

    /// Waits for completion, reads the return value and releases the completion.
    fn reap(self) -> isize {
        // SAFETY: self.0 is a live completion that was submitted; waiting on it is always
        // allowed, and after the wait librbd no longer touches the buffer it was given.
        unsafe { rbd_raw::rbd_aio_wait_for_complete(self.0) };
        // SAFETY: completed above.
        let r = unsafe { rbd_raw::rbd_aio_get_return_value(self.0) };
        // SAFETY: released exactly once; `self` is consumed.
        unsafe { rbd_raw::rbd_aio_release(self.0) };
        r
    }

    /// Releases a completion whose submission failed (librbd never started it).
    fn abandon(self) {
        // SAFETY: the submit call returned an error before dispatching, so nothing else holds a
        // reference that expects us to wait; release once.
        unsafe { rbd_raw::rbd_aio_release(self.0) };
    }
}

/// What one in-flight write-side operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteKind {
    Write,
    Zeroes,
    Discard,
    Flush,
}

impl WriteKind {
    fn op(self) -> &'static str {
        match self {
            WriteKind::Write => "rbd_aio_write2",
            WriteKind::Zeroes => "rbd_aio_write_zeroes",
            WriteKind::Discard => "rbd_aio_discard",
            WriteKind::Flush => "rbd_aio_flush",
        }
    }
}

struct WriteOp {
    comp: Completion,
    kind: WriteKind,
    off: u64,
    len: u64,
    /// The data librbd may still be reading; kept alive until `comp` is reaped.
    buf: Option<Vec<u8>>,
}

/// Counters of a finished (or running) [`AioWriter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AioStats {
    /// Bytes written with `rbd_aio_write2` (completed successfully).
    pub bytes_written: u64,
    /// Bytes zeroed with `rbd_aio_write_zeroes`.
    pub bytes_zeroed: u64,
    /// Bytes discarded with `rbd_aio_discard`.
    pub bytes_discarded: u64,
    /// Operations completed successfully (writes, zeroes, discards and flushes).
    pub ops: u64,
}

/// A bounded window of asynchronous writes to one image.
///
/// Keeps at most `max_in_flight` operations outstanding: each submit first waits for the
/// oldest operation when the window is full. See the [module docs](self) for why completions
/// have no callbacks and how buffers are kept alive.
///
/// The first failed operation fails the call that observed it (a later `write`, `flush_io` or
/// `finish`); after that every call returns the same error, because later data must not land
/// on an image whose earlier writes were lost.
///
/// ```no_run
/// # let cluster = rbd_core::Cluster::shared(None, "admin")?;
/// # let pool = rbd_core::Pool::open(&cluster, "rbd")?;
/// # let image = rbd_core::Image::open(&pool, "disk")?;
/// let mut w = rbd_core::AioWriter::new(&image, 16).with_flags(rbd_core::fadvise::NOCACHE);
/// w.write(0, vec![1u8; 4 << 20])?;
/// w.discard(4 << 20, 4 << 20)?;
/// let stats = w.finish()?;
/// assert_eq!(stats.ops, 3); // write, discard, final flush
/// # Ok::<(), rbd_core::Error>(())
/// ```
pub struct AioWriter<'a> {
    image: &'a Image,
    max_in_flight: usize,
    /// Data bytes allowed in flight (write buffers); zero writes and discards carry none.
    max_bytes: u64,
    bytes_in_flight: u64,
    flags: c_int,
    in_flight: VecDeque<WriteOp>,
    free: Vec<Vec<u8>>,
    stats: AioStats,
    failed: Option<(i64, &'static str, String)>,
}

// SAFETY: the writer holds `&Image` (Image is Sync) and completion pointers. A librbd completion
// is a heap object whose state is guarded by its own lock; waiting on it and releasing it may be
// done from any thread, and only the owner of the writer (one thread at a time, `&mut self`)
// does so. The buffers are plain Vecs.
unsafe impl Send for AioWriter<'_> {}

impl std::fmt::Debug for AioWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AioWriter")
            .field("image", &self.image.spec())
            .field("max_in_flight", &self.max_in_flight)
            .field("in_flight", &self.in_flight.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<'a> AioWriter<'a> {
    /// A window of at most `max_in_flight` operations (at least 1) on `image`.
    pub fn new(image: &'a Image, max_in_flight: usize) -> AioWriter<'a> {
        let max_in_flight = max_in_flight.max(1);
        AioWriter {
            image,
            max_in_flight,
            max_bytes: u64::MAX,
            bytes_in_flight: 0,
            flags: 0,
            in_flight: VecDeque::with_capacity(max_in_flight),
            free: Vec::new(),
            stats: AioStats::default(),
            failed: None,
        }
    }

    /// Also bounds the data in flight: a write waits while `bytes` of write buffers are still
    /// outstanding (one write is always allowed, however large). Operation count and bytes
    /// bound different things: many small writes hide latency, few large ones cost memory.
    #[must_use]
    pub fn with_max_bytes(mut self, bytes: u64) -> AioWriter<'a> {
        self.max_bytes = bytes.max(1);
        self
    }

    /// Sets `LIBRADOS_OP_FLAG_FADVISE_*` flags (see [`crate::fadvise`]) for every write and
    /// write-zeroes; `rbd import` uses `NOCACHE`.
    #[must_use]
    pub fn with_flags(mut self, flags: i32) -> AioWriter<'a> {
        self.flags = flags;
        self
    }

    /// The image written to.
    pub fn image(&self) -> &'a Image {
        self.image
    }

    /// Operations currently outstanding in librbd.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Counters of the operations completed so far.
    pub fn stats(&self) -> AioStats {
        self.stats
    }

    /// Bytes written so far (completed writes only).
    pub fn bytes_written(&self) -> u64 {
        self.stats.bytes_written
    }

    /// Operations completed so far.
    pub fn ops(&self) -> u64 {
        self.stats.ops
    }

    /// An empty buffer, reusing the allocation of a completed write when one is free.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_default()
    }

    /// Gives a buffer back for reuse by [`AioWriter::buffer`].
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.free.len() < self.max_in_flight + 1 && buf.capacity() > 0 {
            buf.clear();
            self.free.push(buf);
        }
    }

    fn failed_error(&self) -> Option<Error> {
        self.failed.as_ref().map(|(errno, op, msg)| {
            Error::from_errno(-errno.abs(), op, Some(self.image.spec()))
                .with_message(format!("{msg} (an earlier asynchronous operation failed)"))
        })
    }

    /// Reaps the oldest operation; records and returns its error.
    fn reap_oldest(&mut self) -> Result<()> {
        let Some(op) = self.in_flight.pop_front() else { return Ok(()) };
        self.bytes_in_flight -= op.buf.as_ref().map_or(0, |b| b.len() as u64);
        let r = op.comp.reap();
        let res = if r < 0 {
            let msg = match op.kind {
                WriteKind::Flush => "flush".to_string(),
                _ => format!("{} bytes at offset {}", op.len, op.off),
            };
            if self.failed.is_none() {
                self.failed = Some((r as i64, op.kind.op(), msg.clone()));
            }
            Err(Error::from_errno(r as i64, op.kind.op(), Some(self.image.spec())).with_message(msg))
        } else {
            self.stats.ops += 1;
            match op.kind {
                WriteKind::Write => self.stats.bytes_written += op.len,
                WriteKind::Zeroes => self.stats.bytes_zeroed += op.len,
                WriteKind::Discard => self.stats.bytes_discarded += op.len,
                WriteKind::Flush => {}
            }
            Ok(())
        };
        if let Some(buf) = op.buf {
            self.recycle(buf);
        }
        res
    }

    /// Waits until there is room for one more operation carrying `bytes` of data.
    fn make_room(&mut self, bytes: u64) -> Result<()> {
        if let Some(e) = self.failed_error() {
            return Err(e);
        }
        while self.in_flight.len() >= self.max_in_flight
            || (!self.in_flight.is_empty() && self.bytes_in_flight.saturating_add(bytes) > self.max_bytes)
        {
            self.reap_oldest()?;
        }
        Ok(())
    }

    fn submit(
        &mut self,
        kind: WriteKind,
        off: u64,
        len: u64,
        buf: Option<Vec<u8>>,
        call: impl FnOnce(rbd_raw::rbd_completion_t, *const u8) -> c_int,
    ) -> Result<()> {
        let bytes = buf.as_ref().map_or(0, |b| b.len() as u64);
        self.make_room(bytes)?;
        let comp = Completion::new(kind.op(), self.image)?;
        let data = buf.as_ref().map_or(ptr::null(), |b| b.as_ptr());
        let r = call(comp.0, data);
        if r < 0 {
            comp.abandon();
            return Err(Error::from_errno(i64::from(r), kind.op(), Some(self.image.spec()))
                .with_message(format!("submitting {len} bytes at offset {off}")));
        }
        self.bytes_in_flight += bytes;
        self.in_flight.push_back(WriteOp { comp, kind, off, len, buf });
        Ok(())
    }

    /// Writes `data` at `off` asynchronously (`rbd_aio_write2` with the flags from
    /// [`AioWriter::with_flags`]). The buffer is kept until the write completes, then reused.
    /// Empty writes are ignored.
    ///
    /// # Errors
    /// [`ErrorKind::OutOfRange`] when `off + len` overflows; otherwise the error of an earlier
    /// operation that failed while waiting for room ([`ErrorKind::ReadOnly`],
    /// [`ErrorKind::Shutdown`] when blocklisted, [`ErrorKind::InvalidArgument`] past the end,
    /// ...). On error `data` is dropped and not written.
    pub fn write(&mut self, off: u64, data: Vec<u8>) -> Result<()> {
        if data.is_empty() {
            self.recycle(data);
            return Ok(());
        }
        let len = data.len();
        check_range(self.image, "rbd_aio_write2", off, len as u64)?;
        let (image, flags) = (self.image.raw(), self.flags);
        self.submit(WriteKind::Write, off, len as u64, Some(data), |c, p| {
            // SAFETY: `p` points at `len` bytes owned by the in-flight entry, which keeps them
            // alive (the Vec's heap block does not move) until the completion is reaped.
            unsafe { rbd_raw::rbd_aio_write2(image, off, len, p.cast(), c, flags) }
        })
    }

    /// Zeroes `len` bytes at `off` asynchronously (`rbd_aio_write_zeroes`; thin: librbd punches
    /// holes or discards where it can).
    ///
    /// # Errors
    /// [`ErrorKind::OutOfRange`] when `len` does not fit a `size_t` or the range overflows; the
    /// errors listed on [`AioWriter::write`].
    pub fn write_zeroes(&mut self, off: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        check_range(self.image, "rbd_aio_write_zeroes", off, len)?;
        let n = usize::try_from(len).map_err(|_| {
            Error::new(ErrorKind::OutOfRange, "rbd_aio_write_zeroes", format!("length {len} too large"))
                .with_target(self.image.spec())
        })?;
        let (image, flags) = (self.image.raw(), self.flags);
        self.submit(WriteKind::Zeroes, off, len, None, |c, _| {
            // SAFETY: valid image handle and a fresh completion; no buffer is involved.
            unsafe { rbd_raw::rbd_aio_write_zeroes(image, off, n, c, 0, flags) }
        })
    }

    /// Discards `len` bytes at `off` asynchronously (`rbd_aio_discard`). Pacific ignores
    /// discards smaller than `rbd_discard_granularity_bytes` (64 KiB); use
    /// [`AioWriter::write_zeroes`] when zeros must read back.
    ///
    /// # Errors
    /// As [`AioWriter::write`].
    pub fn discard(&mut self, off: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        check_range(self.image, "rbd_aio_discard", off, len)?;
        let image = self.image.raw();
        self.submit(WriteKind::Discard, off, len, None, |c, _| {
            // SAFETY: valid image handle and a fresh completion; no buffer is involved.
            unsafe { rbd_raw::rbd_aio_discard(image, off, len, c) }
        })
    }

    /// Submits `rbd_aio_flush` and waits for it and every operation before it: when this
    /// returns `Ok`, everything written so far is durable.
    ///
    /// # Errors
    /// The first error of any operation, or of the flush.
    pub fn flush_io(&mut self) -> Result<()> {
        let image = self.image.raw();
        self.submit(WriteKind::Flush, 0, 0, None, |c, _| {
            // SAFETY: valid image handle and a fresh completion.
            unsafe { rbd_raw::rbd_aio_flush(image, c) }
        })?;
        self.drain()
    }

    /// Waits for every outstanding operation (without flushing). Returns the first error.
    ///
    /// # Errors
    /// The first error of any operation.
    pub fn drain(&mut self) -> Result<()> {
        let mut first: Option<Error> = None;
        while !self.in_flight.is_empty() {
            if let Err(e) = self.reap_oldest() {
                first.get_or_insert(e);
            }
        }
        match (first, self.failed_error()) {
            (Some(e), _) | (None, Some(e)) => Err(e),
            (None, None) => Ok(()),
        }
    }

    /// Drains the window, flushes (`rbd_aio_flush`) and returns the counters.
    ///
    /// # Errors
    /// The first error of any operation, including ones reported earlier by `write`.
    pub fn finish(mut self) -> Result<AioStats> {
        let _s =
            tracing::debug_span!("aio_finish", image = %self.image.spec(), in_flight = self.in_flight.len()).entered();
        let r = self.flush_io();
        if r.is_err() {
            // Reap what is left so the error comes from here, not from Drop's log.
            let _ = self.drain();
        }
        r.map(|()| self.stats)
    }
}

impl Drop for AioWriter<'_> {
    fn drop(&mut self) {
        // Wait for every operation before the buffers (owned by the entries) are freed.
        while let Some(op) = self.in_flight.pop_front() {
            let r = op.comp.reap();
            if r < 0 {
                tracing::warn!(image = %self.image.spec(), op = op.kind.op(), off = op.off, len = op.len,
                    errno = -r, "asynchronous write failed while dropping an unfinished AioWriter");
            }
        }
    }
}

fn check_range(image: &Image, op: &'static str, off: u64, len: u64) -> Result<()> {
    off.checked_add(len).map(|_| ()).ok_or_else(|| {
        Error::new(ErrorKind::OutOfRange, op, format!("offset {off} + length {len} overflows"))
            .with_target(image.spec())
    })
}

struct ReadOp {
    /// `None` once reaped (the result is then in `ret`).
    comp: Option<Completion>,
    ret: isize,
    off: u64,
    /// The destination librbd writes into until `comp` is reaped.
    buf: Vec<u8>,
}

/// A bounded window of asynchronous reads returning results in submission order.
///
/// [`AioReader::submit`] starts `rbd_aio_read2`; when `max_in_flight` reads are already
/// outstanding it first waits for the oldest (its data stays queued for `next`).
/// [`AioReader::next`] returns the oldest result, waiting for it if needed. Completions have no
/// callbacks (see the [module docs](self)).
///
/// ```no_run
/// # let cluster = rbd_core::Cluster::shared(None, "admin")?;
/// # let pool = rbd_core::Pool::open(&cluster, "rbd")?;
/// # let image = rbd_core::Image::open_read_only(&pool, "disk")?;
/// let mut r = rbd_core::AioReader::new(&image, 4).nocache(true);
/// r.submit(0, 4096)?;
/// r.submit(4096, 4096)?;
/// let (off, data) = r.next().unwrap()?;
/// assert_eq!((off, data.len()), (0, 4096));
/// # Ok::<(), rbd_core::Error>(())
/// ```
pub struct AioReader<'a> {
    image: &'a Image,
    max_in_flight: usize,
    /// Buffer bytes allowed in the queue (in flight plus reaped, not yet taken by `next`).
    max_bytes: u64,
    queued_bytes: u64,
    flags: c_int,
    queue: VecDeque<ReadOp>,
    /// How many entries at the front of `queue` are already reaped.
    reaped: usize,
    free: Vec<Vec<u8>>,
}

// SAFETY: as for AioWriter: `&Image` is Send because Image is Sync, completions may be waited on
// and released from any thread, and only the owner (through `&mut self`) touches them.
unsafe impl Send for AioReader<'_> {}

impl std::fmt::Debug for AioReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AioReader")
            .field("image", &self.image.spec())
            .field("max_in_flight", &self.max_in_flight)
            .field("in_flight", &self.in_flight())
            .field("pending", &self.queue.len())
            .finish()
    }
}

impl<'a> AioReader<'a> {
    /// A window of at most `max_in_flight` reads (at least 1) on `image`.
    pub fn new(image: &'a Image, max_in_flight: usize) -> AioReader<'a> {
        let max_in_flight = max_in_flight.max(1);
        AioReader {
            image,
            max_in_flight,
            max_bytes: u64::MAX,
            queued_bytes: 0,
            flags: 0,
            queue: VecDeque::with_capacity(max_in_flight),
            reaped: 0,
            free: Vec::new(),
        }
    }

    /// Also bounds the buffers held: [`AioReader::is_full`] turns true once `bytes` of reads
    /// are queued (in flight or waiting for [`AioReader::next`]), and `submit` waits for the
    /// oldest read while the reads in flight hold that much.
    #[must_use]
    pub fn with_max_bytes(mut self, bytes: u64) -> AioReader<'a> {
        self.max_bytes = bytes.max(1);
        self
    }

    /// Reads with `LIBRADOS_OP_FLAG_FADVISE_NOCACHE` (what `rbd export` does) when `yes`.
    #[must_use]
    pub fn nocache(mut self, yes: bool) -> AioReader<'a> {
        if yes {
            self.flags |= crate::image::fadvise::NOCACHE;
        } else {
            self.flags &= !crate::image::fadvise::NOCACHE;
        }
        self
    }

    /// Sets arbitrary `LIBRADOS_OP_FLAG_FADVISE_*` flags for every read.
    #[must_use]
    pub fn with_flags(mut self, flags: i32) -> AioReader<'a> {
        self.flags = flags;
        self
    }

    /// The image read from.
    pub fn image(&self) -> &'a Image {
        self.image
    }

    /// Reads outstanding in librbd (not yet completed and reaped).
    pub fn in_flight(&self) -> usize {
        self.queue.len() - self.reaped
    }

    /// Submitted reads whose results `next` has not returned yet (in flight or completed).
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// True when `max_in_flight` results (or the byte budget of
    /// [`AioReader::with_max_bytes`]) are pending: call [`AioReader::next`] before submitting
    /// more to keep memory bounded.
    pub fn is_full(&self) -> bool {
        self.queue.len() >= self.max_in_flight || self.queued_bytes >= self.max_bytes
    }

    /// Gives a buffer returned by `next` back for reuse by later reads.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.free.len() < self.max_in_flight + 1 && buf.capacity() > 0 {
            buf.clear();
            self.free.push(buf);
        }
    }

    /// Buffer bytes of the reads not reaped yet.
    fn in_flight_bytes(&self) -> u64 {
        self.queue.iter().skip(self.reaped).map(|op| op.buf.len() as u64).sum()
    }

    fn reap_front_unreaped(&mut self) {
        if let Some(op) = self.queue.get_mut(self.reaped) {
            if let Some(c) = op.comp.take() {
                op.ret = c.reap();
            }
            self.reaped += 1;
        }
    }

    /// Starts reading `len` bytes at `off` (`rbd_aio_read2`). If `max_in_flight` reads are
    /// outstanding in librbd, first waits for the oldest one.
    ///
    /// # Errors
    /// [`ErrorKind::OutOfRange`] when the range overflows; an error from starting the read.
    /// Errors of the read itself (for example [`ErrorKind::InvalidArgument`] past the end of
    /// the image) are returned by `next` in order.
    pub fn submit(&mut self, off: u64, len: usize) -> Result<()> {
        check_range(self.image, "rbd_aio_read2", off, len as u64)?;
        while self.in_flight() >= self.max_in_flight
            || (self.in_flight() > 0 && self.in_flight_bytes().saturating_add(len as u64) > self.max_bytes)
        {
            self.reap_front_unreaped();
        }
        let mut buf = self.free.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len, 0);
        let comp = Completion::new("rbd_aio_read2", self.image)?;
        // SAFETY: `buf` has `len` initialised bytes; it is moved into the queue entry below and
        // not touched (or freed) until the completion is reaped.
        let r =
            unsafe { rbd_raw::rbd_aio_read2(self.image.raw(), off, len, buf.as_mut_ptr().cast(), comp.0, self.flags) };
        if r < 0 {
            comp.abandon();
            self.recycle(buf);
            return Err(Error::from_errno(i64::from(r), "rbd_aio_read2", Some(self.image.spec()))
                .with_message(format!("submitting {len} bytes at offset {off}")));
        }
        self.queued_bytes += len as u64;
        self.queue.push_back(ReadOp { comp: Some(comp), ret: 0, off, buf });
        Ok(())
    }

    /// The oldest submitted read: `(offset, data)`, waiting for it if needed. `data` is short
    /// when the read ran past the end of the image. `None` when nothing is pending.
    ///
    /// This is an inherent method, not `Iterator::next`: the reader is a window you keep
    /// submitting to.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Result<(u64, Vec<u8>)>> {
        if self.queue.is_empty() {
            return None;
        }
        if self.reaped == 0 {
            self.reap_front_unreaped();
        }
        let mut op = self.queue.pop_front()?;
        self.reaped -= 1;
        self.queued_bytes -= op.buf.len() as u64;
        if op.ret < 0 {
            let e = Error::from_errno(op.ret as i64, "rbd_aio_read2", Some(self.image.spec())).with_message(format!(
                "{} bytes at offset {}",
                op.buf.len(),
                op.off
            ));
            self.recycle(op.buf);
            return Some(Err(e));
        }
        op.buf.truncate(op.ret as usize);
        Some(Ok((op.off, op.buf)))
    }
}

impl Drop for AioReader<'_> {
    fn drop(&mut self) {
        // librbd may still be writing into the buffers: wait for every read first.
        for op in &mut self.queue {
            if let Some(c) = op.comp.take() {
                let r = c.reap();
                if r < 0 {
                    tracing::debug!(image = %self.image.spec(), off = op.off, errno = -r,
                        "asynchronous read failed while dropping an AioReader");
                }
            }
        }
    }
}

/// True when every byte of `buf` is zero. Checks 16 bytes at a time (256 per early-exit test),
/// which the compiler vectorises.
///
/// ```
/// assert!(rbd_core::is_all_zero(&[0u8; 4096]));
/// let mut b = vec![0u8; 4096];
/// b[4095] = 1;
/// assert!(!rbd_core::is_all_zero(&b));
/// assert!(rbd_core::is_all_zero(&[]));
/// ```
pub fn is_all_zero(buf: &[u8]) -> bool {
    // SAFETY: every bit pattern is a valid u128, and align_to only reinterprets the aligned
    // middle of the slice; the unaligned head and tail stay as bytes.
    let (head, mid, tail) = unsafe { buf.align_to::<u128>() };
    if head.iter().any(|&b| b != 0) {
        return false;
    }
    let mut blocks = mid.chunks_exact(16);
    for block in &mut blocks {
        if block.iter().fold(0u128, |acc, &w| acc | w) != 0 {
            return false;
        }
    }
    if blocks.remainder().iter().any(|&w| w != 0) {
        return false;
    }
    tail.iter().all(|&b| b == 0)
}

/// Splits `buf` into maximal runs of all-zero and not-all-zero chunks of `granularity` bytes
/// (chunks aligned to the start of `buf`; the last chunk may be shorter). Yields
/// `(start, len, is_zero)`; consecutive runs always alternate, and together they cover `buf`
/// exactly. A `granularity` of 0 treats the whole buffer as one chunk.
///
/// This is the fine-grained zero detection that export, upload, import and transfer use to
/// turn zero chunks into holes (`write_zeroes`) instead of data.
///
/// ```
/// let mut buf = vec![0u8; 10];
/// buf[4] = 7;
/// let runs: Vec<_> = rbd_core::zero_runs(&buf, 4).collect();
/// assert_eq!(runs, vec![(0, 4, true), (4, 4, false), (8, 2, true)]);
/// ```
pub fn zero_runs(buf: &[u8], granularity: usize) -> ZeroRuns<'_> {
    let granularity = if granularity == 0 { buf.len().max(1) } else { granularity };
    ZeroRuns { buf, granularity, pos: 0 }
}

/// The iterator returned by [`zero_runs`].
#[derive(Debug, Clone)]
pub struct ZeroRuns<'b> {
    buf: &'b [u8],
    granularity: usize,
    pos: usize,
}

impl ZeroRuns<'_> {
    fn chunk_at(&self, pos: usize) -> &[u8] {
        let end = pos.saturating_add(self.granularity).min(self.buf.len());
        &self.buf[pos..end]
    }
}

impl Iterator for ZeroRuns<'_> {
    type Item = (usize, usize, bool);

    fn next(&mut self) -> Option<(usize, usize, bool)> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let start = self.pos;
        let first = self.chunk_at(start);
        let zero = is_all_zero(first);
        let mut end = start + first.len();
        while end < self.buf.len() {
            let c = self.chunk_at(end);
            if is_all_zero(c) != zero {
                break;
            }
            end += c.len();
        }
        self.pos = end;
        Some((start, end - start, zero))
    }
}

impl std::iter::FusedIterator for ZeroRuns<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_runs(buf: &[u8], g: usize) -> Vec<(usize, usize, bool)> {
        let g = if g == 0 { buf.len().max(1) } else { g };
        let mut out: Vec<(usize, usize, bool)> = Vec::new();
        for (i, c) in buf.chunks(g).enumerate() {
            let z = c.iter().all(|&b| b == 0);
            match out.last_mut() {
                Some(last) if last.2 == z => last.1 += c.len(),
                _ => out.push((i * g, c.len(), z)),
            }
        }
        out
    }

    #[test]
    fn is_all_zero_every_position_and_alignment() {
        let backing = vec![0u8; 1200];
        for start in 0..17 {
            for len in [0usize, 1, 15, 16, 17, 255, 256, 257, 511, 1000] {
                let s = &backing[start..start + len];
                assert!(is_all_zero(s), "start {start} len {len}");
                for pos in 0..len {
                    let mut v = s.to_vec();
                    v[pos] = 0x80;
                    assert!(!is_all_zero(&v), "start {start} len {len} pos {pos}");
                }
            }
        }
        // Misaligned views with one set byte.
        let mut b = vec![0u8; 1100];
        b[1099] = 1;
        for start in 0..20 {
            assert!(!is_all_zero(&b[start..]));
            assert!(is_all_zero(&b[start..1099]));
        }
    }

    #[test]
    fn zero_runs_basic_cases() {
        assert_eq!(zero_runs(&[], 4096).count(), 0);
        assert_eq!(zero_runs(&[0u8; 8192], 4096).collect::<Vec<_>>(), vec![(0, 8192, true)]);
        assert_eq!(zero_runs(&[1u8; 8192], 4096).collect::<Vec<_>>(), vec![(0, 8192, false)]);
        // One non-zero byte makes its whole chunk data.
        let mut b = vec![0u8; 4 * 4096];
        b[4096 + 10] = 1;
        assert_eq!(
            zero_runs(&b, 4096).collect::<Vec<_>>(),
            vec![(0, 4096, true), (4096, 4096, false), (8192, 8192, true)]
        );
        // Granularity larger than the buffer: one run.
        assert_eq!(zero_runs(&b, 1 << 20).collect::<Vec<_>>(), vec![(0, b.len(), false)]);
        // Granularity 0: whole buffer.
        assert_eq!(zero_runs(&[0u8; 10], 0).collect::<Vec<_>>(), vec![(0, 10, true)]);
        // Granularity 1: byte runs.
        assert_eq!(zero_runs(&[0, 0, 1, 1, 0], 1).collect::<Vec<_>>(), vec![(0, 2, true), (2, 2, false), (4, 1, true)]);
    }

    #[test]
    fn zero_runs_short_tail() {
        // 2.5 chunks, tail zero after data.
        let mut b = vec![0u8; 10];
        b[5] = 1;
        assert_eq!(zero_runs(&b, 4).collect::<Vec<_>>(), vec![(0, 4, true), (4, 4, false), (8, 2, true)]);
        // Tail is the only data.
        let mut b = vec![0u8; 10];
        b[9] = 1;
        assert_eq!(zero_runs(&b, 4).collect::<Vec<_>>(), vec![(0, 8, true), (8, 2, false)]);
        // Tail zero merges with preceding zero chunks.
        let mut b = vec![0u8; 10];
        b[0] = 1;
        assert_eq!(zero_runs(&b, 4).collect::<Vec<_>>(), vec![(0, 4, false), (4, 6, true)]);
        // Buffer shorter than one chunk.
        assert_eq!(zero_runs(&[0u8; 3], 4096).collect::<Vec<_>>(), vec![(0, 3, true)]);
        assert_eq!(zero_runs(&[0, 0, 9], 4096).collect::<Vec<_>>(), vec![(0, 3, false)]);
    }

    #[test]
    fn zero_runs_matches_naive_and_covers_exactly() {
        // Deterministic pseudo-random sparse buffers.
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for round in 0..200 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 3000) as usize;
            let g = [1usize, 3, 7, 16, 64, 512, 1000, 4096][round % 8];
            let mut buf = vec![0u8; len];
            let mut y = x;
            for _ in 0..(x % 6) {
                y = y.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                if len > 0 {
                    buf[(y >> 33) as usize % len] = (y & 0xff) as u8 | 1;
                }
            }
            let runs: Vec<_> = zero_runs(&buf, g).collect();
            assert_eq!(runs, naive_runs(&buf, g), "len {len} g {g}");
            let mut pos = 0;
            for w in runs.windows(2) {
                assert_ne!(w[0].2, w[1].2, "runs alternate");
            }
            for (s, l, z) in &runs {
                assert_eq!(*s, pos);
                assert!(*l > 0);
                assert_eq!(is_all_zero(&buf[*s..s + l]), *z);
                pos += l;
            }
            assert_eq!(pos, len);
        }
    }
}
