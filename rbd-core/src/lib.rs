//! # rbd-core
//!
//! A safe Rust API over librbd/librados (Ceph Pacific and later) and the OpenStack RBD
//! lifecycle recipes built on it.
//!
//! ```no_run
//! use rbd_core::{Cluster, Image, ImageOptions, Pool};
//! let cluster = Cluster::shared(None, "admin")?; // CEPH_CONF or the default search path
//! let pool = Pool::open(&cluster, "rbd")?;
//! pool.create_image("demo", 64 << 20, &ImageOptions::new())?;
//! let image = Image::open(&pool, "demo")?;
//! image.write(0, b"hello")?;
//! drop(image);
//! pool.remove_image("demo")?;
//! # Ok::<(), rbd_core::Error>(())
//! ```
//!
//! Handles: [`Cluster`] and [`Pool`] are `Send + Sync` and cheap to clone; [`Image`] is
//! `Send + Sync` (librbd locks internally). Every handle closes on `Drop`, and children keep
//! their parents alive.
#![deny(missing_docs)]
#![cfg_attr(test, deny(warnings))]

mod call;
mod cluster;
mod error;
mod image;
mod options;
mod pool;
mod progress;
mod util;

// Feature modules: each is public and glob re-exported, so its public items are reachable both
// as `rbd_core::Name` and `rbd_core::module::Name`.
pub mod aio;
pub mod copy;
pub mod diff;
pub mod export;
pub mod group;
pub mod import;
pub mod layering;
pub mod lock;
pub mod metadata;
pub mod recipes;
pub mod snapshot;
pub mod stream;
pub mod transfer;
pub mod trash;
pub use aio::*;
pub use copy::*;
pub use diff::*;
pub use group::*;
pub use layering::*;
pub use lock::*;
pub use metadata::*;
pub use snapshot::*;
pub use trash::*;

pub use cluster::{Cluster, ClusterBuilder, ClusterStats};
pub use error::{Error, ErrorKind, Result};
pub use image::{fadvise, Image, ImageInfo, Watcher};
pub use options::{CloneFormat, Features, ImageOptions};
pub use pool::{ImageSpec, Pool, PoolStats};
pub use progress::{CancelToken, Progress, ProgressFn};

/// The raw FFI crates, for what the safe API does not cover.
pub mod ffi {
    pub use librados_sys as rados;
    pub use librbd_sys as rbd;
}

/// The librbd version this process runs (`rbd_version`): (major, minor, extra).
pub fn librbd_version() -> (i32, i32, i32) {
    let (mut a, mut b, mut c) = (0, 0, 0);
    // SAFETY: rbd_version only writes the three ints.
    unsafe { librbd_sys::rbd_version(&mut a, &mut b, &mut c) };
    (a, b, c)
}
