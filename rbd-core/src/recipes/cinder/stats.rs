//! Pool capacity as Cinder reports it (`_get_pool_stats`).

use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::image::Image;
use crate::pool::Pool;

/// Capacity of a volume pool, computed with Cinder's formula.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolCapacity {
    /// Pool name.
    pub pool: String,
    /// Total bytes: `free + used` (Cinder's default `report_dynamic_total_capacity`).
    pub total_bytes: u64,
    /// Free bytes: the pool's `max_avail`, or with a quota `min(quota - used, max_avail)`.
    pub free_bytes: u64,
    /// Bytes stored in the pool (`stored`, or `bytes_used` before Nautilus).
    pub used_bytes: u64,
    /// Sum of the sizes of every image in the pool (thin provisioning).
    pub provisioned_bytes: u64,
    /// The pool's byte quota, when one is set.
    pub quota_bytes: Option<u64>,
}

impl PoolCapacity {
    /// Total in GiB rounded to 2 decimals, as Cinder reports `total_capacity_gb`.
    pub fn total_gib(&self) -> f64 {
        gib(self.total_bytes)
    }

    /// Free in GiB rounded to 2 decimals, as Cinder reports `free_capacity_gb`.
    pub fn free_gib(&self) -> f64 {
        gib(self.free_bytes)
    }

    /// Provisioned in GiB rounded to 2 decimals (`provisioned_capacity_gb`).
    pub fn provisioned_gib(&self) -> f64 {
        gib(self.provisioned_bytes)
    }
}

fn gib(b: u64) -> f64 {
    (b as f64 / f64::from(1u32 << 30) * 100.0).round() / 100.0
}

/// Capacity of `pool`: the monitors' `df` and `osd pool get-quota` (Cinder's two
/// `mon_command`s) plus the sum of image sizes (opens every image read-only, as Cinder does
/// for non-exclusive pools). Wraps `rados_mon_command`.
///
/// ```no_run
/// # let cluster = rbd_core::Cluster::shared(None, "admin")?;
/// let pool = rbd_core::Pool::open(&cluster, "volumes")?;
/// let cap = rbd_core::recipes::cinder::pool_capacity(&pool)?;
/// println!("{} GiB free of {} GiB", cap.free_gib(), cap.total_gib());
/// # Ok::<(), rbd_core::Error>(())
/// ```
///
/// # Errors
/// [`ErrorKind::PermissionDenied`] without monitor read caps, [`ErrorKind::NotFound`] when the
/// monitors do not report the pool, [`ErrorKind::Malformed`] for unexpected JSON.
pub fn pool_capacity(pool: &Pool) -> Result<PoolCapacity> {
    let _span = tracing::info_span!("cinder.stats", pool = %pool.name()).entered();
    let cluster = pool.cluster();
    let (df, _) = cluster.mon_command(r#"{"prefix":"df","format":"json"}"#, b"")?;
    let quota_cmd = serde_json::json!({"prefix": "osd pool get-quota", "pool": pool.name(), "format": "json"});
    let (quota, _) = cluster.mon_command(&quota_cmd.to_string(), b"")?;
    let mut cap = capacity_from_mon(pool.name(), &df, &quota)?;
    cap.provisioned_bytes = provisioned(pool)?;
    Ok(cap)
}

fn provisioned(pool: &Pool) -> Result<u64> {
    let mut sum = 0u64;
    for spec in pool.list_images()? {
        match Image::open_by_id(pool, &spec.id, true).and_then(|i| i.size()) {
            Ok(size) => sum = sum.saturating_add(size),
            Err(e) if e.kind() == ErrorKind::NotFound => {} // removed meanwhile
            Err(e) => return Err(e),
        }
    }
    Ok(sum)
}

fn malformed(what: &str) -> Error {
    Error::new(ErrorKind::Malformed, "cinder.stats", format!("unexpected monitor JSON: {what}"))
}

fn parse(buf: &[u8], what: &str) -> Result<Value> {
    serde_json::from_slice(buf).map_err(|e| malformed(what).with_source(e))
}

fn field(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// Cinder's formula over the two monitor replies (`provisioned_bytes` left 0).
pub(crate) fn capacity_from_mon(pool: &str, df: &[u8], quota: &[u8]) -> Result<PoolCapacity> {
    let df = parse(df, "df")?;
    let quota = parse(quota, "osd pool get-quota")?;
    let stats = df
        .get("pools")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("df has no pools"))?
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(pool))
        .ok_or_else(|| {
            Error::new(ErrorKind::NotFound, "cinder.stats", "the monitors do not report this pool").with_target(pool)
        })?
        .get("stats")
        .ok_or_else(|| malformed("pool without stats"))?;
    let used = field(stats, "stored").or_else(|| field(stats, "bytes_used")).ok_or_else(|| malformed("no stored"))?;
    let max_avail = field(stats, "max_avail").ok_or_else(|| malformed("no max_avail"))?;
    let quota_bytes = field(&quota, "quota_max_bytes").ok_or_else(|| malformed("no quota_max_bytes"))?;
    let free = if quota_bytes > 0 { quota_bytes.saturating_sub(used).min(max_avail) } else { max_avail };
    Ok(PoolCapacity {
        pool: pool.to_string(),
        total_bytes: free.saturating_add(used),
        free_bytes: free,
        used_bytes: used,
        provisioned_bytes: 0,
        quota_bytes: (quota_bytes > 0).then_some(quota_bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DF: &str = r#"{"stats":{"total_bytes":12884901888,"total_avail_bytes":12883686085},
        "pools":[{"name":"rbd","id":1,"stats":{"stored":19,"bytes_used":19,"max_avail":100}},
                 {"name":"volumes","id":3,"stats":{"stored":3221225472,"bytes_used":9663676416,"max_avail":10737418240}}]}"#;

    #[test]
    fn no_quota_uses_max_avail() {
        let q = br#"{"pool_name":"volumes","quota_max_objects":0,"quota_max_bytes":0}"#;
        let c = capacity_from_mon("volumes", DF.as_bytes(), q).unwrap();
        assert_eq!(c.used_bytes, 3 << 30, "stored, not raw bytes_used");
        assert_eq!(c.free_bytes, 10 << 30);
        assert_eq!(c.total_bytes, 13 << 30, "dynamic total = free + used");
        assert_eq!(c.quota_bytes, None);
        assert!((c.total_gib() - 13.0).abs() < 1e-9);
    }

    #[test]
    fn quota_bounds_free() {
        let q = br#"{"quota_max_bytes":5368709120}"#; // 5 GiB quota, 3 GiB used
        let c = capacity_from_mon("volumes", DF.as_bytes(), q).unwrap();
        assert_eq!(c.free_bytes, 2 << 30);
        assert_eq!(c.total_bytes, 5 << 30);
        assert_eq!(c.quota_bytes, Some(5 << 30));
        let q = br#"{"quota_max_bytes":1073741824}"#; // over quota: free is 0, not negative
        let c = capacity_from_mon("volumes", DF.as_bytes(), q).unwrap();
        assert_eq!(c.free_bytes, 0);
    }

    #[test]
    fn pre_nautilus_and_bad_json() {
        let df = br#"{"pools":[{"name":"p","stats":{"bytes_used":7,"max_avail":3}}]}"#;
        let c = capacity_from_mon("p", df, br#"{"quota_max_bytes":0}"#).unwrap();
        assert_eq!((c.used_bytes, c.free_bytes, c.total_bytes), (7, 3, 10));
        assert_eq!(capacity_from_mon("x", df, br#"{"quota_max_bytes":0}"#).unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(capacity_from_mon("p", b"not json", b"{}").unwrap_err().kind(), ErrorKind::Malformed);
    }
}
