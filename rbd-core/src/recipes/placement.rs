//! Where a new volume goes: Cinder's scheduler (seed 002) over RBD pools — filter backends by
//! free capacity and capabilities, weigh by free space, try them in order with retries.
//!
//! ```no_run
//! use rbd_core::recipes::placement::{create_volume_image, Backend, Scheduler};
//! # let cluster = rbd_core::Cluster::shared(None, "cinder")?;
//! let mut fast = Backend::new("ceph@ssd", &cluster, "volumes");
//! fast.capability("storage_protocol", "ceph").reserved_percentage(10.0);
//! let mut slow = Backend::new("ceph@hdd", &cluster, "vms");
//! slow.capability("storage_protocol", "ceph");
//! let mut sched = Scheduler::new();
//! sched.weight_multiplier(1.0).max_attempts(3).require("storage_protocol", "ceph");
//! let opts = rbd_core::ImageOptions::new();
//! let placed = sched.place_and_create(&[fast, slow], "vol-1", 10 << 30, create_volume_image(&opts))?;
//! println!("volume-vol-1 is in {} ({}) after {} failed attempts", placed.backend, placed.pool, placed.failed.len());
//! # Ok::<(), rbd_core::Error>(())
//! ```
//!
//! # What it does (Cinder's `FilterScheduler` with its default filters and weigher)
//!
//! 1. **Stats** per backend ([`gather_stats`]), the figures Cinder's RBD driver reports
//!    (`_get_pool_stats`, reference §3.11): `mon_command {"prefix":"df","format":"json"}` gives
//!    the pool's `stored` (`bytes_used` before Nautilus) and `max_avail`, and `{"prefix":"osd
//!    pool get-quota","pool":P,"format":"json"}` its `quota_max_bytes`. With a quota,
//!    `free = max(min(quota − used, max_avail), 0)`; without, `free = max_avail`; `total = free +
//!    used` (`report_dynamic_total_capacity`, the default). Provisioned capacity (for thin
//!    provisioning) is the sum of the pool's image sizes unless the backend states it
//!    ([`Backend::provisioned_bytes`]) — what Cinder's `_get_usage_info` computes for
//!    non-exclusive pools.
//! 2. **Filters** ([`capacity_filter`], [`capabilities_filter`]), pure functions over
//!    [`BackendStats`]: Cinder's `CapacityFilter` — reserved space `floor(total ×
//!    reserved%)` is not usable; with thin provisioning (RBD's case, unless the request is
//!    `provisioning:type=thick`) the projected ratio `(provisioned + size) / total` must not
//!    exceed `max_over_subscription_ratio` (a ratio below 1 filters the backend out), and the
//!    adjusted free virtual space `free × ratio` must hold the volume; thick: `free − reserved ≥
//!    size`. `CapabilitiesFilter` — every required key (an optional `capabilities:` scope is
//!    stripped; other scopes are not capabilities) must match the backend's value, with
//!    Cinder's operators (`=`, `==`, `!=`, `>=`, `<=`, `s==`, `s!=`, `s<`, `s<=`, `s>`, `s>=`,
//!    `<in>`, `<all-in>`, `<or>`; anything else is a plain string comparison).
//! 3. **Weigher** ([`weigh`]): Cinder's `CapacityWeigher` — the raw weight is the free
//!    virtual capacity `total × ratio − provisioned − reserved` for thin provisioning and
//!    `free − reserved` for thick; weights are normalised to 0..1 over the candidates and
//!    multiplied by `capacity_weight_multiplier` (default 1: most free first, *spreading*; a
//!    negative multiplier puts the least free first, *stacking*). Ties keep the backends'
//!    order.
//! 4. **Retry** ([`Scheduler::place_and_create`]): the create function runs on the best
//!    backend; when it fails, the next one is tried, up to `scheduler_max_attempts` (default
//!    3) backends.
//! 5. **No valid backend**: [`ErrorKind::NoSpace`] whose message lists every backend and why
//!    it was filtered out or why creating on it failed (Cinder only logs these and says "No
//!    valid backend was found").
//!
//! Not modelled: availability zones (`AvailabilityZoneFilter`; pass only the backends of the
//! zone), service liveness (a backend whose stats cannot be read is filtered out with the
//! error as its reason).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::cluster::Cluster;
use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::options::ImageOptions;
use crate::pool::Pool;

/// Cinder's default `scheduler_max_attempts`.
pub const DEFAULT_MAX_ATTEMPTS: usize = 3;
/// Cinder's default `max_over_subscription_ratio`.
pub const DEFAULT_MAX_OVER_SUBSCRIPTION_RATIO: f64 = 20.0;

/// A backend a volume can go to: a pool on a cluster connection, with Cinder's per-backend
/// settings.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Name used in results and messages (Cinder's `host@backend#pool`).
    pub name: String,
    /// The connection.
    pub cluster: Cluster,
    /// The pool.
    pub pool: String,
    /// Reported capabilities (Cinder's capability dict, flattened to strings).
    pub capabilities: BTreeMap<String, String>,
    /// `reserved_percentage` (0..=100; default 0).
    pub reserved_percentage: f64,
    /// `max_over_subscription_ratio` (default 20).
    pub max_over_subscription_ratio: f64,
    /// `thin_provisioning_support` (true for RBD).
    pub thin_provisioning: bool,
    /// Provisioned capacity if known; `None` sums the pool's image sizes.
    pub provisioned: Option<u64>,
}

impl Backend {
    /// Backend `name` for `pool` on `cluster`, with Cinder's RBD defaults.
    pub fn new(name: &str, cluster: &Cluster, pool: &str) -> Backend {
        Backend {
            name: name.to_string(),
            cluster: cluster.clone(),
            pool: pool.to_string(),
            capabilities: BTreeMap::new(),
            reserved_percentage: 0.0,
            max_over_subscription_ratio: DEFAULT_MAX_OVER_SUBSCRIPTION_RATIO,
            thin_provisioning: true,
            provisioned: None,
        }
    }

    /// Adds a capability.
    pub fn capability(&mut self, key: &str, value: &str) -> &mut Self {
        self.capabilities.insert(key.to_string(), value.to_string());
        self
    }

    /// Sets `reserved_percentage`.
    pub fn reserved_percentage(&mut self, pct: f64) -> &mut Self {
        self.reserved_percentage = pct;
        self
    }

    /// Sets `max_over_subscription_ratio`.
    pub fn max_over_subscription_ratio(&mut self, ratio: f64) -> &mut Self {
        self.max_over_subscription_ratio = ratio;
        self
    }

    /// Sets `thin_provisioning_support`.
    pub fn thin_provisioning(&mut self, yes: bool) -> &mut Self {
        self.thin_provisioning = yes;
        self
    }

    /// States the provisioned capacity instead of summing image sizes.
    pub fn provisioned_bytes(&mut self, bytes: Option<u64>) -> &mut Self {
        self.provisioned = bytes;
        self
    }
}

/// Capacity figures of one backend, in bytes, plus its settings: the input of the filters
/// and the weigher.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendStats {
    /// Backend name.
    pub name: String,
    /// `free + used` (Cinder's dynamic total).
    pub total_bytes: u64,
    /// Usable free bytes (quota-aware).
    pub free_bytes: u64,
    /// Bytes stored in the pool.
    pub used_bytes: u64,
    /// Sum of the sizes of the volumes in the pool.
    pub provisioned_bytes: u64,
    /// The pool's byte quota, if set.
    pub quota_bytes: Option<u64>,
    /// The pool's `max_avail`.
    pub max_avail_bytes: u64,
    /// `reserved_percentage`.
    pub reserved_percentage: f64,
    /// `max_over_subscription_ratio`.
    pub max_over_subscription_ratio: f64,
    /// `thin_provisioning_support`.
    pub thin_provisioning: bool,
    /// Capabilities.
    pub capabilities: BTreeMap<String, String>,
}

impl BackendStats {
    /// Stats from Cinder's formula: `used`, `max_avail` and the quota (0 or `None`: no quota),
    /// with Cinder's RBD defaults for the settings (no reserve, ratio 20, thin, no
    /// capabilities); see [`BackendStats::with_settings`].
    ///
    /// ```
    /// use rbd_core::recipes::placement::BackendStats;
    /// let s = BackendStats::from_usage("b", 300, 1000, Some(500), 0);
    /// assert_eq!((s.free_bytes, s.total_bytes), (200, 500)); // quota - used; free + used
    /// ```
    pub fn from_usage(name: &str, used: u64, max_avail: u64, quota: Option<u64>, provisioned: u64) -> BackendStats {
        let quota = quota.filter(|q| *q > 0);
        let free = match quota {
            Some(q) => q.saturating_sub(used).min(max_avail),
            None => max_avail,
        };
        BackendStats {
            name: name.to_string(),
            total_bytes: free.saturating_add(used),
            free_bytes: free,
            used_bytes: used,
            provisioned_bytes: provisioned,
            quota_bytes: quota,
            max_avail_bytes: max_avail,
            reserved_percentage: 0.0,
            max_over_subscription_ratio: DEFAULT_MAX_OVER_SUBSCRIPTION_RATIO,
            thin_provisioning: true,
            capabilities: BTreeMap::new(),
        }
    }

    /// Copies `backend`'s settings (reserve, ratio, thin provisioning, capabilities).
    #[must_use]
    pub fn with_settings(mut self, backend: &Backend) -> BackendStats {
        self.reserved_percentage = backend.reserved_percentage;
        self.max_over_subscription_ratio = backend.max_over_subscription_ratio;
        self.thin_provisioning = backend.thin_provisioning;
        self.capabilities = backend.capabilities.clone();
        self
    }

    fn reserved(&self) -> f64 {
        (self.total_bytes as f64 * self.reserved_percentage / 100.0).floor()
    }
}

/// Parses `ceph df --format json` for `pool`: (`stored`, falling back to `bytes_used`; `max_avail`).
///
/// # Errors
/// [`ErrorKind::Malformed`] for unexpected JSON, [`ErrorKind::NotFound`] when the pool is not
/// listed.
pub fn parse_df(df: &[u8], pool: &str) -> Result<(u64, u64)> {
    let v = first_json(df, "df")?;
    let entry = v
        .get("pools")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::new(ErrorKind::Malformed, "df", "no `pools` array"))?
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(pool))
        .ok_or_else(|| Error::new(ErrorKind::NotFound, "df", format!("pool {pool} not in df output")))?;
    let stats = entry.get("stats").ok_or_else(|| Error::new(ErrorKind::Malformed, "df", "no `stats`"))?;
    let used = stats.get("stored").or_else(|| stats.get("bytes_used")).and_then(Value::as_u64);
    let avail = stats.get("max_avail").and_then(Value::as_u64);
    match (used, avail) {
        (Some(u), Some(a)) => Ok((u, a)),
        _ => Err(Error::new(ErrorKind::Malformed, "df", format!("pool {pool}: no stored/max_avail"))),
    }
}

/// Parses `ceph osd pool get-quota P --format json`: `quota_max_bytes` (`None` when 0).
///
/// # Errors
/// [`ErrorKind::Malformed`] for unexpected JSON.
pub fn parse_quota(quota: &[u8]) -> Result<Option<u64>> {
    let v = first_json(quota, "osd pool get-quota")?;
    let q = v
        .get("quota_max_bytes")
        .and_then(Value::as_u64)
        .ok_or_else(|| Error::new(ErrorKind::Malformed, "osd pool get-quota", "no quota_max_bytes"))?;
    Ok((q > 0).then_some(q))
}

/// The first JSON value of a mon reply (the buffer may carry bytes after it).
fn first_json(buf: &[u8], op: &'static str) -> Result<Value> {
    match serde_json::Deserializer::from_slice(buf).into_iter::<Value>().next() {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(Error::new(ErrorKind::Malformed, op, format!("bad JSON: {e}"))),
        None => Err(Error::new(ErrorKind::Malformed, op, "empty reply")),
    }
}

/// Reads one backend's stats from its cluster (see the [module docs](self)).
///
/// Uses `rados_mon_command` (`df`, `osd pool get-quota`), and `rbd_list2` plus `rbd_stat` on
/// each image when the provisioned capacity is not stated.
///
/// # Errors
/// Errors from the monitor or librbd; [`ErrorKind::NotFound`] for a missing pool.
pub fn gather_stats(backend: &Backend) -> Result<BackendStats> {
    let _s = tracing::debug_span!("placement_stats", backend = %backend.name, pool = %backend.pool).entered();
    let (df, _) = backend.cluster.mon_command(r#"{"prefix":"df","format":"json"}"#, b"")?;
    let (used, max_avail) = parse_df(&df, &backend.pool)?;
    let cmd = serde_json::json!({"prefix": "osd pool get-quota", "pool": backend.pool, "format": "json"}).to_string();
    let (q, _) = backend.cluster.mon_command(&cmd, b"")?;
    let quota = parse_quota(&q)?;
    let provisioned = match backend.provisioned {
        Some(p) => p,
        None => {
            let pool = Pool::open(&backend.cluster, &backend.pool)?;
            let mut sum = 0u64;
            for spec in pool.list_images()? {
                match Image::open_read_only(&pool, &spec.name) {
                    Ok(img) => sum = sum.saturating_add(img.size()?),
                    Err(e) if e.kind() == ErrorKind::NotFound => {} // removed meanwhile
                    Err(e) => return Err(e),
                }
            }
            sum
        }
    };
    Ok(BackendStats::from_usage(&backend.name, used, max_avail, quota, provisioned).with_settings(backend))
}

fn gib(b: f64) -> String {
    format!("{:.2} GiB", b / f64::from(1u32 << 30))
}

/// Cinder's `CapacityFilter`: `Ok` when a `size`-byte volume fits, else why not.
/// `thick` is the request's `provisioning:type=thick`.
///
/// ```
/// use rbd_core::recipes::placement::{capacity_filter, BackendStats};
/// let s = BackendStats::from_usage("b", 0, 100 << 30, None, 0);
/// assert!(capacity_filter(&s, 10 << 30, true).is_ok());
/// assert!(capacity_filter(&s, 200 << 30, true).is_err());
/// ```
///
/// # Errors
/// A message saying why the backend cannot take the volume.
pub fn capacity_filter(stats: &BackendStats, size: u64, thick: bool) -> std::result::Result<(), String> {
    if size == 0 {
        return Ok(());
    }
    let total = stats.total_bytes as f64;
    if total <= 0.0 {
        return Err(format!("insufficient free space: total capacity is {}", gib(total)));
    }
    let free = stats.free_bytes as f64 - stats.reserved();
    let requested = size as f64;
    if !thick && stats.thin_provisioning {
        let ratio = stats.max_over_subscription_ratio;
        if ratio < 1.0 {
            return Err(format!("invalid maximum over subscription ratio {ratio:.2} (must be at least 1.0)"));
        }
        let provisioned_ratio = (stats.provisioned_bytes as f64 + requested) / total;
        if provisioned_ratio > ratio {
            return Err(format!(
                "insufficient free space for thin provisioning: the ratio of provisioned capacity over total \
                 capacity {provisioned_ratio:.2} would exceed the maximum over subscription ratio {ratio:.2}"
            ));
        }
        let adjusted_free_virtual = free * ratio;
        if adjusted_free_virtual < requested {
            return Err(format!(
                "insufficient free virtual space ({}) for a thin provisioned {} volume",
                gib(adjusted_free_virtual),
                gib(requested)
            ));
        }
        return Ok(());
    }
    if free < requested {
        return Err(format!(
            "insufficient free space (requested / available): {} / {}",
            gib(requested),
            gib(free.max(0.0))
        ));
    }
    Ok(())
}

/// Cinder's `extra_specs_ops.match`: does backend value `value` satisfy requirement `req`?
fn spec_matches(value: &str, req: &str) -> bool {
    let words: Vec<&str> = req.split_whitespace().collect();
    let Some((&op, rest)) = words.split_first() else { return value == req };
    let num = |f: fn(f64, f64) -> bool| -> bool {
        match (value.trim().parse::<f64>(), rest.first().and_then(|w| w.parse::<f64>().ok())) {
            (Ok(x), Some(y)) => f(x, y),
            _ => false,
        }
    };
    let s = |f: fn(&str, &str) -> bool| rest.first().is_some_and(|y| f(value, y));
    match op {
        "=" | ">=" => num(|x, y| x >= y),
        "==" => num(|x, y| (x - y).abs() < f64::EPSILON),
        "!=" => num(|x, y| (x - y).abs() >= f64::EPSILON),
        "<=" => num(|x, y| x <= y),
        "s==" => s(|x, y| x == y),
        "s!=" => s(|x, y| x != y),
        "s<" => s(|x, y| x < y),
        "s<=" => s(|x, y| x <= y),
        "s>" => s(|x, y| x > y),
        "s>=" => s(|x, y| x >= y),
        "<in>" => rest.first().is_some_and(|y| value.contains(y)),
        "<all-in>" => !rest.is_empty() && rest.iter().all(|y| value.contains(y)),
        "<or>" => rest.iter().filter(|w| **w != "<or>").any(|w| *w == value),
        _ => value == req,
    }
}

/// Cinder's `CapabilitiesFilter`: every required key must be reported with a matching value.
/// Keys may carry the `capabilities:` scope; keys with another scope (`qos:...`) are ignored.
///
/// ```
/// use std::collections::BTreeMap;
/// use rbd_core::recipes::placement::capabilities_filter;
/// let caps = BTreeMap::from([("tier".to_string(), "ssd".to_string()), ("iops".to_string(), "5000".to_string())]);
/// let want = BTreeMap::from([("capabilities:tier".to_string(), "<or> ssd <or> nvme".to_string()), ("iops".to_string(), ">= 1000".to_string())]);
/// assert!(capabilities_filter(&caps, &want).is_ok());
/// ```
///
/// # Errors
/// A message naming the first requirement that is not met.
pub fn capabilities_filter(
    caps: &BTreeMap<String, String>,
    required: &BTreeMap<String, String>,
) -> std::result::Result<(), String> {
    for (key, req) in required {
        let key = match key.split_once(':') {
            Some(("capabilities", k)) => k,
            Some(_) => continue,
            None => key.as_str(),
        };
        match caps.get(key) {
            None => return Err(format!("capability {key} is not reported (required: {req:?})")),
            Some(v) if !spec_matches(v, req) => {
                return Err(format!("capability {key}={v:?} does not satisfy {req:?}"));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Cinder's `CapacityWeigher` raw weight (bytes of free, possibly virtual, capacity).
pub fn capacity_weight(stats: &BackendStats, thick: bool) -> f64 {
    let total = stats.total_bytes as f64;
    if !thick && stats.thin_provisioning {
        (total * stats.max_over_subscription_ratio - stats.provisioned_bytes as f64 - stats.reserved()).floor()
    } else {
        stats.free_bytes as f64 - stats.reserved()
    }
}

/// A candidate backend and its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Weighed {
    /// Index into the stats / backends passed in.
    pub index: usize,
    /// Backend name.
    pub name: String,
    /// Normalised weight × multiplier (higher goes first).
    pub weight: f64,
}

/// Weighs `candidates` (indexes into `stats`): normalised capacity weight × `multiplier`,
/// highest first; ties keep the input order.
pub fn weigh(stats: &[BackendStats], candidates: &[usize], multiplier: f64, thick: bool) -> Vec<Weighed> {
    let raw: Vec<f64> = candidates.iter().map(|&i| capacity_weight(&stats[i], thick)).collect();
    let min = raw.iter().copied().fold(f64::INFINITY, f64::min);
    let max = raw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut out: Vec<Weighed> = candidates
        .iter()
        .zip(&raw)
        .map(|(&i, &r)| {
            let norm = if max > min { (r - min) / (max - min) } else { 0.0 };
            Weighed { index: i, name: stats[i].name.clone(), weight: norm * multiplier }
        })
        .collect();
    out.sort_by(|a, b| b.weight.partial_cmp(&a.weight).unwrap_or(std::cmp::Ordering::Equal));
    out
}

/// A backend that was filtered out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Backend name.
    pub backend: String,
    /// Why (stats error, capacity, capability).
    pub reason: String,
}

/// The outcome of filtering and weighing.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Backends that passed, best first.
    pub order: Vec<Weighed>,
    /// Backends filtered out.
    pub rejected: Vec<Rejected>,
}

/// A creation attempt that failed on a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedAttempt {
    /// Backend name.
    pub backend: String,
    /// The error kind.
    pub kind: ErrorKind,
    /// The error, as text.
    pub error: String,
}

/// Where a volume was created.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed<T> {
    /// The backend that took it.
    pub backend: String,
    /// Its pool.
    pub pool: String,
    /// The image name (`volume-<id>`).
    pub image: String,
    /// What the create function returned.
    pub value: T,
    /// Earlier attempts that failed, in order.
    pub failed: Vec<FailedAttempt>,
    /// Backends filtered out.
    pub rejected: Vec<Rejected>,
}

/// Cinder's scheduler settings; see the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduler {
    multiplier: f64,
    max_attempts: usize,
    required: BTreeMap<String, String>,
    thick: bool,
}

impl Default for Scheduler {
    fn default() -> Scheduler {
        Scheduler::new()
    }
}

impl Scheduler {
    /// Multiplier 1 (spread), 3 attempts, no required capabilities, thin provisioning.
    pub fn new() -> Scheduler {
        Scheduler { multiplier: 1.0, max_attempts: DEFAULT_MAX_ATTEMPTS, required: BTreeMap::new(), thick: false }
    }

    /// `capacity_weight_multiplier` (negative: least free first).
    pub fn weight_multiplier(&mut self, m: f64) -> &mut Self {
        self.multiplier = m;
        self
    }

    /// `scheduler_max_attempts` (at least 1; 1 disables retries).
    pub fn max_attempts(&mut self, n: usize) -> &mut Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Requires capability `key` to match `value` (an extra spec, with Cinder's operators).
    pub fn require(&mut self, key: &str, value: &str) -> &mut Self {
        self.required.insert(key.to_string(), value.to_string());
        self
    }

    /// `provisioning:type=thick`: judge by free space only, not over-subscription.
    pub fn thick(&mut self, yes: bool) -> &mut Self {
        self.thick = yes;
        self
    }

    /// Filters and weighs backends whose stats (or stats errors) are given: pure logic.
    pub fn schedule(
        &self,
        stats: &[std::result::Result<BackendStats, (String, Error)>],
        size: u64,
    ) -> (Vec<BackendStats>, Schedule) {
        let mut ok = Vec::new();
        let mut rejected = Vec::new();
        for s in stats {
            match s {
                Err((name, e)) => {
                    rejected.push(Rejected { backend: name.clone(), reason: format!("stats unavailable: {e}") })
                }
                Ok(s) => {
                    let verdict = capabilities_filter(&s.capabilities, &self.required)
                        .and_then(|()| capacity_filter(s, size, self.thick));
                    match verdict {
                        Ok(()) => ok.push(s.clone()),
                        Err(reason) => rejected.push(Rejected { backend: s.name.clone(), reason }),
                    }
                }
            }
        }
        let idx: Vec<usize> = (0..ok.len()).collect();
        let order = weigh(&ok, &idx, self.multiplier, self.thick);
        (ok, Schedule { order, rejected })
    }

    /// Gathers stats for every backend, filters and weighs them.
    ///
    /// # Errors
    /// None itself; backends whose stats fail are listed in [`Schedule::rejected`].
    pub fn plan(&self, backends: &[Backend], size: u64) -> Schedule {
        let stats: Vec<_> = backends.iter().map(|b| gather_stats(b).map_err(|e| (b.name.clone(), e))).collect();
        self.schedule(&stats, size).1
    }

    /// Places volume `volume-<volume_id>` of `size` bytes: gathers stats, filters, weighs, and
    /// calls `create(backend, pool, image name, size)` on the best backend, then the next ones
    /// when it fails, up to the attempt limit. `create` must leave nothing behind when it fails.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a bad volume id, [`ErrorKind::NoSpace`] ("No valid
    /// backend was found") when every backend was filtered out or every attempt failed; the
    /// message lists each backend and why, and the last creation error is the source.
    pub fn place_and_create<T>(
        &self,
        backends: &[Backend],
        volume_id: &str,
        size: u64,
        mut create: impl FnMut(&Backend, &Pool, &str, u64) -> Result<T>,
    ) -> Result<Placed<T>> {
        let _s = tracing::info_span!("placement.place", volume = volume_id, size).entered();
        const OP: &str = "placement.place";
        if volume_id.is_empty() || volume_id.contains(['/', '@', '\0']) || volume_id.chars().any(char::is_whitespace) {
            return Err(Error::invalid(OP, format!("invalid volume id {volume_id:?}")));
        }
        let image = format!("volume-{volume_id}");
        let schedule = self.plan(backends, size);
        let mut failed = Vec::new();
        let mut last_err = None;
        for w in schedule.order.iter().take(self.max_attempts) {
            let Some(backend) = backends.iter().find(|b| b.name == w.name) else { continue };
            tracing::info!(backend = %backend.name, weight = w.weight, "trying backend");
            let r = Pool::open(&backend.cluster, &backend.pool).and_then(|pool| {
                let v = create(backend, &pool, &image, size)?;
                Ok((pool, v))
            });
            match r {
                Ok((pool, value)) => {
                    return Ok(Placed {
                        backend: backend.name.clone(),
                        pool: pool.name().to_string(),
                        image,
                        value,
                        failed,
                        rejected: schedule.rejected,
                    })
                }
                Err(e) => {
                    tracing::warn!(backend = %backend.name, error = %e, "creation failed; trying the next backend");
                    failed.push(FailedAttempt { backend: backend.name.clone(), kind: e.kind(), error: e.to_string() });
                    last_err = Some(e);
                }
            }
        }
        let mut why: Vec<String> = schedule.rejected.iter().map(|r| format!("{}: {}", r.backend, r.reason)).collect();
        why.extend(failed.iter().map(|f| format!("{}: creation failed: {}", f.backend, f.error)));
        let skipped = schedule.order.len().saturating_sub(self.max_attempts);
        if skipped > 0 {
            why.push(format!("{skipped} more backend(s) not tried: max attempts {} reached", self.max_attempts));
        }
        if backends.is_empty() {
            why.push("no backends given".into());
        }
        let e = Error::new(
            ErrorKind::NoSpace,
            OP,
            format!("No valid backend was found for volume {volume_id} ({size} bytes): {}", why.join("; ")),
        );
        Err(match last_err {
            Some(src) => e.with_source(src),
            None => e,
        })
    }
}

/// Places with the default [`Scheduler`] (spread, 3 attempts); see
/// [`Scheduler::place_and_create`].
///
/// # Errors
/// As [`Scheduler::place_and_create`].
pub fn place_and_create<T>(
    backends: &[Backend],
    volume_id: &str,
    size: u64,
    create: impl FnMut(&Backend, &Pool, &str, u64) -> Result<T>,
) -> Result<Placed<T>> {
    Scheduler::new().place_and_create(backends, volume_id, size, create)
}

/// A create function for [`Scheduler::place_and_create`] that creates the image with `opts`
/// (`rbd_create4`), as Cinder's `create_volume` does.
pub fn create_volume_image(opts: &ImageOptions) -> impl FnMut(&Backend, &Pool, &str, u64) -> Result<()> + '_ {
    move |_b, pool, name, size| pool.create_image(name, size, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn stats(name: &str, free_gib: u64, used_gib: u64, prov_gib: u64) -> BackendStats {
        BackendStats {
            name: name.into(),
            total_bytes: (free_gib + used_gib) * GIB,
            free_bytes: free_gib * GIB,
            used_bytes: used_gib * GIB,
            provisioned_bytes: prov_gib * GIB,
            quota_bytes: None,
            max_avail_bytes: free_gib * GIB,
            reserved_percentage: 0.0,
            max_over_subscription_ratio: 20.0,
            thin_provisioning: true,
            capabilities: BTreeMap::new(),
        }
    }

    #[test]
    fn cinder_rbd_free_formula_is_quota_aware() {
        let df = br#"{"stats":{"total_bytes":100},"pools":[{"name":"volumes","id":3,"stats":{"stored":300,"max_avail":1000,"bytes_used":900}},{"name":"old","stats":{"bytes_used":5,"max_avail":7}}]}"#;
        assert_eq!(parse_df(df, "volumes").unwrap(), (300, 1000));
        assert_eq!(parse_df(df, "old").unwrap(), (5, 7), "pre-Nautilus bytes_used");
        assert_eq!(parse_df(df, "nope").unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(parse_df(b"junk", "volumes").unwrap_err().kind(), ErrorKind::Malformed);
        assert_eq!(parse_quota(br#"{"pool_name":"v","quota_max_objects":0,"quota_max_bytes":0}"#).unwrap(), None);
        assert_eq!(parse_quota(br#"{"quota_max_bytes":500}"#).unwrap(), Some(500));

        let from = |used, avail, quota| {
            let b = BackendStats::from_usage("x", used, avail, quota, 0);
            (b.free_bytes, b.total_bytes)
        };
        assert_eq!(from(300, 1000, None), (1000, 1300), "no quota: free = max_avail, total = free + used");
        assert_eq!(from(300, 1000, Some(500)), (200, 500), "quota: free = quota - used");
        assert_eq!(from(300, 100, Some(500)), (100, 400), "capped by max_avail");
        assert_eq!(from(600, 1000, Some(500)), (0, 600), "over quota: no space");
        assert_eq!(from(300, 1000, Some(0)), (1000, 1300), "quota 0 means none");
    }

    #[test]
    fn capacity_filter_follows_cinder() {
        // Thick: free minus reserved must hold the volume.
        let mut s = stats("a", 10, 90, 0);
        assert!(capacity_filter(&s, 10 * GIB, true).is_ok());
        assert!(capacity_filter(&s, 11 * GIB, true).unwrap_err().contains("insufficient free space"));
        s.reserved_percentage = 5.0; // 5 GiB of the 100 GiB total
        assert!(capacity_filter(&s, 6 * GIB, true).is_err());
        assert!(capacity_filter(&s, 5 * GIB, true).is_ok());
        // Thin: over-subscription ratio and adjusted free virtual capacity.
        let mut s = stats("b", 10, 90, 1900);
        assert!(capacity_filter(&s, 100 * GIB, false).is_ok(), "(1900 + 100) / 100 = 20 is allowed");
        let e = capacity_filter(&s, 101 * GIB, false).unwrap_err();
        assert!(e.contains("maximum over subscription ratio 20.00"), "{e}");
        s.provisioned_bytes = 0;
        s.free_bytes = GIB; // adjusted free virtual = 1 GiB x 20
        assert!(capacity_filter(&s, 20 * GIB, false).is_ok());
        assert!(capacity_filter(&s, 21 * GIB, false).unwrap_err().contains("free virtual space"));
        s.max_over_subscription_ratio = 0.5;
        assert!(capacity_filter(&s, GIB, false).unwrap_err().contains("invalid maximum over subscription ratio"));
        assert!(capacity_filter(&s, 0, false).is_ok(), "size 0 (manage) always passes");
        let empty = stats("c", 0, 0, 0);
        assert!(capacity_filter(&empty, GIB, false).unwrap_err().contains("total capacity"));
    }

    #[test]
    fn capabilities_use_cinder_operators() {
        let caps: BTreeMap<String, String> = [("tier", "ssd"), ("iops", "5000"), ("proto", "ceph rbd"), ("v", "b")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ok = |k: &str, v: &str| capabilities_filter(&caps, &BTreeMap::from([(k.to_string(), v.to_string())]));
        assert!(ok("tier", "ssd").is_ok());
        assert!(ok("tier", "hdd").is_err());
        assert!(ok("capabilities:tier", "ssd").is_ok());
        assert!(ok("qos:anything", "x").is_ok(), "other scopes are not capabilities");
        assert!(ok("missing", "x").unwrap_err().contains("not reported"));
        assert!(ok("iops", "= 4000").is_ok());
        assert!(ok("iops", "= 6000").is_err());
        assert!(ok("iops", "== 5000").is_ok());
        assert!(ok("iops", "!= 5000").is_err());
        assert!(ok("iops", "<= 5000").is_ok());
        assert!(ok("tier", "s== ssd").is_ok());
        assert!(ok("v", "s< c").is_ok());
        assert!(ok("v", "s> c").is_err());
        assert!(ok("proto", "<in> rbd").is_ok());
        assert!(ok("proto", "<all-in> ceph rbd").is_ok());
        assert!(ok("proto", "<all-in> ceph nfs").is_err());
        assert!(ok("tier", "<or> nvme <or> ssd").is_ok());
        assert!(ok("tier", "<or> nvme <or> hdd").is_err());
    }

    #[test]
    fn weigher_spreads_or_stacks_and_schedule_reports_rejections() {
        let all = vec![stats("small", 1, 0, 0), stats("big", 9, 0, 0), stats("mid", 5, 0, 0)];
        let idx = [0, 1, 2];
        let names = |w: Vec<Weighed>| w.into_iter().map(|w| w.name).collect::<Vec<_>>();
        assert_eq!(names(weigh(&all, &idx, 1.0, false)), ["big", "mid", "small"]);
        assert_eq!(names(weigh(&all, &idx, -1.0, false)), ["small", "mid", "big"]);
        assert_eq!(names(weigh(&all, &idx, 1.0, true)), ["big", "mid", "small"], "thick: free minus reserved");
        let w = weigh(&all, &idx, 2.0, false);
        assert_eq!((w[0].weight, w[2].weight), (2.0, 0.0), "normalised x multiplier");
        let tie = vec![stats("x", 3, 0, 0), stats("y", 3, 0, 0)];
        assert_eq!(names(weigh(&tie, &[0, 1], 1.0, false)), ["x", "y"], "ties keep the order");

        let mut sched = Scheduler::new();
        sched.thick(true);
        let input = vec![
            Ok(stats("small", 1, 0, 0)),
            Ok(stats("big", 9, 0, 0)),
            Err(("down".to_string(), Error::new(ErrorKind::Timeout, "df", "mon timeout"))),
        ];
        let (_, s) = sched.schedule(&input, 2 * GIB);
        assert_eq!(names(s.order), ["big"]);
        assert_eq!(s.rejected.len(), 2);
        assert!(s.rejected[0].reason.contains("insufficient free space"), "{:?}", s.rejected);
        assert!(s.rejected[1].reason.contains("stats unavailable"), "{:?}", s.rejected);
    }
}
