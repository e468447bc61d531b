//! Image and pool metadata (key/value pairs in the header), image-level config overrides, and
//! QoS limits (which are config overrides stored as `conf_rbd_qos_*` metadata).
//!
//! ```no_run
//! use rbd_core::{Image, Pool, QosLimits};
//! # let cluster = rbd_core::Cluster::shared(None, "admin")?;
//! # let pool = Pool::open(&cluster, "volumes")?;
//! let image = Image::open(&pool, "volume-1")?;
//! image.metadata_set("owner", "tenant-a")?;
//! assert_eq!(image.metadata_get("owner")?, "tenant-a");
//! image.set_qos(&QosLimits { iops: Some(500), write_bps: Some(100 << 20), ..QosLimits::default() })?;
//! assert_eq!(image.qos()?.iops, Some(500));
//! for opt in image.config_list()? {
//!     println!("{} = {} ({:?})", opt.name, opt.value, opt.source);
//! }
//! # Ok::<(), rbd_core::Error>(())
//! ```
//!
//! A metadata key `conf_<option>` is an image-level override of librbd option `<option>`
//! (librbd validates the option name and value, and open handles apply it on refresh);
//! [`Image::config_list`] then reports the option with [`ConfigSource::Image`].

use std::ffi::{c_char, c_int, CStr};

use librbd_sys as rbd_raw;

use crate::call::try_call;
use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::pool::Pool;
use crate::util::{cstr, from_c, grow_buf_inout};

/// Keys per `rbd_metadata_list` page.
const PAGE: u64 = 64;

/// Where a config value comes from (`rbd_config_source_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigSource {
    /// The client's configuration (conf file, defaults, mon config).
    Config,
    /// A pool-level override (pool metadata `conf_*`).
    Pool,
    /// An image-level override (image metadata `conf_*`).
    Image,
    /// A source this crate does not know.
    Unknown(u32),
}

impl ConfigSource {
    fn from_raw(s: rbd_raw::rbd_config_source_t) -> ConfigSource {
        match s {
            rbd_raw::rbd_config_source_t_RBD_CONFIG_SOURCE_CONFIG => ConfigSource::Config,
            rbd_raw::rbd_config_source_t_RBD_CONFIG_SOURCE_POOL => ConfigSource::Pool,
            rbd_raw::rbd_config_source_t_RBD_CONFIG_SOURCE_IMAGE => ConfigSource::Image,
            other => ConfigSource::Unknown(other),
        }
    }
}

/// One effective librbd option of an image (`rbd_config_option_t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigOption {
    /// Option name, e.g. `rbd_qos_iops_limit`.
    pub name: String,
    /// Effective value.
    pub value: String,
    /// Where the value comes from.
    pub source: ConfigSource,
}

/// librbd QoS limits of one image. `None` = no image-level override (the pool or client value
/// applies); `Some(0)` = explicitly unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QosLimits {
    /// `rbd_qos_iops_limit`: total IOPS.
    pub iops: Option<u64>,
    /// `rbd_qos_bps_limit`: total bytes per second.
    pub bps: Option<u64>,
    /// `rbd_qos_read_iops_limit`.
    pub read_iops: Option<u64>,
    /// `rbd_qos_write_iops_limit`.
    pub write_iops: Option<u64>,
    /// `rbd_qos_read_bps_limit`.
    pub read_bps: Option<u64>,
    /// `rbd_qos_write_bps_limit`.
    pub write_bps: Option<u64>,
}

impl QosLimits {
    /// The librbd option names, in field order.
    pub const OPTIONS: [&'static str; 6] = [
        "rbd_qos_iops_limit",
        "rbd_qos_bps_limit",
        "rbd_qos_read_iops_limit",
        "rbd_qos_write_iops_limit",
        "rbd_qos_read_bps_limit",
        "rbd_qos_write_bps_limit",
    ];

    fn fields(&self) -> [Option<u64>; 6] {
        [self.iops, self.bps, self.read_iops, self.write_iops, self.read_bps, self.write_bps]
    }

    fn from_fields(f: [Option<u64>; 6]) -> QosLimits {
        QosLimits { iops: f[0], bps: f[1], read_iops: f[2], write_iops: f[3], read_bps: f[4], write_bps: f[5] }
    }
}

/// Parses a `rbd_metadata_list` page: `keys` holds NUL-terminated keys, `vals` as many
/// NUL-terminated values (values may be empty).
fn parse_pairs(keys: &[c_char], vals: &[c_char]) -> Vec<(String, String)> {
    let as_bytes = |b: &[c_char]| -> Vec<u8> { b.iter().map(|&c| c as u8).collect() };
    let (k, v) = (as_bytes(keys), as_bytes(vals));
    let n = k.iter().filter(|&&b| b == 0).count();
    let ks = k.split(|&b| b == 0).take(n);
    let vs = v.split(|&b| b == 0).take(n);
    ks.zip(vs)
        .map(|(a, b)| (String::from_utf8_lossy(a).into_owned(), String::from_utf8_lossy(b).into_owned()))
        .collect()
}

/// Lists every pair through a paged `*_metadata_list` call:
/// `call(start_after, max, keys, &mut keys_len, vals, &mut vals_len)`.
fn list_paged(
    op: &'static str,
    target: impl Fn() -> String,
    mut call: impl FnMut(&CStr, u64, *mut c_char, &mut usize, *mut c_char, &mut usize) -> c_int,
) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut start = String::new();
    let (mut klen, mut vlen) = (4096usize, 8192usize);
    loop {
        let start_c = cstr(op, "metadata key", &start)?;
        let page = loop {
            let mut keys = vec![0 as c_char; klen];
            let mut vals = vec![0 as c_char; vlen];
            let (mut kl, mut vl) = (klen, vlen);
            let r = call(&start_c, PAGE, keys.as_mut_ptr(), &mut kl, vals.as_mut_ptr(), &mut vl);
            if r == -libc::ERANGE {
                // The lengths needed are filled in; grow to them.
                if kl <= klen && vl <= vlen {
                    klen *= 2;
                    vlen *= 2;
                } else {
                    klen = klen.max(kl);
                    vlen = vlen.max(vl);
                }
                if klen > (1 << 30) {
                    return Err(Error::from_errno(i64::from(r), op, Some(target())));
                }
                continue;
            }
            crate::call::c_try(r, op, || Some(target()))?;
            break parse_pairs(&keys[..kl.min(klen)], &vals[..vl.min(vlen)]);
        };
        let full = page.len() as u64 >= PAGE;
        match page.last() {
            Some((k, _)) => start = k.clone(),
            None => break,
        }
        out.extend(page);
        if !full {
            break;
        }
    }
    Ok(out)
}

/// Reads one value through a `*_metadata_get(key, buf, &len)` call (in/out length, -ERANGE).
fn get_value(
    op: &'static str,
    target: impl Fn() -> String,
    call: impl FnMut(*mut c_char, &mut usize) -> i64,
) -> Result<String> {
    let buf = grow_buf_inout::<c_char>(256, call).map_err(|r| Error::from_errno(r, op, Some(target())))?;
    if buf.is_empty() {
        return Ok(String::new());
    }
    let mut buf = buf;
    // Make sure there is a terminator even if librbd filled the buffer exactly.
    buf.push(0);
    // SAFETY: buf is NUL-terminated (pushed above).
    Ok(unsafe { from_c(buf.as_ptr()) })
}

impl Image {
    /// The value of metadata `key`. Wraps `rbd_metadata_get`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the key is not set.
    pub fn metadata_get(&self, key: &str) -> Result<String> {
        let _s = tracing::debug_span!("metadata_get", pool = %self.pool().name(), image = %self.name(), key).entered();
        let k = cstr("rbd_metadata_get", "metadata key", key)?;
        get_value(
            "rbd_metadata_get",
            || format!("{} key {key}", self.spec()),
            |p, len| {
                // SAFETY: `p` has `*len` bytes; librbd writes at most that many.
                i64::from(unsafe { rbd_raw::rbd_metadata_get(self.raw(), k.as_ptr(), p, len) })
            },
        )
    }

    /// Sets metadata `key` to `value`. Keys `conf_<option>` are validated by librbd as config
    /// overrides. Wraps `rbd_metadata_set`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an unknown `conf_` option or a bad value,
    /// [`ErrorKind::ReadOnly`] on a read-only handle.
    pub fn metadata_set(&self, key: &str, value: &str) -> Result<()> {
        let _s = tracing::debug_span!("metadata_set", pool = %self.pool().name(), image = %self.name(), key).entered();
        let k = cstr("rbd_metadata_set", "metadata key", key)?;
        let v = cstr("rbd_metadata_set", "metadata value", value)?;
        // SAFETY: valid handle and C strings.
        try_call!(rbd_raw::rbd_metadata_set(self.raw(), k.as_ptr(), v.as_ptr()); "rbd_metadata_set", format!("{} key {key}", self.spec()))?;
        Ok(())
    }

    /// Removes metadata `key`. Wraps `rbd_metadata_remove`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the key is not set.
    pub fn metadata_remove(&self, key: &str) -> Result<()> {
        let _s =
            tracing::debug_span!("metadata_remove", pool = %self.pool().name(), image = %self.name(), key).entered();
        let k = cstr("rbd_metadata_remove", "metadata key", key)?;
        // SAFETY: valid handle and C string.
        try_call!(rbd_raw::rbd_metadata_remove(self.raw(), k.as_ptr()); "rbd_metadata_remove", format!("{} key {key}", self.spec()))?;
        Ok(())
    }

    /// Every metadata pair, sorted by key (including `conf_*` overrides). Wraps
    /// `rbd_metadata_list`, paging 64 keys at a time.
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn metadata_list(&self) -> Result<Vec<(String, String)>> {
        let _s = tracing::debug_span!("metadata_list", pool = %self.pool().name(), image = %self.name()).entered();
        list_paged(
            "rbd_metadata_list",
            || self.spec(),
            |start, max, k, kl, v, vl| {
                // SAFETY: `k`/`v` have `*kl`/`*vl` bytes; librbd writes at most that many, or only
                // the needed lengths when returning -ERANGE.
                unsafe { rbd_raw::rbd_metadata_list(self.raw(), start.as_ptr(), max, k, kl, v, vl) }
            },
        )
    }

    /// Every librbd option with its effective value for this image and where the value comes
    /// from. Wraps `rbd_config_image_list`.
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn config_list(&self) -> Result<Vec<ConfigOption>> {
        let _s = tracing::debug_span!("config_list", pool = %self.pool().name(), image = %self.name()).entered();
        let mut n: c_int = 256;
        for _ in 0..16 {
            let mut v: Vec<rbd_raw::rbd_config_option_t> = vec![Default::default(); n.max(1) as usize];
            let mut got = n;
            // SAFETY: `v` has `got` entries; librbd fills at most that many or returns -ERANGE
            // with the count needed.
            let r = unsafe { rbd_raw::rbd_config_image_list(self.raw(), v.as_mut_ptr(), &mut got) };
            if r == -libc::ERANGE {
                n = got.max(n.saturating_mul(2));
                continue;
            }
            crate::call::c_try(r, "rbd_config_image_list", || Some(self.spec()))?;
            let got = got.clamp(0, n);
            let out = v[..got as usize]
                .iter()
                .map(|o| ConfigOption {
                    // SAFETY: librbd allocated these NUL-terminated strings.
                    name: unsafe { from_c(o.name) },
                    // SAFETY: as above.
                    value: unsafe { from_c(o.value) },
                    source: ConfigSource::from_raw(o.source),
                })
                .collect();
            // SAFETY: frees exactly the `got` entries librbd filled.
            unsafe { rbd_raw::rbd_config_image_list_cleanup(v.as_mut_ptr(), got) };
            return Ok(out);
        }
        Err(Error::new(ErrorKind::OutOfRange, "rbd_config_image_list", "option count kept growing")
            .with_target(self.spec()))
    }

    /// Sets the image's QoS limits: each `Some` is written as metadata `conf_<option>`, each
    /// `None` removes the image override (missing keys are fine). Open handles pick the change
    /// up on their next refresh.
    ///
    /// # Errors
    /// As [`Image::metadata_set`].
    pub fn set_qos(&self, limits: &QosLimits) -> Result<()> {
        let _s = tracing::debug_span!("set_qos", pool = %self.pool().name(), image = %self.name(), ?limits).entered();
        for (opt, val) in QosLimits::OPTIONS.iter().zip(limits.fields()) {
            let key = format!("conf_{opt}");
            match val {
                Some(v) => self.metadata_set(&key, &v.to_string())?,
                None => match self.metadata_remove(&key) {
                    Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                    _ => {}
                },
            }
        }
        Ok(())
    }

    /// The image-level QoS overrides (`None` where the image sets none).
    ///
    /// # Errors
    /// [`ErrorKind::Malformed`] when a stored value is not a number; errors from librbd.
    pub fn qos(&self) -> Result<QosLimits> {
        let _s = tracing::debug_span!("qos", pool = %self.pool().name(), image = %self.name()).entered();
        let mut f = [None; 6];
        for (slot, opt) in f.iter_mut().zip(QosLimits::OPTIONS) {
            let key = format!("conf_{opt}");
            match self.metadata_get(&key) {
                Ok(v) => {
                    let n = v.trim().parse::<u64>().map_err(|_| {
                        Error::new(ErrorKind::Malformed, "qos", format!("{key} = {v:?} is not a number"))
                            .with_target(self.spec())
                    })?;
                    *slot = Some(n);
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(QosLimits::from_fields(f))
    }
}

impl Pool {
    /// The value of pool metadata `key`. Wraps `rbd_pool_metadata_get`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the key is not set.
    pub fn pool_metadata_get(&self, key: &str) -> Result<String> {
        let _s = tracing::debug_span!("pool_metadata_get", pool = %self.name(), key).entered();
        let k = cstr("rbd_pool_metadata_get", "metadata key", key)?;
        get_value(
            "rbd_pool_metadata_get",
            || format!("{} key {key}", self.name()),
            |p, len| {
                // SAFETY: `p` has `*len` bytes; librbd writes at most that many.
                i64::from(unsafe { rbd_raw::rbd_pool_metadata_get(self.raw(), k.as_ptr(), p, len) })
            },
        )
    }

    /// Sets pool metadata `key` (`conf_<option>` keys are pool-level config overrides). Wraps
    /// `rbd_pool_metadata_set`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for an unknown `conf_` option,
    /// [`ErrorKind::PermissionDenied`] without write caps.
    pub fn pool_metadata_set(&self, key: &str, value: &str) -> Result<()> {
        let _s = tracing::debug_span!("pool_metadata_set", pool = %self.name(), key).entered();
        let k = cstr("rbd_pool_metadata_set", "metadata key", key)?;
        let v = cstr("rbd_pool_metadata_set", "metadata value", value)?;
        // SAFETY: valid ioctx and C strings.
        try_call!(rbd_raw::rbd_pool_metadata_set(self.raw(), k.as_ptr(), v.as_ptr()); "rbd_pool_metadata_set", format!("{} key {key}", self.name()))?;
        Ok(())
    }

    /// Removes pool metadata `key`. Wraps `rbd_pool_metadata_remove`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the key is not set.
    pub fn pool_metadata_remove(&self, key: &str) -> Result<()> {
        let _s = tracing::debug_span!("pool_metadata_remove", pool = %self.name(), key).entered();
        let k = cstr("rbd_pool_metadata_remove", "metadata key", key)?;
        // SAFETY: valid ioctx and C string.
        try_call!(rbd_raw::rbd_pool_metadata_remove(self.raw(), k.as_ptr()); "rbd_pool_metadata_remove", format!("{} key {key}", self.name()))?;
        Ok(())
    }

    /// Every pool metadata pair, sorted by key. Wraps `rbd_pool_metadata_list` (paged).
    ///
    /// # Errors
    /// Errors from librbd.
    pub fn pool_metadata_list(&self) -> Result<Vec<(String, String)>> {
        let _s = tracing::debug_span!("pool_metadata_list", pool = %self.name()).entered();
        list_paged(
            "rbd_pool_metadata_list",
            || self.name().to_string(),
            |start, max, k, kl, v, vl| {
                // SAFETY: `k`/`v` have `*kl`/`*vl` bytes; librbd writes at most that many, or only
                // the needed lengths when returning -ERANGE.
                unsafe { rbd_raw::rbd_pool_metadata_list(self.raw(), start.as_ptr(), max, k, kl, v, vl) }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbuf(s: &[u8]) -> Vec<c_char> {
        s.iter().map(|&b| b as c_char).collect()
    }

    #[test]
    fn parse_pairs_keeps_empty_values() {
        let keys = cbuf(b"a\0bb\0c\0");
        let vals = cbuf(b"1\0\0three\0");
        assert_eq!(
            parse_pairs(&keys, &vals),
            vec![("a".into(), "1".into()), ("bb".into(), String::new()), ("c".into(), "three".into())]
        );
        assert!(parse_pairs(&[], &[]).is_empty());
    }

    #[test]
    fn list_paged_pages_and_grows() {
        // A fake store of 150 keys; the fake demands sizes like librbd (ERANGE with lengths).
        let store: Vec<(String, String)> = (0..150).map(|i| (format!("k{i:03}"), "v".repeat(i * 3 % 500))).collect();
        let mut calls = 0;
        let got = list_paged("fake", String::new, |start, max, k, kl, v, vl| {
            calls += 1;
            let start = start.to_str().unwrap();
            let page: Vec<_> = store.iter().filter(|(key, _)| key.as_str() > start).take(max as usize).collect();
            let kneed: usize = page.iter().map(|(a, _)| a.len() + 1).sum();
            let vneed: usize = page.iter().map(|(_, b)| b.len() + 1).sum();
            let short = *kl < kneed || *vl < vneed;
            *kl = kneed;
            *vl = vneed;
            if short {
                return -libc::ERANGE;
            }
            let (mut ko, mut vo) = (0, 0);
            for (a, b) in page {
                for (i, byte) in a.bytes().chain([0]).enumerate() {
                    // SAFETY: test buffer sized above.
                    unsafe { *k.add(ko + i) = byte as c_char };
                }
                ko += a.len() + 1;
                for (i, byte) in b.bytes().chain([0]).enumerate() {
                    // SAFETY: test buffer sized above.
                    unsafe { *v.add(vo + i) = byte as c_char };
                }
                vo += b.len() + 1;
            }
            0
        })
        .unwrap();
        assert_eq!(got, store);
        assert!(calls >= 3, "three pages of 64");
    }

    #[test]
    fn qos_fields_round_trip() {
        let q = QosLimits {
            iops: Some(1),
            bps: None,
            read_iops: Some(3),
            write_iops: None,
            read_bps: Some(5),
            write_bps: Some(6),
        };
        assert_eq!(QosLimits::from_fields(q.fields()), q);
    }
}
