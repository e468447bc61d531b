//! The cluster-wide flatten throttle: at most N flattens at once across every process and host
//! that uses it, with crashed holders detected and fenced.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use rbd_core::recipes::{flatten, throttle::Throttle};
//! # let cluster = rbd_core::Cluster::shared(None, "cinder")?;
//! let volumes = rbd_core::Pool::open(&cluster, "volumes")?;
//! let mut throttle = Throttle::new(&volumes, 2)?; // 2 slots cluster-wide
//! throttle.wait(Some(Duration::from_secs(600)));
//! flatten::set_default_gate(Arc::new(throttle.clone())); // every recipe's flatten now waits for a slot
//! {
//!     let slot = throttle.acquire(Some(Duration::from_secs(30)))?; // or hold one explicitly
//!     println!("holding slot {}", slot.slot());
//! } // released here
//! for s in throttle.slots()? {
//!     println!("slot {}: {:?} since {:?}", s.slot, s.holder, s.since);
//! }
//! # Ok::<(), rbd_core::Error>(())
//! ```
//!
//! Cinder bounds flattens with a per-process semaphore (`rbd_concurrent_flatten_operations`,
//! §5 row 8 of the reference); nothing in OpenStack bounds them across processes (row 9). Seed
//! 004 serialises flattens across compute nodes with `lock_acquire` on one lock image. This
//! module is the general form of that seed.
//!
//! # Design: RBD managed exclusive locks on N slot images, plus a heartbeat lease
//!
//! * **Slots** are N tiny images `<prefix>.<i>` (default prefix [`DEFAULT_PREFIX`], i = 0..N)
//!   in one pool, created on demand with the `exclusive-lock` feature (4 KiB, no data). A
//!   holder owns slot i while it holds the image's managed lock after an explicit
//!   `rbd_lock_acquire` — which, on Pacific, turns off librbd's cooperative lock hand-over: any
//!   other client's `lock_acquire` fails with EROFS until the owner releases (verified).
//! * **Polling without blocking**: when the owner is **dead**, another client's
//!   `rbd_lock_acquire` does not fail fast: it blocks until the OSD drops the dead owner's watch
//!   (~30 s), then librbd breaks the lock itself (verified: 30.05 s). So waiters poll on
//!   **read-only** handles (no watch, no lock traffic): the managed lock is the header object's
//!   cls_lock `rbd_lock` with an `auto <n>` cookie, read with `rados_list_lockers` (one OSD
//!   read; `rbd_list_lockers` answers from the handle's cached header, which a read-only handle
//!   never refreshes — a released slot looked held forever — and `rbd_lock_get_owners` needs a
//!   read-write handle: EINVAL on a read-only one), and `rbd_metadata_get` (a direct cls call)
//!   reads the heartbeat. A read-write handle is opened only to take a slot
//!   that looks free (a race with a live new owner fails fast with EROFS) or to break a stale one.
//! * **Heartbeat**: while a [`SlotGuard`] lives, a background thread rewrites the slot image's
//!   metadata key [`HEARTBEAT_KEY`] every `heartbeat` (default 2 s) with
//!   `{"t": unix ms, "seq": n, "since": unix ms, "owner": "<lock owner address>", "holder": "<host>:<pid>[:label]"}`.
//!   `rbd_metadata_set` is a maintenance operation that needs the exclusive lock, so **only the
//!   current owner can write it**: a fenced zombie cannot fake liveness.
//! * **Takeover**: a waiter that finds a slot held notes the pair (lock owner, heartbeat value)
//!   and the time on **its own monotonic clock**. When the same pair is still there after
//!   `lease` (default 10 s) the holder is dead (or cut off): the waiter calls `rbd_lock_break`
//!   with that owner, which **blocklists** the owner's client (`rbd_blocklist_on_break_lock`,
//!   default true) so every later OSD operation of the zombie — including its flatten — fails
//!   with ESHUTDOWN, and then acquires the slot. The break names the owner it judged, and librbd
//!   refuses to break a lock whose owner has changed in between, so a slot that was re-taken
//!   meanwhile is never broken by mistake. No clock comparison between hosts is involved,
//!   so clock skew cannot cause a takeover.
//!
//!   Why not RADOS object locks with a lease (`rados_lock_exclusive` with a duration)? Their
//!   expiry is judged by the OSD, which is good, but an expired lock does **not** fence the old
//!   holder: a stalled process that wakes up would keep flattening while the next holder runs,
//!   exceeding N. Fencing would need an extra blocklist call and the holder's address, which
//!   `rbd_lock_break` already does atomically with the break. RBD locks also show up in
//!   `rbd lock ls`/`rbd status`, which operators know.
//!
//! * **Takeover bound**: a holder killed at time K wrote its last heartbeat at W ≥ K − heartbeat.
//!   A waiter polling at least every `backoff_max` (default 1 s) first sees that value by
//!   W + backoff_max and breaks after `lease` more, at its next poll: takeover by
//!   **K + lease + 2 × backoff_max** (default 12 s, plus the break/blocklist round trip); a waiter
//!   that starts later needs `lease + backoff_max` from its start. Measured on the dev cluster
//!   (test `recipes_throttle::killed_holder_is_fenced_and_its_slot_taken_over`, a waiter
//!   started right after SIGKILL, defaults): **10.2–10.9 s** from the kill to holding the slot,
//!   the dead holder's address in `ceph osd blocklist ls`. Without the lease, librbd itself
//!   breaks a dead owner's lock once the OSD drops its watch (`osd_client_watch_timeout`,
//!   measured 30.05 s); the lease makes this ~3× faster.
//! * **Safety** (a live holder is never taken over): a live holder changes the heartbeat every
//!   `heartbeat`, and `lease` must be at least 3 × `heartbeat` (checked), so a waiter sees a
//!   change well within `lease` unless the holder cannot reach the cluster for that long — and
//!   then fencing it is the point. A holder whose heartbeat fails because it lost the lock marks
//!   its guard lost ([`SlotGuard::is_lost`]); a flatten running through [`FlattenGate`] is then
//!   cancelled, and fails with [`ErrorKind::Shutdown`].
//! * **Fencing scope**: a blocklist fences the whole RADOS client (the `Cluster` connection), so
//!   the slot must be held on the **same connection** that flattens; the [`FlattenGate`] impl
//!   opens the slot pool on the flattened image's own connection. A process that must not lose
//!   its other work to a fence should flatten on a dedicated connection
//!   ([`Cluster::connect`](crate::Cluster::connect), not `Cluster::shared`).
//! * **Fairness**: waiters do not queue; each round tries every slot in a random order (so N
//!   free slots are spread over the waiters instead of everyone fighting for slot 0), then
//!   sleeps a capped exponential backoff with full jitter (uniform in `[b/2, b]`, b doubling
//!   from `backoff_min` 50 ms to `backoff_max` 1 s). Once waiters reach the cap, their polls are
//!   independent and uniformly spread, so when a slot frees each of W waiters is the first to
//!   poll with probability about 1/W; the chance of losing k releases in a row is about
//!   (1 − 1/W)^k → 0, so nobody starves. A newcomer's short initial backoff gives it an edge for
//!   only ~log2(1 s / 50 ms) ≈ 4 polls (about 2 s), small next to the length of a flatten. A
//!   strict FIFO would need a queue object and a second protocol; this is deliberately simpler.
//!
//! The client needs write access to the slot pool and the `osd blocklist` mon cap (`profile
//! rbd` has both) to take over from a dead holder.

use std::collections::HashMap;
use std::ffi::{c_char, c_int};
use std::ops::ControlFlow;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use librados_sys as rados_raw;
use serde_json::{json, Value};

use crate::call::c_try;
use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::lock::LockMode;
use crate::options::{Features, ImageOptions};
use crate::pool::Pool;
use crate::progress::{CancelToken, Progress};
use crate::recipes::flatten::FlattenGate;
use crate::util::cstr;

/// Default slot image prefix: slots are `rbd_core.flatten_slot.<i>`.
pub const DEFAULT_PREFIX: &str = "rbd_core.flatten_slot";
/// Image-metadata key holding the holder's heartbeat on a slot image.
pub const HEARTBEAT_KEY: &str = "rbd_core.slot.heartbeat";
/// Default lease: a heartbeat unchanged this long means the holder is dead.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// Default heartbeat interval.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(2);
/// Default first backoff between polling rounds.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Default backoff cap.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Most slots a throttle may have.
pub const MAX_SLOTS: usize = 256;
const SLOT_IMAGE_SIZE: u64 = 4096;

/// Hooks called by the throttle, for logging, metrics and tests.
pub trait ThrottleObserver: Send + Sync {
    /// Slot `slot` was acquired after waiting `waited`.
    fn acquired(&self, _slot: usize, _waited: Duration) {}
    /// Slot `slot` is about to be released after being held for `held`.
    fn releasing(&self, _slot: usize, _held: Duration) {}
    /// The lock of slot `slot` was broken because `owner`'s heartbeat was stale.
    fn took_over(&self, _slot: usize, _owner: &str) {}
}

/// Who holds a slot, as [`Throttle::slots`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    /// Slot number.
    pub slot: usize,
    /// The slot image name.
    pub image: String,
    /// False when the slot image was not created yet (the slot is free).
    pub exists: bool,
    /// The lock owner's client address, when held.
    pub owner: Option<String>,
    /// The lock owner's entity (`client.<global id>`), when held.
    pub client: Option<String>,
    /// The holder label (`<host>:<pid>[:label]`) from the owner's heartbeat, when held and the
    /// heartbeat belongs to the current owner.
    pub holder: Option<String>,
    /// When the current owner acquired the slot (its clock).
    pub since: Option<SystemTime>,
    /// Age of the owner's last heartbeat, by this host's clock.
    pub heartbeat_age: Option<Duration>,
}

/// A parsed heartbeat value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Heartbeat {
    t_ms: u64,
    seq: u64,
    since_ms: u64,
    owner: String,
    holder: String,
}

impl Heartbeat {
    fn to_value(&self) -> String {
        json!({"t": self.t_ms, "seq": self.seq, "since": self.since_ms, "owner": self.owner, "holder": self.holder})
            .to_string()
    }

    fn parse(s: &str) -> Option<Heartbeat> {
        let v: Value = serde_json::from_str(s).ok()?;
        Some(Heartbeat {
            t_ms: v.get("t")?.as_u64()?,
            seq: v.get("seq").and_then(Value::as_u64).unwrap_or(0),
            since_ms: v.get("since").and_then(Value::as_u64).unwrap_or(0),
            owner: v.get("owner")?.as_str()?.to_string(),
            holder: v.get("holder").and_then(Value::as_str).unwrap_or_default().to_string(),
        })
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` has `buf.len()` writable bytes; gethostname NUL-terminates or truncates.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A small xorshift generator for slot order and jitter (no cryptographic needs).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let local = 0u8;
        let addr = std::ptr::addr_of!(local) as u64;
        Rng((t ^ (u64::from(std::process::id()) << 32) ^ addr.rotate_left(17)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }

    /// Uniform in [d/2, d].
    fn jitter(&mut self, d: Duration) -> Duration {
        let ms = d.as_millis().max(1) as u64;
        Duration::from_millis(ms / 2 + self.next() % (ms / 2 + 1))
    }
}

/// `v1:127.0.0.1:0/42` → `127.0.0.1:0/42`: librados prints the cls_lock locker address with
/// its type, librbd's lock owner strings (and `ceph osd blocklist ls`) use the legacy form.
fn legacy_addr(addr: &str) -> &str {
    match addr.split_once(':') {
        Some(("v1" | "v2" | "any", rest)) => rest,
        _ => addr,
    }
}

/// The owner (address, entity) of an image's managed exclusive lock, read straight from the
/// header object's cls_lock `rbd_lock` (cookie `auto <n>`) with `rados_list_lockers`: one OSD
/// read, the way librbd's own `GetLockerRequest` does it. `rbd_list_lockers` is no use here: it
/// answers from the handle's cached header, which a read-only handle (no watch) never
/// refreshes, so a released lock looks held forever (verified); and `rbd_lock_get_owners`
/// needs a read-write handle (EINVAL on a read-only one).
fn header_lock_owner(pool: &Pool, image_id: &str) -> Result<Option<(String, String)>> {
    let oid = cstr("rados_list_lockers", "object", &format!("rbd_header.{image_id}"))?;
    let name = cstr("rados_list_lockers", "lock name", "rbd_lock")?;
    let mut sizes = [64usize, 256, 256, 256];
    for _ in 0..16 {
        let [mut tag, mut clients, mut cookies, mut addrs] = sizes.map(|n| vec![0 as c_char; n]);
        let mut lens = sizes;
        let mut exclusive: c_int = 0;
        let [tag_len, clients_len, cookies_len, addrs_len] = &mut lens;
        // SAFETY: valid ioctx and C strings; each buffer has the length passed beside it, and
        // librados writes at most that much (or only the needed lengths, with -ERANGE).
        let r = unsafe {
            rados_raw::rados_list_lockers(
                pool.raw(),
                oid.as_ptr(),
                name.as_ptr(),
                &mut exclusive,
                tag.as_mut_ptr(),
                tag_len,
                clients.as_mut_ptr(),
                clients_len,
                cookies.as_mut_ptr(),
                cookies_len,
                addrs.as_mut_ptr(),
                addrs_len,
            )
        };
        if r == -(libc::ERANGE as isize) {
            for (s, l) in sizes.iter_mut().zip(lens) {
                *s = (*s).max(l).max(1) * 2;
            }
            continue;
        }
        if r == -(libc::ENOENT as isize) {
            return Ok(None);
        }
        let n = c_try(r as i64, "rados_list_lockers", || Some(pool.spec(&format!("rbd_header.{image_id}"), None)))?;
        let split = |b: &[c_char]| -> Vec<String> {
            let bytes: Vec<u8> = b.iter().map(|c| *c as u8).collect();
            bytes.split(|x| *x == 0).take(n as usize).map(|x| String::from_utf8_lossy(x).into_owned()).collect()
        };
        let (clients, cookies, addrs) = (split(&clients), split(&cookies), split(&addrs));
        return Ok(clients
            .into_iter()
            .zip(cookies)
            .zip(addrs)
            .find(|((_, cookie), _)| cookie.starts_with("auto "))
            .map(|((client, _), addr)| (legacy_addr(&addr).to_string(), client)));
    }
    Err(Error::new(ErrorKind::OutOfRange, "rados_list_lockers", "buffer sizes kept growing"))
}

/// The cluster-wide flatten throttle (see the [module docs](self)). Cheap to clone; clones
/// share the configuration at the time of cloning.
#[derive(Clone)]
pub struct Throttle {
    pool: Pool,
    prefix: String,
    slots: usize,
    lease: Duration,
    heartbeat: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    wait: Option<Duration>,
    holder: String,
    observer: Option<Arc<dyn ThrottleObserver>>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("pool", &self.pool)
            .field("prefix", &self.prefix)
            .field("slots", &self.slots)
            .field("lease", &self.lease)
            .field("heartbeat", &self.heartbeat)
            .field("wait", &self.wait)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl Throttle {
    /// A throttle with `slots` slots whose slot images live in `pool` (and its namespace),
    /// with the default prefix, lease and heartbeat. Nothing is created until a slot is
    /// acquired.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when `slots` is 0 or more than [`MAX_SLOTS`].
    pub fn new(pool: &Pool, slots: usize) -> Result<Throttle> {
        if slots == 0 || slots > MAX_SLOTS {
            return Err(Error::invalid("throttle", format!("slots must be 1..={MAX_SLOTS}, got {slots}")));
        }
        Ok(Throttle {
            pool: pool.clone(),
            prefix: DEFAULT_PREFIX.to_string(),
            slots,
            lease: DEFAULT_LEASE,
            heartbeat: DEFAULT_HEARTBEAT,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            wait: None,
            holder: format!("{}:{}", hostname(), std::process::id()),
            observer: None,
        })
    }

    /// Slot image prefix (default [`DEFAULT_PREFIX`]); every process sharing the throttle must
    /// use the same pool, prefix and slot count.
    pub fn prefix(&mut self, prefix: &str) -> &mut Self {
        self.prefix = prefix.to_string();
        self
    }

    /// The lease (default 10 s) and heartbeat interval (default 2 s); the lease must be at
    /// least 3 × the heartbeat (checked when acquiring).
    pub fn lease(&mut self, lease: Duration, heartbeat: Duration) -> &mut Self {
        self.lease = lease;
        self.heartbeat = heartbeat;
        self
    }

    /// Backoff between polling rounds: starts at `min`, doubles up to `max` (defaults 50 ms
    /// and 1 s).
    pub fn backoff(&mut self, min: Duration, max: Duration) -> &mut Self {
        self.backoff_min = min.max(Duration::from_millis(1));
        self.backoff_max = max.max(self.backoff_min);
        self
    }

    /// How long [`FlattenGate::flatten`] waits for a slot (`None`, the default: forever).
    pub fn wait(&mut self, wait: Option<Duration>) -> &mut Self {
        self.wait = wait;
        self
    }

    /// Adds a label to the holder id shown in [`Throttle::slots`] (`<host>:<pid>:<label>`).
    pub fn label(&mut self, label: &str) -> &mut Self {
        self.holder = format!("{}:{}:{label}", hostname(), std::process::id());
        self
    }

    /// Installs hooks called on acquire, release and takeover.
    pub fn observer(&mut self, observer: Arc<dyn ThrottleObserver>) -> &mut Self {
        self.observer = Some(observer);
        self
    }

    /// Number of slots.
    pub fn slot_count(&self) -> usize {
        self.slots
    }

    /// The slot image prefix.
    pub fn slot_prefix(&self) -> &str {
        &self.prefix
    }

    /// The slot image name of slot `i`.
    pub fn slot_image(&self, i: usize) -> String {
        format!("{}.{i}", self.prefix)
    }

    /// The pool holding the slot images.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    fn validate(&self, op: &'static str) -> Result<()> {
        Pool::validate_image_name(&self.slot_image(0)).map_err(|e| Error::invalid(op, e.to_string()))?;
        if self.heartbeat.is_zero() || self.lease < self.heartbeat * 3 {
            return Err(Error::invalid(
                op,
                format!("lease {:?} must be at least 3 × the heartbeat {:?}", self.lease, self.heartbeat),
            ));
        }
        Ok(())
    }

    /// Waits up to `timeout` (`None`: forever) for a free slot and returns its guard; the slot
    /// is released when the guard is dropped. Takes over slots whose holder's heartbeat is
    /// stale (see the [module docs](self)).
    ///
    /// Uses `rbd_create4` (slot images, on demand), `rbd_open`, `rbd_lock_acquire`,
    /// `rbd_lock_get_owners`, `rbd_metadata_get`/`rbd_metadata_set` and `rbd_lock_break`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`] when no slot became free in time (the message lists the
    /// holders), [`ErrorKind::InvalidArgument`] for a bad configuration or a slot image
    /// without the exclusive-lock feature, [`ErrorKind::PermissionDenied`] without write or
    /// blocklist caps, [`ErrorKind::Shutdown`] when this client is blocklisted.
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<SlotGuard> {
        let deadline = timeout.map(|t| Instant::now() + t);
        self.acquire_in(&self.pool, deadline, &|| false)
    }

    /// Takes a free slot without waiting: `None` when all are held by live holders.
    ///
    /// # Errors
    /// As [`Throttle::acquire`], except `Timeout`.
    pub fn try_acquire(&self) -> Result<Option<SlotGuard>> {
        match self.acquire_in(&self.pool, Some(Instant::now()), &|| false) {
            Ok(g) => Ok(Some(g)),
            Err(e) if e.kind() == ErrorKind::Timeout => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens slot `i` read-only, creating the slot image first when it does not exist.
    fn open_slot_ro(&self, pool: &Pool, i: usize) -> Result<Image> {
        let name = self.slot_image(i);
        match Image::open_read_only(pool, &name) {
            Ok(img) => Ok(img),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let mut opts = ImageOptions::new();
                opts.features(Features::LAYERING | Features::EXCLUSIVE_LOCK);
                match pool.create_image(&name, SLOT_IMAGE_SIZE, &opts) {
                    Ok(()) => tracing::debug!(pool = %pool.name(), image = %name, "created flatten slot image"),
                    Err(e) if e.kind() == ErrorKind::Exists => {}
                    Err(e) => return Err(e),
                }
                Image::open_read_only(pool, &name)
            }
            Err(e) => Err(e),
        }
    }

    fn acquire_in(&self, pool: &Pool, deadline: Option<Instant>, cancelled: &dyn Fn() -> bool) -> Result<SlotGuard> {
        const OP: &str = "throttle.acquire";
        let _s =
            tracing::debug_span!("throttle_acquire", pool = %pool.name(), prefix = %self.prefix, slots = self.slots)
                .entered();
        self.validate(OP)?;
        let start = Instant::now();
        let mut rng = Rng::new();
        // Read-only handles (no watch, no lock traffic) for polling; a read-write handle is
        // opened only to take a slot that looks free or stale. Calling `rbd_lock_acquire` on a
        // slot whose owner is dead blocks until the OSD drops the dead owner's watch (~30 s, as
        // librbd first asks the owner to release), so a held slot is never "tried".
        let mut handles: Vec<Option<(Image, String)>> = (0..self.slots).map(|_| None).collect();
        // slot -> (owner and heartbeat as last seen, when first seen unchanged)
        let mut seen: HashMap<usize, (String, Instant)> = HashMap::new();
        let mut backoff = self.backoff_min;
        loop {
            if cancelled() {
                return Err(Error::new(ErrorKind::Cancelled, OP, "cancelled while waiting for a flatten slot"));
            }
            let mut order: Vec<usize> = (0..self.slots).collect();
            rng.shuffle(&mut order);
            let mut holders = Vec::new();
            for i in order {
                if handles[i].is_none() {
                    let ro = self.open_slot_ro(pool, i)?;
                    let id = ro.id()?;
                    handles[i] = Some((ro, id));
                }
                let Some((ro, image_id)) = handles[i].as_ref() else { continue };
                let Some((owner, _client)) = header_lock_owner(pool, image_id)? else {
                    seen.remove(&i);
                    let rw = Image::open(pool, &self.slot_image(i))?;
                    match rw.lock_acquire_raw() {
                        Ok(()) => return self.guard(rw, i, start.elapsed()),
                        // Someone else took it first.
                        Err(e) if matches!(e.kind(), ErrorKind::ReadOnly | ErrorKind::Busy) => continue,
                        Err(e) if e.kind() == ErrorKind::InvalidArgument => {
                            return Err(Error::invalid(
                                OP,
                                format!(
                                    "slot image {} cannot be locked (exclusive-lock feature missing?): {e}",
                                    rw.spec()
                                ),
                            ))
                        }
                        Err(e) => return Err(e),
                    }
                };
                let hb = match ro.metadata_get(HEARTBEAT_KEY) {
                    Ok(v) => v,
                    Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
                    Err(e) => return Err(e),
                };
                holders.push(format!("{i}={}", Heartbeat::parse(&hb).map_or(owner.clone(), |h| h.holder)));
                let key = format!("{owner}\n{hb}");
                let stale = match seen.get(&i) {
                    Some((k, t)) if *k == key => t.elapsed() >= self.lease,
                    _ => {
                        seen.insert(i, (key, Instant::now()));
                        false
                    }
                };
                if stale {
                    seen.remove(&i);
                    let rw = Image::open(pool, &self.slot_image(i))?;
                    if let Some(g) = self.take_over(rw, i, &owner, start)? {
                        return Ok(g);
                    }
                }
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    OP,
                    format!(
                        "no flatten slot free after {:?} ({} slots, held by: {})",
                        start.elapsed(),
                        self.slots,
                        holders.join(", ")
                    ),
                )
                .with_target(format!("{}/{}.*", pool.name(), self.prefix)));
            }
            let mut sleep = rng.jitter(backoff);
            if let Some(d) = deadline {
                sleep = sleep.min(d.saturating_duration_since(now));
            }
            std::thread::sleep(sleep);
            backoff = (backoff * 2).min(self.backoff_max);
        }
    }

    /// Breaks a dead owner's lock (blocklisting it) and takes the slot; `None` when someone
    /// else got there first.
    fn take_over(&self, img: Image, i: usize, owner: &str, start: Instant) -> Result<Option<SlotGuard>> {
        tracing::warn!(image = %img.spec(), owner, lease = ?self.lease,
            "flatten slot holder's heartbeat is stale; breaking its lock (this blocklists it)");
        match img.lock_break(LockMode::Exclusive, owner) {
            Ok(()) => {
                if let Some(o) = &self.observer {
                    o.took_over(i, owner);
                }
            }
            // The owner changed or released meanwhile.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Busy) => return Ok(None),
            Err(e) => return Err(e),
        }
        match img.lock_acquire_raw() {
            Ok(()) => Ok(Some(self.guard(img, i, start.elapsed())?)),
            Err(e) if matches!(e.kind(), ErrorKind::ReadOnly | ErrorKind::Busy) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn guard(&self, img: Image, slot: usize, waited: Duration) -> Result<SlotGuard> {
        let owner = match img.lock_owners() {
            Ok(o) => o.into_iter().next().map(|o| o.owner).unwrap_or_default(),
            Err(e) => {
                let _ = img.lock_release();
                return Err(e);
            }
        };
        let since = SystemTime::now();
        let mut hb = Heartbeat {
            t_ms: unix_ms(since),
            seq: 0,
            since_ms: unix_ms(since),
            owner: owner.clone(),
            holder: self.holder.clone(),
        };
        if let Err(e) = img.metadata_set(HEARTBEAT_KEY, &hb.to_value()) {
            let _ = img.lock_release();
            return Err(e);
        }
        tracing::info!(image = %img.spec(), slot, owner = %owner, ?waited, "flatten slot acquired");
        if let Some(o) = &self.observer {
            o.acquired(slot, waited);
        }
        let image = Arc::new(img);
        let lost = CancelToken::new();
        let (stop, rx) = mpsc::channel::<()>();
        let thread = {
            let image = Arc::clone(&image);
            let lost = lost.clone();
            let interval = self.heartbeat;
            std::thread::Builder::new()
                .name(format!("rbd-slot-{slot}"))
                .spawn(move || loop {
                    match rx.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                    hb.seq += 1;
                    hb.t_ms = unix_ms(SystemTime::now());
                    let r = image.is_exclusive_lock_owner().and_then(|own| {
                        if own {
                            image.metadata_set(HEARTBEAT_KEY, &hb.to_value())
                        } else {
                            Err(Error::new(ErrorKind::Busy, "throttle.heartbeat", "no longer the lock owner"))
                        }
                    });
                    match r {
                        Ok(()) => {}
                        Err(e) if matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Io) => {
                            tracing::warn!(image = %image.spec(), error = %e, "flatten slot heartbeat failed; retrying");
                        }
                        Err(e) => {
                            tracing::error!(image = %image.spec(), error = %e, "flatten slot lost (taken over or fenced)");
                            lost.cancel();
                            return;
                        }
                    }
                })
                .map_err(|e| Error::new(ErrorKind::Other, "throttle.heartbeat", format!("cannot spawn: {e}")))
        };
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                let _ = image.lock_release();
                return Err(e);
            }
        };
        Ok(SlotGuard {
            slot,
            image,
            owner,
            since,
            acquired: Instant::now(),
            lost,
            stop: Some(stop),
            thread: Some(thread),
            observer: self.observer.clone(),
        })
    }

    /// Who holds each slot, from the slot images (opened read-only; nothing is created).
    ///
    /// Uses `rbd_open_read_only`, `rados_list_lockers` and `rbd_metadata_get`.
    ///
    /// # Errors
    /// Errors from librbd other than a missing slot image.
    pub fn slots(&self) -> Result<Vec<SlotState>> {
        let _s = tracing::debug_span!("throttle_slots", pool = %self.pool.name(), prefix = %self.prefix).entered();
        let now = SystemTime::now();
        let mut out = Vec::with_capacity(self.slots);
        for i in 0..self.slots {
            let name = self.slot_image(i);
            let mut st = SlotState {
                slot: i,
                image: name.clone(),
                exists: false,
                owner: None,
                client: None,
                holder: None,
                since: None,
                heartbeat_age: None,
            };
            let img = match Image::open_read_only(&self.pool, &name) {
                Ok(img) => img,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    out.push(st);
                    continue;
                }
                Err(e) => return Err(e),
            };
            st.exists = true;
            if let Some((owner, client)) = header_lock_owner(&self.pool, &img.id()?)? {
                st.owner = Some(owner);
                st.client = Some(client);
            }
            if let Some(owner) = &st.owner {
                let hb = match img.metadata_get(HEARTBEAT_KEY) {
                    Ok(v) => Heartbeat::parse(&v),
                    Err(e) if e.kind() == ErrorKind::NotFound => None,
                    Err(e) => return Err(e),
                };
                if let Some(hb) = hb.filter(|h| &h.owner == owner) {
                    st.holder = Some(hb.holder);
                    st.since = Some(from_unix_ms(hb.since_ms));
                    st.heartbeat_age = Some(now.duration_since(from_unix_ms(hb.t_ms)).unwrap_or_default());
                }
            }
            out.push(st);
        }
        Ok(out)
    }

    /// Removes the slot images (all must be free). For tests and decommissioning.
    ///
    /// # Errors
    /// [`ErrorKind::Busy`] when a slot is held (nothing is removed then); librbd errors.
    pub fn remove_slots(&self) -> Result<()> {
        if let Some(s) = self.slots()?.into_iter().find(|s| s.owner.is_some()) {
            return Err(Error::new(ErrorKind::Busy, "throttle.remove_slots", format!("slot {} is held", s.slot))
                .with_target(self.pool.spec(&s.image, None)));
        }
        for i in 0..self.slots {
            match self.pool.remove_image(&self.slot_image(i)) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

impl FlattenGate for Throttle {
    /// Waits for a slot (up to [`Throttle::wait`]) on `image`'s own connection, then flattens
    /// with progress. If the slot is lost while flattening (this client was fenced), the
    /// flatten is cancelled.
    ///
    /// Uses the calls of [`Throttle::acquire`] and `rbd_flatten_with_progress`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when `image` is not a clone (checked before waiting),
    /// [`ErrorKind::Timeout`] when no slot became free in time, [`ErrorKind::Cancelled`],
    /// [`ErrorKind::Shutdown`] when the slot was lost (fenced), flatten errors.
    fn flatten(&self, image: &Image, progress: &mut Progress<'_>) -> Result<()> {
        let _s = tracing::info_span!("throttle.flatten", pool = %image.pool().name(), image = %image.name()).entered();
        if image.parent()?.is_none() {
            return Err(Error::invalid("throttle.flatten", format!("{} is not a clone", image.spec())));
        }
        let pool = if image.pool().cluster().same_connection(self.pool.cluster()) {
            self.pool.clone()
        } else {
            Pool::open_ns(image.pool().cluster(), self.pool.name(), self.pool.namespace())?
        };
        let deadline = self.wait.map(|w| Instant::now() + w);
        let guard = {
            let p: &Progress<'_> = progress;
            self.acquire_in(&pool, deadline, &|| p.is_cancelled())?
        };
        let lost = guard.lost.clone();
        let r = {
            let mut cb = |done: u64, total: u64| match progress.report(done, total) {
                Ok(()) => ControlFlow::Continue(()),
                Err(_) => ControlFlow::Break(()),
            };
            let mut inner = Progress::new(&mut cb).with_cancel(lost.clone());
            image.flatten_with_progress(&mut inner)
        };
        let released = guard.release();
        match r {
            Err(e) if lost.is_cancelled() && matches!(e.kind(), ErrorKind::Cancelled | ErrorKind::Shutdown) => {
                Err(Error::new(
                    ErrorKind::Shutdown,
                    "throttle.flatten",
                    "the flatten slot was lost (this client was fenced by a takeover); flatten stopped",
                )
                .with_target(image.spec())
                .with_source(e))
            }
            Err(e) => Err(e),
            Ok(()) => {
                if let Err(e) = released {
                    tracing::warn!(image = %image.spec(), error = %e, "releasing the flatten slot failed after a successful flatten");
                }
                Ok(())
            }
        }
    }
}

/// A held flatten slot; released (and its heartbeat stopped) when dropped.
#[must_use = "the slot is released when the guard is dropped"]
pub struct SlotGuard {
    slot: usize,
    image: Arc<Image>,
    owner: String,
    since: SystemTime,
    acquired: Instant,
    lost: CancelToken,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    observer: Option<Arc<dyn ThrottleObserver>>,
}

impl std::fmt::Debug for SlotGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotGuard")
            .field("slot", &self.slot)
            .field("image", &self.image.spec())
            .field("owner", &self.owner)
            .field("since", &self.since)
            .field("lost", &self.lost.is_cancelled())
            .finish()
    }
}

impl SlotGuard {
    /// The slot number.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The slot image (`pool/<prefix>.<slot>`).
    pub fn image_spec(&self) -> String {
        self.image.spec()
    }

    /// This holder's lock owner string (its client address), as other clients see it.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// When the slot was acquired.
    pub fn since(&self) -> SystemTime {
        self.since
    }

    /// True once the heartbeat found the lock gone (taken over and fenced).
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// A token cancelled when the slot is lost (pass it to a [`Progress`] to stop work).
    pub fn lost_token(&self) -> CancelToken {
        self.lost.clone()
    }

    fn stop_heartbeat(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn release_inner(&mut self) -> Result<()> {
        if self.stop.is_none() && self.thread.is_none() {
            return Ok(());
        }
        self.stop_heartbeat();
        if let Some(o) = &self.observer {
            o.releasing(self.slot, self.acquired.elapsed());
        }
        let _s = tracing::debug_span!("throttle_release", image = %self.image.spec(), slot = self.slot).entered();
        let _ = self.image.metadata_remove(HEARTBEAT_KEY);
        self.image.lock_release()
    }

    /// Releases the slot now, reporting errors (Drop logs them).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when the lock was lost meanwhile, [`ErrorKind::Shutdown`]
    /// when this client was fenced.
    pub fn release(mut self) -> Result<()> {
        self.release_inner()
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Err(e) = self.release_inner() {
            tracing::warn!(slot = self.slot, error = %e, "releasing a flatten slot failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_legacy_form() {
        assert_eq!(legacy_addr("v1:127.0.0.1:0/42"), "127.0.0.1:0/42");
        assert_eq!(legacy_addr("127.0.0.1:0/42"), "127.0.0.1:0/42");
        assert_eq!(legacy_addr("any:[::1]:0/7"), "[::1]:0/7");
    }

    #[test]
    fn heartbeat_round_trip() {
        let h = Heartbeat { t_ms: 5, seq: 2, since_ms: 1, owner: "127.0.0.1:0/42".into(), holder: "h:1".into() };
        assert_eq!(Heartbeat::parse(&h.to_value()), Some(h));
        assert_eq!(Heartbeat::parse("garbage"), None);
    }

    #[test]
    fn rng_shuffles_and_jitters_in_range() {
        let mut r = Rng::new();
        let mut v: Vec<usize> = (0..10).collect();
        r.shuffle(&mut v);
        let mut s = v.clone();
        s.sort_unstable();
        assert_eq!(s, (0..10).collect::<Vec<_>>());
        for _ in 0..100 {
            let j = r.jitter(Duration::from_millis(100));
            assert!(j >= Duration::from_millis(50) && j <= Duration::from_millis(100), "{j:?}");
        }
    }
}
