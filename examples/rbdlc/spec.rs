//! `POOL/IMAGE[@SNAP]` arguments.

use rbd_core::{Error, Result};

/// A parsed `pool[/namespace]/image[@snap]`.
#[derive(Debug, Clone)]
pub struct Spec {
    pub pool: String,
    pub namespace: String,
    pub image: String,
    pub snap: Option<String>,
}

impl std::str::FromStr for Spec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Spec> {
        let (path, snap) = match s.split_once('@') {
            Some((p, snap)) if !snap.is_empty() => (p, Some(snap.to_string())),
            Some(_) => return Err(Error::invalid("spec", format!("empty snapshot name in {s:?}"))),
            None => (s, None),
        };
        let parts: Vec<&str> = path.split('/').collect();
        let (pool, namespace, image) = match parts.as_slice() {
            [image] => ("rbd", "", *image),
            [pool, image] => (*pool, "", *image),
            [pool, ns, image] => (*pool, *ns, *image),
            _ => return Err(Error::invalid("spec", format!("expected POOL/IMAGE[@SNAP], got {s:?}"))),
        };
        if pool.is_empty() || image.is_empty() {
            return Err(Error::invalid("spec", format!("expected POOL/IMAGE[@SNAP], got {s:?}")));
        }
        Ok(Spec { pool: pool.into(), namespace: namespace.into(), image: image.into(), snap })
    }
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/", self.pool)?;
        if !self.namespace.is_empty() {
            write!(f, "{}/", self.namespace)?;
        }
        write!(f, "{}", self.image)?;
        if let Some(s) = &self.snap {
            write!(f, "@{s}")?;
        }
        Ok(())
    }
}
