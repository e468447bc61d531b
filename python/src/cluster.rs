//! `Cluster`: a connection (context manager), cluster facts and monitor commands.

use std::path::PathBuf;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::PyResultExt;
use crate::pool::Pool;
use crate::util::ReleaseOnDrop;

/// A connection to a Ceph cluster (context manager).
#[pyclass(module = "rbd_core._native", frozen)]
pub struct Cluster {
    pub(crate) inner: ReleaseOnDrop<rbd_core::Cluster>,
}

/// Cluster usage (`rados_cluster_stat`).
#[pyclass(module = "rbd_core._native", frozen, eq, get_all)]
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterStats {
    /// Raw capacity in bytes.
    pub total_bytes: u64,
    /// Used bytes.
    pub used_bytes: u64,
    /// Available bytes.
    pub avail_bytes: u64,
    /// Number of objects.
    pub num_objects: u64,
}

#[pymethods]
impl ClusterStats {
    fn __repr__(&self) -> String {
        format!(
            "ClusterStats(total_bytes={}, used_bytes={}, avail_bytes={}, num_objects={})",
            self.total_bytes, self.used_bytes, self.avail_bytes, self.num_objects
        )
    }
}

#[pymethods]
impl Cluster {
    /// Connects as ``client.<client_id>`` using ``conffile`` (or CEPH_CONF / the default
    /// search). ``conf`` holds extra option overrides (a dict or pairs), ``timeout`` (seconds)
    /// bounds connect and monitor operations. With ``shared=True`` (the default, and only when
    /// no overrides are given) the process-wide connection for (conffile, client_id) is reused.
    /// ``cluster_name`` is the cluster name given to librados (default ``ceph``: it names the
    /// default conf file ``/etc/ceph/$cluster.conf``).
    #[new]
    #[pyo3(signature = (conffile=None, client_id="admin", conf=None, keyring=None, timeout=None, shared=true, cluster_name=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        conffile: Option<PathBuf>,
        client_id: &str,
        conf: Option<&Bound<'_, PyAny>>,
        keyring: Option<PathBuf>,
        timeout: Option<f64>,
        shared: bool,
        cluster_name: Option<String>,
    ) -> PyResult<Self> {
        let conf: Vec<(String, String)> = match conf {
            None => Vec::new(),
            Some(c) if c.hasattr("items")? => {
                c.call_method0("items")?.try_iter()?.map(|kv| kv?.extract()).collect::<PyResult<_>>()?
            }
            Some(c) => c.extract()?,
        };
        let client_id = client_id.to_string();
        let cluster_name = cluster_name.filter(|n| !n.is_empty() && n != "ceph");
        let plain = conf.is_empty() && keyring.is_none() && timeout.is_none() && cluster_name.is_none();
        let inner = py.detach(move || {
            if shared && plain {
                return rbd_core::Cluster::shared(conffile.as_deref(), &client_id);
            }
            let mut b = rbd_core::ClusterBuilder::new(client_id);
            if let Some(n) = &cluster_name {
                b.cluster_name(n);
            }
            if let Some(c) = &conffile {
                b.conf_file(c);
            }
            if let Some(k) = &keyring {
                b.keyring(k);
            }
            if let Some(t) = timeout {
                b.timeout(Duration::from_secs_f64(t.max(1.0)));
            }
            for (k, v) in conf {
                b.set(k, v);
            }
            b.connect()
        });
        Ok(Cluster { inner: ReleaseOnDrop::new(inner.py()?) })
    }

    /// The cluster fsid.
    fn fsid(&self, py: Python<'_>) -> PyResult<String> {
        py.detach(|| self.inner.fsid()).py()
    }

    /// The client id this connection authenticated as (without ``client.``).
    #[getter]
    fn client_id(&self) -> String {
        self.inner.client_id().to_string()
    }

    /// The global id of this client instance (the ``client.<N>`` in lock and watcher lists).
    #[getter]
    fn instance_id(&self) -> u64 {
        self.inner.instance_id()
    }

    /// This client's address as the monitors see it.
    fn addrs(&self, py: Python<'_>) -> PyResult<String> {
        py.detach(|| self.inner.addrs()).py()
    }

    /// Pool names.
    fn pool_list(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.inner.pool_list()).py()
    }

    /// Cluster usage.
    fn stats(&self, py: Python<'_>) -> PyResult<ClusterStats> {
        let s = py.detach(|| self.inner.stats()).py()?;
        Ok(ClusterStats {
            total_bytes: s.total_bytes,
            used_bytes: s.used_bytes,
            avail_bytes: s.avail_bytes,
            num_objects: s.num_objects,
        })
    }

    /// Sends a JSON command to the monitors (to monitor ``target`` only — its name, or its rank
    /// as an int — when given); returns ``(output bytes, status string)``. A failed command
    /// raises the exception for its errno; the monitor's status string is the exception's
    /// ``.detail``.
    #[pyo3(signature = (cmd, inbuf=b"".to_vec(), target=None))]
    fn mon_command<'py>(
        &self,
        py: Python<'py>,
        cmd: String,
        inbuf: Vec<u8>,
        target: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyBytes>, String)> {
        let target: Option<String> = match target {
            None => None,
            Some(t) if t.is_none() => None,
            Some(t) => Some(match t.extract::<i64>() {
                Ok(rank) => rank.to_string(),
                Err(_) => t.extract::<String>()?,
            }),
        };
        let c = &*self.inner;
        let (out, status) = py
            .detach(|| match &target {
                Some(t) => c.mon_command_target(t, &cmd, &inbuf),
                None => c.mon_command(&cmd, &inbuf),
            })
            .py()?;
        Ok((PyBytes::new(py, &out), status))
    }

    /// Changes a configuration option of this connected client at run time (``rados_conf_set``;
    /// ImageNotFound for an unknown option, InvalidArgument for a bad value).
    fn conf_set(&self, py: Python<'_>, key: String, value: String) -> PyResult<()> {
        py.detach(|| self.inner.conf_set(&key, &value)).py()
    }

    /// A configuration value.
    fn conf_get(&self, py: Python<'_>, key: String) -> PyResult<String> {
        py.detach(|| self.inner.conf_get(&key)).py()
    }

    /// Blocklists a client address (``ceph osd blocklist add``) for ``expire`` seconds (the
    /// cluster default when None).
    #[pyo3(signature = (addr, expire=None))]
    fn blocklist_add(&self, py: Python<'_>, addr: String, expire: Option<f64>) -> PyResult<()> {
        let expire = expire.map(|s| Duration::from_secs_f64(s.max(0.0)));
        py.detach(|| self.inner.blocklist_add(&addr, expire)).py()
    }

    /// Waits until this client has the latest OSD map.
    fn wait_for_latest_osdmap(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.wait_for_latest_osdmap()).py()
    }

    /// True when both handles use the same underlying connection.
    fn same_connection(&self, other: &Cluster) -> bool {
        self.inner.same_connection(&other.inner)
    }

    /// Opens a pool (optionally a namespace in it).
    #[pyo3(signature = (name, namespace=""))]
    fn open_pool(&self, py: Python<'_>, name: String, namespace: &str) -> PyResult<Pool> {
        let p = py.detach(|| rbd_core::Pool::open_ns(&self.inner, &name, namespace)).py()?;
        Ok(Pool::wrap(p))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Leaving the block does nothing: the connection lives while any handle (this one, a
    /// Pool, an Image) uses it, and shared connections stay cached for the process.
    #[pyo3(signature = (_exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        _exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> bool {
        false
    }

    fn __repr__(&self) -> String {
        format!("<rbd_core.Cluster client.{}>", self.inner.client_id())
    }
}
