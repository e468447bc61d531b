//! Image and pool metadata (key/value), effective librbd config, and QoS limits.
//!
//! A missing key raises `KeyError`, as in python-rbd (and as a `dict` does).

use std::collections::BTreeMap;

use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;

use crate::errors::to_py;
use crate::image::Image;
use crate::pool::Pool;

/// Where a config value comes from (``RBD_CONFIG_SOURCE_*``).
#[pyclass(module = "rbd_core._native", frozen, eq, eq_int, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ConfigSource {
    /// The client configuration (conf file, defaults, mon config).
    Config = 0,
    /// A pool-level override (pool metadata ``conf_*``).
    Pool = 1,
    /// An image-level override (image metadata ``conf_*``).
    Image = 2,
    /// A source this library does not know.
    Unknown = 255,
}

/// One effective librbd option of an image.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ConfigOption {
    /// Option name, e.g. ``rbd_qos_iops_limit``.
    pub name: String,
    /// Effective value.
    pub value: String,
    /// Where it comes from.
    pub source: ConfigSource,
}

#[pymethods]
impl ConfigOption {
    fn __repr__(&self) -> String {
        format!("ConfigOption(name={:?}, value={:?}, source=ConfigSource.{:?})", self.name, self.value, self.source)
    }
}

/// librbd QoS limits of one image: None = no image-level override (the pool or client value
/// applies), 0 = explicitly unlimited.
#[pyclass(module = "rbd_core._native", frozen, eq, hash, get_all)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct QosLimits {
    /// ``rbd_qos_iops_limit``: total IOPS.
    pub iops: Option<u64>,
    /// ``rbd_qos_bps_limit``: total bytes per second.
    pub bps: Option<u64>,
    /// ``rbd_qos_read_iops_limit``.
    pub read_iops: Option<u64>,
    /// ``rbd_qos_write_iops_limit``.
    pub write_iops: Option<u64>,
    /// ``rbd_qos_read_bps_limit``.
    pub read_bps: Option<u64>,
    /// ``rbd_qos_write_bps_limit``.
    pub write_bps: Option<u64>,
}

impl QosLimits {
    fn to_lib(self) -> rbd_core::QosLimits {
        rbd_core::QosLimits {
            iops: self.iops,
            bps: self.bps,
            read_iops: self.read_iops,
            write_iops: self.write_iops,
            read_bps: self.read_bps,
            write_bps: self.write_bps,
        }
    }
}

#[pymethods]
impl QosLimits {
    #[new]
    #[pyo3(signature = (iops=None, bps=None, read_iops=None, write_iops=None, read_bps=None, write_bps=None))]
    fn new(
        iops: Option<u64>,
        bps: Option<u64>,
        read_iops: Option<u64>,
        write_iops: Option<u64>,
        read_bps: Option<u64>,
        write_bps: Option<u64>,
    ) -> Self {
        QosLimits { iops, bps, read_iops, write_iops, read_bps, write_bps }
    }

    fn __repr__(&self) -> String {
        let f = |v: Option<u64>| v.map_or("None".to_string(), |n| n.to_string());
        format!(
            "QosLimits(iops={}, bps={}, read_iops={}, write_iops={}, read_bps={}, write_bps={})",
            f(self.iops),
            f(self.bps),
            f(self.read_iops),
            f(self.write_iops),
            f(self.read_bps),
            f(self.write_bps)
        )
    }
}

/// Maps a NotFound from a metadata call to `KeyError`, other errors as usual.
fn key_error(e: rbd_core::Error, key: &str, owner: &str) -> PyErr {
    if e.kind() == rbd_core::ErrorKind::NotFound {
        PyKeyError::new_err(format!("no metadata {key:?} for {owner}"))
    } else {
        to_py(e)
    }
}

#[pymethods]
impl Image {
    /// The value of metadata ``key`` (KeyError when it is not set).
    fn metadata_get(&self, py: Python<'_>, key: String) -> PyResult<String> {
        let r = py.detach(|| self.with_lib(|i| i.metadata_get(&key)));
        r?.map_err(|e| key_error(e, &key, &format!("image {:?}", self.name_str())))
    }

    /// Sets metadata ``key`` to ``value`` (``conf_<option>`` keys are validated by librbd).
    fn metadata_set(&self, py: Python<'_>, key: String, value: String) -> PyResult<()> {
        self.with(py, move |i| i.metadata_set(&key, &value))
    }

    /// Removes metadata ``key`` (KeyError when it is not set).
    fn metadata_remove(&self, py: Python<'_>, key: String) -> PyResult<()> {
        let r = py.detach(|| self.with_lib(|i| i.metadata_remove(&key)));
        r?.map_err(|e| key_error(e, &key, &format!("image {:?}", self.name_str())))
    }

    /// Every metadata pair (including ``conf_*`` overrides), sorted by key.
    fn metadata_list(&self, py: Python<'_>) -> PyResult<BTreeMap<String, String>> {
        Ok(self.with(py, |i| i.metadata_list())?.into_iter().collect())
    }

    /// Every librbd option with its effective value and source.
    fn config_list(&self, py: Python<'_>) -> PyResult<Vec<ConfigOption>> {
        let v = self.with(py, |i| i.config_list())?;
        Ok(v.into_iter()
            .map(|c| ConfigOption {
                source: match c.source {
                    rbd_core::ConfigSource::Config => ConfigSource::Config,
                    rbd_core::ConfigSource::Pool => ConfigSource::Pool,
                    rbd_core::ConfigSource::Image => ConfigSource::Image,
                    _ => ConfigSource::Unknown,
                },
                name: c.name,
                value: c.value,
            })
            .collect())
    }

    /// The image-level QoS overrides.
    fn qos(&self, py: Python<'_>) -> PyResult<QosLimits> {
        let q = self.with(py, |i| i.qos())?;
        Ok(QosLimits {
            iops: q.iops,
            bps: q.bps,
            read_iops: q.read_iops,
            write_iops: q.write_iops,
            read_bps: q.read_bps,
            write_bps: q.write_bps,
        })
    }

    /// Sets the image's QoS limits: each value is an override, each None removes one.
    fn set_qos(&self, py: Python<'_>, limits: QosLimits) -> PyResult<()> {
        self.with(py, move |i| i.set_qos(&limits.to_lib()))
    }
}

#[pymethods]
impl Pool {
    /// The value of pool metadata ``key`` (KeyError when it is not set).
    fn pool_metadata_get(&self, py: Python<'_>, key: String) -> PyResult<String> {
        py.detach(|| self.inner.pool_metadata_get(&key))
            .map_err(|e| key_error(e, &key, &format!("pool {:?}", self.inner.name())))
    }

    /// Sets pool metadata ``key`` (``conf_<option>`` keys are pool-level config overrides).
    fn pool_metadata_set(&self, py: Python<'_>, key: String, value: String) -> PyResult<()> {
        py.detach(|| self.inner.pool_metadata_set(&key, &value)).map_err(to_py)
    }

    /// Removes pool metadata ``key`` (KeyError when it is not set).
    fn pool_metadata_remove(&self, py: Python<'_>, key: String) -> PyResult<()> {
        py.detach(|| self.inner.pool_metadata_remove(&key))
            .map_err(|e| key_error(e, &key, &format!("pool {:?}", self.inner.name())))
    }

    /// Every pool metadata pair, sorted by key.
    fn pool_metadata_list(&self, py: Python<'_>) -> PyResult<BTreeMap<String, String>> {
        Ok(py.detach(|| self.inner.pool_metadata_list()).map_err(to_py)?.into_iter().collect())
    }
}
