//! Provenance markers: how a crashed recipe's leftovers are recognised without a database.
//!
//! While a recipe builds an artifact whose name alone does not prove ownership, it stores the
//! image-metadata key [`KEY`] on it, holding `recipe=<name>;id=<id>;step=<step>;started=<unix>`,
//! and removes the key when the recipe completes. `reconcile` only removes what carries such
//! proof (or a name only recipes create), so live resources are never touched.
//!
//! ```
//! use rbd_core::recipes::provenance::Marker;
//! let m = Marker::new("nova.snapshot", "img-1", "clone");
//! let parsed = Marker::parse(&m.to_value()).unwrap();
//! assert_eq!(parsed.recipe, "nova.snapshot");
//! assert_eq!(parsed.id, "img-1");
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{ErrorKind, Result};
use crate::image::Image;

/// The image-metadata key that marks an artifact under construction.
pub const KEY: &str = "rbd_core.recipe";

/// A parsed provenance marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// Recipe name, e.g. `nova.snapshot`.
    pub recipe: String,
    /// The recipe's resource id (image id, volume id, backup id).
    pub id: String,
    /// The step that created the artifact.
    pub step: String,
    /// Unix time the recipe started.
    pub started: u64,
}

impl Marker {
    /// A marker stamped now.
    pub fn new(recipe: &str, id: &str, step: &str) -> Marker {
        let started = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Marker { recipe: recipe.into(), id: id.into(), step: step.into(), started }
    }

    /// The metadata value.
    pub fn to_value(&self) -> String {
        format!("recipe={};id={};step={};started={}", self.recipe, self.id, self.step, self.started)
    }

    /// Parses a metadata value; `None` when it is not a marker.
    pub fn parse(v: &str) -> Option<Marker> {
        let mut m = Marker { recipe: String::new(), id: String::new(), step: String::new(), started: 0 };
        for part in v.split(';') {
            let (k, val) = part.split_once('=')?;
            match k {
                "recipe" => m.recipe = val.into(),
                "id" => m.id = val.into(),
                "step" => m.step = val.into(),
                "started" => m.started = val.parse().ok()?,
                _ => {}
            }
        }
        (!m.recipe.is_empty()).then_some(m)
    }

    /// True when this marker is an intent record for ANOTHER image: its id is `pool/image` and
    /// names something other than `pool/image` given here.
    ///
    /// A recipe that clones writes a marker whose id is the clone's `pool/image` on the SOURCE
    /// just before cloning: librbd copies image metadata into a new clone, so the clone is born
    /// marked and there is no window in which it exists unmarked. On the source such a marker
    /// proves nothing about the source itself, so `reconcile` ignores it there.
    ///
    /// ```
    /// use rbd_core::recipes::provenance::Marker;
    /// let m = Marker::new("nova.snapshot", "images/new-img", "clone");
    /// assert!(m.names_other_image("vms", "uuid_disk"));
    /// assert!(!m.names_other_image("images", "new-img"));
    /// assert!(!Marker::new("glance.upload", "img-1", "create").names_other_image("images", "img-1"));
    /// ```
    pub fn names_other_image(&self, pool: &str, image: &str) -> bool {
        match self.id.split_once('/') {
            Some((p, i)) => p != pool || i != image,
            None => false,
        }
    }

    /// Writes this marker on `image`.
    ///
    /// # Errors
    /// Errors from `rbd_metadata_set`.
    pub fn apply(&self, image: &Image) -> Result<()> {
        image.metadata_set(KEY, &self.to_value())
    }

    /// Reads the marker on `image`, if any.
    ///
    /// # Errors
    /// Errors from `rbd_metadata_get` other than not-found.
    pub fn read(image: &Image) -> Result<Option<Marker>> {
        match image.metadata_get(KEY) {
            Ok(v) => Ok(Marker::parse(&v)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the marker from `image` (already absent is fine).
    ///
    /// # Errors
    /// Errors from `rbd_metadata_remove` other than not-found.
    pub fn clear(image: &Image) -> Result<()> {
        match image.metadata_remove(KEY) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
