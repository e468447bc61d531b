//! The one flatten entry point every recipe uses.
//!
//! Recipes never call [`Image::flatten_with_progress`] directly: they go through a
//! [`FlattenGate`], so the cluster-wide flatten throttle can bound how many flattens run at
//! once across processes and hosts. [`DirectFlatten`] (the default) flattens immediately.
//!
//! ```no_run
//! use rbd_core::recipes::flatten::{default_gate, FlattenGate};
//! # let cluster = rbd_core::Cluster::shared(None, "admin")?;
//! # let pool = rbd_core::Pool::open(&cluster, "volumes")?;
//! let img = rbd_core::Image::open(&pool, "volume-1")?;
//! default_gate().flatten(&img, &mut rbd_core::Progress::none())?;
//! # Ok::<(), rbd_core::Error>(())
//! ```

use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;

use crate::error::Result;
use crate::image::Image;
use crate::progress::Progress;

/// Something that flattens a clone, possibly waiting for a slot first.
pub trait FlattenGate: Send + Sync {
    /// Flattens `image` (a clone), reporting progress; may wait for capacity first.
    ///
    /// # Errors
    /// Errors from flatten (`InvalidArgument` for a non-clone), `Cancelled`, `Timeout` when no
    /// slot became free in time.
    fn flatten(&self, image: &Image, progress: &mut Progress<'_>) -> Result<()>;
}

/// Flattens immediately, with no cluster-wide bound.
#[derive(Debug, Default, Clone, Copy)]
pub struct DirectFlatten;

impl FlattenGate for DirectFlatten {
    fn flatten(&self, image: &Image, progress: &mut Progress<'_>) -> Result<()> {
        image.flatten_with_progress(progress)
    }
}

fn slot() -> &'static RwLock<Arc<dyn FlattenGate>> {
    static GATE: OnceLock<RwLock<Arc<dyn FlattenGate>>> = OnceLock::new();
    GATE.get_or_init(|| RwLock::new(Arc::new(DirectFlatten)))
}

/// The process-wide gate recipes use unless given one explicitly.
pub fn default_gate() -> Arc<dyn FlattenGate> {
    slot().read().clone()
}

/// Replaces the process-wide gate (e.g. with the cluster-wide throttle).
pub fn set_default_gate(gate: Arc<dyn FlattenGate>) {
    *slot().write() = gate;
}
