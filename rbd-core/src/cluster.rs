//! Cluster connections: build, connect with timeouts that work, fsid, stats, mon commands, and
//! a process-wide cache so recipes share one connection per (conf, client).
//!
//! ```no_run
//! use rbd_core::Cluster;
//! // One connection per (conf, client) for the whole process:
//! let a = Cluster::shared(None, "cinder")?;
//! let b = Cluster::shared(None, "cinder")?;
//! assert!(a.same_connection(&b));
//! println!("fsid {} free {} bytes", a.fsid()?, a.stats()?.avail_bytes);
//! # Ok::<(), rbd_core::Error>(())
//! ```

use std::collections::HashMap;
use std::ffi::{c_char, CString};
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use librados_sys as rados_raw;
use parking_lot::Mutex;

use crate::call::try_call;
use crate::error::{Error, ErrorKind, Result};
use crate::util::{cstr, from_c, split_nul};

/// Configures a connection before it exists ("not connected yet" is its own type, because
/// librados crashes when a handle is used before `rados_connect`).
///
/// ```no_run
/// use std::time::Duration;
/// let cluster = rbd_core::ClusterBuilder::new("admin")
///     .conf_file("/etc/ceph/ceph.conf")
///     .timeout(Duration::from_secs(10))
///     .connect()?;
/// println!("{}", cluster.fsid()?);
/// # Ok::<(), rbd_core::Error>(())
/// ```
#[derive(Clone)]
pub struct ClusterBuilder {
    client_id: String,
    cluster_name: String,
    conf_file: Option<PathBuf>,
    keyring: Option<PathBuf>,
    overrides: Vec<(String, String)>,
    mount_timeout: Option<Duration>,
    mon_op_timeout: Option<Duration>,
    osd_op_timeout: Option<Duration>,
}

/// True for `conf_set` options whose value is a secret (`key`, `*_key`, `*secret*`).
fn is_secret_option(name: &str) -> bool {
    let n = name.trim().to_ascii_lowercase().replace(['-', ' '], "_");
    n == "key" || n.ends_with("_key") || n.contains("secret")
}

/// Debug output never shows secrets: the values of `key`-like overrides are redacted.
impl std::fmt::Debug for ClusterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let overrides: Vec<(&str, &str)> = self
            .overrides
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret_option(k) { "<redacted>" } else { v.as_str() }))
            .collect();
        f.debug_struct("ClusterBuilder")
            .field("client_id", &self.client_id)
            .field("cluster_name", &self.cluster_name)
            .field("conf_file", &self.conf_file)
            .field("keyring", &self.keyring)
            .field("overrides", &overrides)
            .field("mount_timeout", &self.mount_timeout)
            .field("mon_op_timeout", &self.mon_op_timeout)
            .field("osd_op_timeout", &self.osd_op_timeout)
            .finish()
    }
}

impl ClusterBuilder {
    /// A builder for `client.<client_id>` (e.g. `"admin"`, `"cinder"`).
    pub fn new(client_id: impl Into<String>) -> ClusterBuilder {
        let id: String = client_id.into();
        let id = id.strip_prefix("client.").map(str::to_owned).unwrap_or(id);
        ClusterBuilder {
            client_id: id,
            cluster_name: "ceph".into(),
            conf_file: None,
            keyring: None,
            overrides: Vec::new(),
            mount_timeout: Some(Duration::from_secs(30)),
            mon_op_timeout: Some(Duration::from_secs(30)),
            osd_op_timeout: None,
        }
    }

    /// Reads this conf file (otherwise `CEPH_CONF`, then librados' default search).
    pub fn conf_file(&mut self, path: impl AsRef<Path>) -> &mut Self {
        self.conf_file = Some(path.as_ref().to_path_buf());
        self
    }

    /// The keyring file (otherwise whatever the conf says).
    pub fn keyring(&mut self, path: impl AsRef<Path>) -> &mut Self {
        self.keyring = Some(path.as_ref().to_path_buf());
        self
    }

    /// A `conf_set` override applied after the conf file is read. Values of secret options
    /// (`key`, `*_key`, `*secret*`) never appear in this builder's `Debug` output.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.overrides.push((key.into(), value.into()));
        self
    }

    /// Sets the connect (`client_mount_timeout`) and monitor-operation (`rados_mon_op_timeout`)
    /// timeouts at once.
    pub fn timeout(&mut self, t: Duration) -> &mut Self {
        self.mount_timeout = Some(t);
        self.mon_op_timeout = Some(t);
        self
    }

    /// `client_mount_timeout`: how long `connect` may wait for the monitors.
    pub fn mount_timeout(&mut self, t: Duration) -> &mut Self {
        self.mount_timeout = Some(t);
        self
    }

    /// `rados_mon_op_timeout`: how long a monitor command may take.
    pub fn mon_op_timeout(&mut self, t: Duration) -> &mut Self {
        self.mon_op_timeout = Some(t);
        self
    }

    /// `rados_osd_op_timeout`: how long an OSD operation (image I/O) may take; none by default.
    pub fn osd_op_timeout(&mut self, t: Duration) -> &mut Self {
        self.osd_op_timeout = Some(t);
        self
    }

    /// The client id (without `client.`).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The cluster name passed to `rados_create2` (default `ceph`; it names the default conf
    /// file `/etc/ceph/$cluster.conf` and expands `$cluster` in options).
    pub fn cluster_name(&mut self, name: impl Into<String>) -> &mut Self {
        self.cluster_name = name.into();
        self
    }

    /// Connects.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`] when the monitors do not answer within the mount timeout,
    /// [`ErrorKind::PermissionDenied`] for a bad key, [`ErrorKind::NotFound`] for a missing
    /// conf file or keyring, [`ErrorKind::Unsupported`] when the running librbd is older than
    /// the headers this crate was built against.
    pub fn connect(&self) -> Result<Cluster> {
        let span = tracing::debug_span!("cluster.connect", client = %self.client_id, conf = ?self.conf_file);
        let _g = span.enter();
        check_librbd_version()?;
        let name = cstr("rados_create2", "client name", &format!("client.{}", self.client_id))?;
        let cname = cstr("rados_create2", "cluster name", &self.cluster_name)?;
        let mut raw: rados_raw::rados_t = ptr::null_mut();
        try_call!(rados_raw::rados_create2(&mut raw, cname.as_ptr(), name.as_ptr(), 0); "rados_create2", self.client_id)?;
        // From here on `handle` owns `raw` and shuts it down on any error.
        let handle = ClusterInner { raw, client_id: self.client_id.clone(), conf_file: self.conf_file.clone() };
        let target = || self.conf_file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "default".into());
        // Library defaults, set before the conf file so that the file, CEPH_ARGS and
        // `ClusterBuilder::set` all override them:
        // - zero-copy AIO writes: every AIO write this crate issues keeps its buffer untouched
        //   until the completion fires (and librbd delays a completion while its cache still
        //   references the buffer), so librbd's defensive copy (the Pacific default, meant for
        //   guests that change pages under an in-flight write) only doubles write memory.
        for (k, v) in LIBRARY_DEFAULTS {
            let (ck, cv) = (cstr("rados_conf_set", "option", k)?, cstr("rados_conf_set", "value", v)?);
            try_call!(rados_raw::rados_conf_set(raw, ck.as_ptr(), cv.as_ptr()); "rados_conf_set", *k)?;
        }
        match &self.conf_file {
            Some(p) => {
                let path = cstr("rados_conf_read_file", "conf path", &p.to_string_lossy())?;
                if !p.exists() {
                    return Err(Error::new(ErrorKind::NotFound, "rados_conf_read_file", "conf file does not exist")
                        .with_target(p.display().to_string()));
                }
                try_call!(rados_raw::rados_conf_read_file(raw, path.as_ptr()); "rados_conf_read_file", target())?;
                // CEPH_ARGS applies on top of the file, as for the `rbd` CLI.
                if std::env::var_os("CEPH_ARGS").is_some() {
                    let _l = ENV_LOCK.lock();
                    try_call!(rados_raw::rados_conf_parse_env(raw, ptr::null()); "rados_conf_parse_env")?;
                }
            }
            None => {
                // Honours CEPH_CONF (and CEPH_ARGS), then the default search path.
                let _l = ENV_LOCK.lock();
                try_call!(rados_raw::rados_conf_parse_env(raw, ptr::null()); "rados_conf_parse_env")?;
                if std::env::var_os("CEPH_CONF").is_none() {
                    try_call!(rados_raw::rados_conf_read_file(raw, ptr::null()); "rados_conf_read_file", target())?;
                }
            }
        }
        let mut sets: Vec<(String, String)> = Vec::new();
        if let Some(k) = &self.keyring {
            sets.push(("keyring".into(), k.display().to_string()));
        }
        if let Some(t) = self.mount_timeout {
            sets.push(("client_mount_timeout".into(), secs(t)));
        }
        if let Some(t) = self.mon_op_timeout {
            sets.push(("rados_mon_op_timeout".into(), secs(t)));
        }
        if let Some(t) = self.osd_op_timeout {
            sets.push(("rados_osd_op_timeout".into(), secs(t)));
        }
        sets.extend(self.overrides.iter().cloned());
        for (k, v) in &sets {
            let ck = cstr("rados_conf_set", "option", k)?;
            let cv = cstr("rados_conf_set", "value", v)?;
            try_call!(rados_raw::rados_conf_set(raw, ck.as_ptr(), cv.as_ptr()); "rados_conf_set", k)?;
        }
        try_call!(rados_raw::rados_connect(raw); "rados_connect", format!("client.{}@{}", self.client_id, target()))?;
        tracing::debug!("connected");
        Ok(Cluster { inner: Arc::new(handle) })
    }
}

/// Options this crate sets on every connection before the conf file is read (see
/// [`ClusterBuilder::connect`]); the conf file, `CEPH_ARGS` and [`ClusterBuilder::set`] override them.
pub const LIBRARY_DEFAULTS: &[(&str, &str)] = &[("rbd_disable_zero_copy_writes", "false")];

/// `rados_conf_parse_env` is documented as not thread-safe (a static buffer): one at a time.
static ENV_LOCK: Mutex<()> = Mutex::new(());

fn secs(t: Duration) -> String {
    format!("{}", t.as_secs().max(1))
}

/// Fails with `Unsupported` when the running librbd is older than the headers we built with.
fn check_librbd_version() -> Result<()> {
    let (mut maj, mut min, mut ext) = (0, 0, 0);
    // SAFETY: rbd_version only writes the three ints.
    unsafe { librbd_sys::rbd_version(&mut maj, &mut min, &mut ext) };
    let code = ((maj as u32) << 16) | ((min as u32) << 8) | ext as u32;
    if code < librbd_sys::HEADER_VERSION_CODE {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "rbd_version",
            format!("librbd {maj}.{min}.{ext} is older than the headers this crate was built with"),
        ));
    }
    Ok(())
}

pub(crate) struct ClusterInner {
    raw: rados_raw::rados_t,
    client_id: String,
    conf_file: Option<PathBuf>,
}

// SAFETY: a connected rados_t is used concurrently by every librados client (QEMU, the rbd CLI's
// thread pool); RadosClient serialises its state with its own lock, and this crate never
// changes configuration after connect (conf_set lives on ClusterBuilder only).
unsafe impl Send for ClusterInner {}
// SAFETY: see Send; all post-connect calls take &self and are internally synchronised.
unsafe impl Sync for ClusterInner {}

impl Drop for ClusterInner {
    fn drop(&mut self) {
        // SAFETY: raw came from rados_create2 and is shut down exactly once, here.
        unsafe { rados_raw::rados_shutdown(self.raw) };
    }
}

/// A connected cluster. `Send + Sync`, cheap to clone (an `Arc`); the connection shuts down
/// when the last clone (and every pool and image opened from it) is dropped.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<ClusterInner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("client", &self.inner.client_id).field("conf", &self.inner.conf_file).finish()
    }
}

/// Cluster-wide usage from `rados_cluster_stat`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterStats {
    /// Raw capacity.
    pub total_bytes: u64,
    /// Raw bytes used.
    pub used_bytes: u64,
    /// Raw bytes available.
    pub avail_bytes: u64,
    /// Number of objects.
    pub num_objects: u64,
}

type CacheKey = (Option<PathBuf>, String);

fn cache() -> &'static Mutex<HashMap<CacheKey, Cluster>> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Cluster>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Cluster {
    /// Connects with `conf` (or `CEPH_CONF` / the default search) as `client.<client_id>`.
    ///
    /// # Errors
    /// As [`ClusterBuilder::connect`].
    pub fn connect(conf: Option<&Path>, client_id: &str) -> Result<Cluster> {
        let mut b = ClusterBuilder::new(client_id);
        if let Some(c) = conf {
            b.conf_file(c);
        }
        b.connect()
    }

    /// The process-wide shared connection for (`conf`, `client_id`): connects on first use and
    /// returns the same handle afterwards, so recipes never reconnect per operation.
    ///
    /// # Errors
    /// As [`ClusterBuilder::connect`] on first use.
    pub fn shared(conf: Option<&Path>, client_id: &str) -> Result<Cluster> {
        let conf = conf.map(Path::to_path_buf).or_else(|| std::env::var_os("CEPH_CONF").map(PathBuf::from));
        let key = (conf.clone(), client_id.trim_start_matches("client.").to_string());
        if let Some(c) = cache().lock().get(&key) {
            return Ok(c.clone());
        }
        // Connect outside the lock: a slow monitor must not block other clusters' lookups.
        let c = Cluster::connect(conf.as_deref(), client_id)?;
        Ok(cache().lock().entry(key).or_insert(c).clone())
    }

    /// Drops the shared connection for (`conf`, `client_id`) from the cache (handles already
    /// given out stay valid).
    pub fn evict_shared(conf: Option<&Path>, client_id: &str) {
        let conf = conf.map(Path::to_path_buf).or_else(|| std::env::var_os("CEPH_CONF").map(PathBuf::from));
        cache().lock().remove(&(conf, client_id.trim_start_matches("client.").to_string()));
    }

    pub(crate) fn raw(&self) -> rados_raw::rados_t {
        self.inner.raw
    }

    /// True when both handles are the same connection.
    pub fn same_connection(&self, other: &Cluster) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The client id this connection authenticated as (without `client.`).
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// The conf file given at connect time, if any.
    pub fn conf_file(&self) -> Option<&Path> {
        self.inner.conf_file.as_deref()
    }

    /// The cluster fsid. Wraps `rados_cluster_fsid`.
    ///
    /// # Errors
    /// Errors from librados.
    pub fn fsid(&self) -> Result<String> {
        let mut buf = vec![0 as c_char; 64];
        let n =
            try_call!(rados_raw::rados_cluster_fsid(self.raw(), buf.as_mut_ptr(), buf.len()); "rados_cluster_fsid")?;
        let bytes: Vec<u8> = buf[..n as usize].iter().map(|c| *c as u8).collect();
        Ok(String::from_utf8_lossy(&bytes).trim_end_matches('\0').to_string())
    }

    /// This client's global instance id (`rados_get_instance_id`).
    pub fn instance_id(&self) -> u64 {
        // SAFETY: connected handle.
        unsafe { rados_raw::rados_get_instance_id(self.raw()) }
    }

    /// This client's address, as used for blocklisting (`rados_getaddrs`).
    ///
    /// # Errors
    /// Errors from librados.
    pub fn addrs(&self) -> Result<String> {
        let mut p: *mut c_char = ptr::null_mut();
        try_call!(rados_raw::rados_getaddrs(self.raw(), &mut p); "rados_getaddrs")?;
        // SAFETY: librados returns a malloc'd NUL-terminated string we must free.
        let s = unsafe { from_c(p) };
        // SAFETY: p was allocated by librados with malloc.
        unsafe { libc::free(p.cast()) };
        Ok(s)
    }

    /// Reads a configuration value (`rados_conf_get`).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for an unknown option.
    pub fn conf_get(&self, key: &str) -> Result<String> {
        let k = cstr("rados_conf_get", "option", key)?;
        let mut len = 256usize;
        loop {
            let mut buf = vec![0 as c_char; len];
            // SAFETY: buf is len bytes.
            let r = unsafe { rados_raw::rados_conf_get(self.raw(), k.as_ptr(), buf.as_mut_ptr(), len) };
            if r == -libc::ENAMETOOLONG && len < 1 << 20 {
                len *= 4;
                continue;
            }
            crate::call::c_try(r, "rados_conf_get", || Some(key.to_string()))?;
            // SAFETY: librados NUL-terminated it.
            return Ok(unsafe { from_c(buf.as_ptr()) });
        }
    }

    /// Cluster usage (`rados_cluster_stat`).
    ///
    /// # Errors
    /// Errors from librados.
    pub fn stats(&self) -> Result<ClusterStats> {
        let mut st = rados_raw::rados_cluster_stat_t::default();
        try_call!(rados_raw::rados_cluster_stat(self.raw(), &mut st); "rados_cluster_stat")?;
        Ok(ClusterStats {
            total_bytes: st.kb * 1024,
            used_bytes: st.kb_used * 1024,
            avail_bytes: st.kb_avail * 1024,
            num_objects: st.num_objects,
        })
    }

    /// Pool names (`rados_pool_list`).
    ///
    /// # Errors
    /// Errors from librados.
    pub fn pool_list(&self) -> Result<Vec<String>> {
        let mut len = 4096usize;
        loop {
            let mut buf = vec![0u8; len];
            // SAFETY: buf is len bytes; rados_pool_list returns the length it needs.
            let r = unsafe { rados_raw::rados_pool_list(self.raw(), buf.as_mut_ptr().cast(), len) };
            let need = crate::call::c_try(r, "rados_pool_list", || None)? as usize;
            if need > len {
                len = need;
                continue;
            }
            return Ok(split_nul(&buf[..need]));
        }
    }

    /// Sends a JSON command to the monitors; returns (output buffer, status string).
    ///
    /// ```no_run
    /// # let cluster = rbd_core::Cluster::shared(None, "admin")?;
    /// let (out, _status) = cluster.mon_command(r#"{"prefix": "df", "format": "json"}"#, b"")?;
    /// # Ok::<(), rbd_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// The monitor's errno, with its status string as the message.
    pub fn mon_command(&self, json: &str, input: &[u8]) -> Result<(Vec<u8>, String)> {
        let cmd = cstr("rados_mon_command", "command", json)?;
        let cmds = [cmd.as_ptr()];
        let mut outbuf: *mut c_char = ptr::null_mut();
        let mut outlen = 0usize;
        let mut outs: *mut c_char = ptr::null_mut();
        let mut outslen = 0usize;
        // SAFETY: all pointers valid; outputs are freed below with rados_buffer_free.
        let r = unsafe {
            rados_raw::rados_mon_command(
                self.raw(),
                cmds.as_ptr() as *mut *const c_char,
                1,
                input.as_ptr().cast(),
                input.len(),
                &mut outbuf,
                &mut outlen,
                &mut outs,
                &mut outslen,
            )
        };
        let take = |p: *mut c_char, n: usize| -> Vec<u8> {
            if p.is_null() {
                return Vec::new();
            }
            // SAFETY: librados allocated n bytes at p.
            let v = unsafe { std::slice::from_raw_parts(p as *const u8, n) }.to_vec();
            // SAFETY: allocated by librados.
            unsafe { rados_raw::rados_buffer_free(p) };
            v
        };
        let out = take(outbuf, outlen);
        let status = String::from_utf8_lossy(&take(outs, outslen)).into_owned();
        if r < 0 {
            return Err(
                Error::from_errno(i64::from(r), "rados_mon_command", Some(json.to_string())).with_message(status)
            );
        }
        Ok((out, status))
    }

    /// Sends a JSON command to one monitor, `target` (its name, or its rank as a number);
    /// returns (output buffer, status string). Wraps `rados_mon_command_target`.
    ///
    /// # Errors
    /// The monitor's errno, with its status string as the message (`NotFound` for an unknown
    /// monitor).
    pub fn mon_command_target(&self, target: &str, json: &str, input: &[u8]) -> Result<(Vec<u8>, String)> {
        let _s = tracing::debug_span!("mon_command_target", target).entered();
        let name = cstr("rados_mon_command_target", "target", target)?;
        let cmd = cstr("rados_mon_command_target", "command", json)?;
        let cmds = [cmd.as_ptr()];
        let (mut outbuf, mut outlen): (*mut c_char, usize) = (ptr::null_mut(), 0);
        let (mut outs, mut outslen): (*mut c_char, usize) = (ptr::null_mut(), 0);
        // SAFETY: all pointers valid; outputs are freed below with rados_buffer_free.
        let r = unsafe {
            rados_raw::rados_mon_command_target(
                self.raw(),
                name.as_ptr(),
                cmds.as_ptr() as *mut *const c_char,
                1,
                input.as_ptr().cast(),
                input.len(),
                &mut outbuf,
                &mut outlen,
                &mut outs,
                &mut outslen,
            )
        };
        let take = |p: *mut c_char, n: usize| -> Vec<u8> {
            if p.is_null() {
                return Vec::new();
            }
            // SAFETY: librados allocated n bytes at p.
            let v = unsafe { std::slice::from_raw_parts(p as *const u8, n) }.to_vec();
            // SAFETY: allocated by librados.
            unsafe { rados_raw::rados_buffer_free(p) };
            v
        };
        let out = take(outbuf, outlen);
        let status = String::from_utf8_lossy(&take(outs, outslen)).into_owned();
        if r < 0 {
            return Err(Error::from_errno(i64::from(r), "rados_mon_command_target", Some(target.to_string()))
                .with_message(status));
        }
        Ok((out, status))
    }

    /// Changes a configuration option of this connected client at run time (as `ceph daemon
    /// ... config set`; options read only at start-up keep their old effect). Wraps
    /// `rados_conf_set`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for an unknown option, [`ErrorKind::InvalidArgument`] for a value
    /// the option does not accept.
    pub fn conf_set(&self, key: &str, value: &str) -> Result<()> {
        let shown = if is_secret_option(key) { "<redacted>" } else { value };
        let _s = tracing::debug_span!("conf_set", key, value = shown).entered();
        let (k, v) = (cstr("rados_conf_set", "option", key)?, cstr("rados_conf_set", "value", value)?);
        try_call!(rados_raw::rados_conf_set(self.raw(), k.as_ptr(), v.as_ptr()); "rados_conf_set", key.to_string())?;
        Ok(())
    }

    /// Blocklists a client address (as `ceph osd blocklist add`).
    ///
    /// # Errors
    /// Errors from librados.
    pub fn blocklist_add(&self, addr: &str, expire: Option<Duration>) -> Result<()> {
        let a = cstr("rados_blocklist_add", "address", addr)?;
        let secs = expire.map_or(0, |d| d.as_secs() as u32);
        try_call!(rados_raw::rados_blocklist_add(self.raw(), a.as_ptr() as *mut c_char, secs); "rados_blocklist_add", addr)?;
        Ok(())
    }

    /// Waits until this client has the latest OSD map (`rados_wait_for_latest_osdmap`).
    ///
    /// # Errors
    /// Errors from librados.
    pub fn wait_for_latest_osdmap(&self) -> Result<()> {
        try_call!(rados_raw::rados_wait_for_latest_osdmap(self.raw()); "rados_wait_for_latest_osdmap")?;
        Ok(())
    }
}

/// Keeps a CString and its pointer together for calls taking `const char*`.
pub(crate) fn opt_cstr(op: &'static str, what: &str, s: Option<&str>) -> Result<Option<CString>> {
    s.map(|s| cstr(op, what, s)).transpose()
}
