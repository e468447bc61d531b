//! Image options (`rbd_image_options_t`) for create, clone, copy, deep copy: every option id
//! Pacific knows, as a builder of plain Rust values.
//!
//! ```
//! use rbd_core::{CloneFormat, Features, ImageOptions};
//! let mut opts = ImageOptions::new();
//! opts.order(23).features(Features::LAYERING | Features::EXCLUSIVE_LOCK).clone_format(CloneFormat::V2);
//! assert_eq!(opts.get_clone_format(), Some(CloneFormat::V2));
//! ```

use librbd_sys as rbd_raw;

use crate::call::try_call;
use crate::error::Result;
use crate::util::cstr;

/// Image feature bits (`RBD_FEATURE_*` from `rbd/features.h`).
///
/// ```
/// use rbd_core::Features;
/// let f = Features::LAYERING | Features::EXCLUSIVE_LOCK;
/// assert!(f.contains(Features::LAYERING));
/// assert_eq!(Features::from_names("layering,exclusive-lock").unwrap(), f);
/// assert_eq!(f.names(), vec!["layering", "exclusive-lock"]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Features(pub u64);

impl Features {
    /// layering (clones).
    pub const LAYERING: Features = Features(rbd_raw::RBD_FEATURE_LAYERING as u64);
    /// striping v2.
    pub const STRIPINGV2: Features = Features(rbd_raw::RBD_FEATURE_STRIPINGV2 as u64);
    /// exclusive-lock.
    pub const EXCLUSIVE_LOCK: Features = Features(rbd_raw::RBD_FEATURE_EXCLUSIVE_LOCK as u64);
    /// object-map.
    pub const OBJECT_MAP: Features = Features(rbd_raw::RBD_FEATURE_OBJECT_MAP as u64);
    /// fast-diff.
    pub const FAST_DIFF: Features = Features(rbd_raw::RBD_FEATURE_FAST_DIFF as u64);
    /// deep-flatten.
    pub const DEEP_FLATTEN: Features = Features(rbd_raw::RBD_FEATURE_DEEP_FLATTEN as u64);
    /// journaling.
    pub const JOURNALING: Features = Features(rbd_raw::RBD_FEATURE_JOURNALING as u64);
    /// data-pool.
    pub const DATA_POOL: Features = Features(rbd_raw::RBD_FEATURE_DATA_POOL as u64);
    /// operations.
    pub const OPERATIONS: Features = Features(rbd_raw::RBD_FEATURE_OPERATIONS as u64);
    /// migrating.
    pub const MIGRATING: Features = Features(rbd_raw::RBD_FEATURE_MIGRATING as u64);
    /// non-primary.
    pub const NON_PRIMARY: Features = Features(rbd_raw::RBD_FEATURE_NON_PRIMARY as u64);
    /// Pacific's default set (layering, exclusive-lock, object-map, fast-diff, deep-flatten).
    pub const DEFAULT: Features = Features(61);

    const NAMES: [(&'static str, Features); 11] = [
        ("layering", Features::LAYERING),
        ("striping", Features::STRIPINGV2),
        ("exclusive-lock", Features::EXCLUSIVE_LOCK),
        ("object-map", Features::OBJECT_MAP),
        ("fast-diff", Features::FAST_DIFF),
        ("deep-flatten", Features::DEEP_FLATTEN),
        ("journaling", Features::JOURNALING),
        ("data-pool", Features::DATA_POOL),
        ("operations", Features::OPERATIONS),
        ("migrating", Features::MIGRATING),
        ("non-primary", Features::NON_PRIMARY),
    ];

    /// The raw bits.
    pub fn bits(self) -> u64 {
        self.0
    }
    /// True when every bit of `other` is set.
    pub fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }
    /// Feature names as `rbd info` prints them.
    pub fn names(self) -> Vec<&'static str> {
        Features::NAMES.iter().filter(|(_, f)| self.contains(*f)).map(|(n, _)| *n).collect()
    }
    /// Parses a comma-separated list of names (or a decimal number).
    pub fn from_names(s: &str) -> Option<Features> {
        if let Ok(n) = s.trim().parse::<u64>() {
            return Some(Features(n));
        }
        let mut f = Features(0);
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            f = f | Features::NAMES.iter().find(|(n, _)| *n == part)?.1;
        }
        Some(f)
    }
}

impl std::ops::BitOr for Features {
    type Output = Features;
    fn bitor(self, rhs: Features) -> Features {
        Features(self.0 | rhs.0)
    }
}

impl std::ops::BitAnd for Features {
    type Output = Features;
    fn bitand(self, rhs: Features) -> Features {
        Features(self.0 & rhs.0)
    }
}

/// Clone format: v1 needs a protected parent snapshot; v2 does not (needs mimic clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloneFormat {
    /// Clone v1 (parent snapshot must be protected).
    V1 = 1,
    /// Clone v2 (no protection needed; parent snapshot goes to the trash namespace on removal).
    V2 = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    U64(u64),
    Str(String),
}

/// Options for create, clone, copy and deep copy. Unset options take librbd's defaults.
///
/// ```
/// use rbd_core::{ImageOptions, Features};
/// let mut o = ImageOptions::new();
/// o.order(23).features(Features::LAYERING).stripe(1 << 23, 1);
/// assert_eq!(o.get_order(), Some(23));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageOptions {
    values: Vec<(u32, Value)>,
}

impl ImageOptions {
    /// Empty options.
    pub fn new() -> ImageOptions {
        ImageOptions::default()
    }
    fn set(&mut self, id: u32, v: Value) -> &mut Self {
        self.values.retain(|(k, _)| *k != id);
        self.values.push((id, v));
        self
    }
    fn get_u64(&self, id: u32) -> Option<u64> {
        self.values.iter().find_map(|(k, v)| match v {
            Value::U64(n) if *k == id => Some(*n),
            _ => None,
        })
    }
    /// Image format (always 2 for new images).
    pub fn format(&mut self, f: u64) -> &mut Self {
        self.set(rbd_raw::RBD_IMAGE_OPTION_FORMAT, Value::U64(f))
    }
    /// Feature bits.
    pub fn features(&mut self, f: Features) -> &mut Self {
        self.set(rbd_raw::RBD_IMAGE_OPTION_FEATURES, Value::U64(f.0))
    }
    /// Object size as a power of two (22 = 4 MiB, 23 = 8 MiB).
    pub fn order(&mut self, order: u8) -> &mut Self {
        self.set(rbd_raw::RBD_IMAGE_OPTION_ORDER, Value::U64(u64::from(order)))
    }
    /// Stripe unit (bytes) and count.
    pub fn stripe(&mut self, unit: u64, count: u64) -> &mut Self {
        self.set(rbd_raw::RBD_IMAGE_OPTION_STRIPE_UNIT, Value::U64(unit));
        self.set(rbd_raw::RBD_IMAGE_OPTION_STRIPE_COUNT, Value::U64(count))
    }
    /// Journal object order.
    pub fn journal_order(&mut self, order: u8) -> &mut Self {
        self.set(rbd_raw::RBD_IMAGE_OPTION_JOURNAL_ORDER, Value::U64(u64::from(order)))
    }
    /// Journal splay width.
    pub fn journal_splay_width(&mut self, w: u64) -> &mut Self {
        self.set(rbd_raw::RBD_IMAGE_OPTION_JOURNAL_SPLAY_WIDTH, Value::U64(w))
    }
    /// Journal pool.
    pub fn journal_pool(&mut self, pool: &str) -> &mut Self {
        self.set(rbd_raw::RBD_IMAGE_OPTION_JOURNAL_POOL, Value::Str(pool.into()))
    }
    /// Features to add to the defaults.
    pub fn features_set(&mut self, f: Features) -> &mut Self {
        self.set(rbd_raw::RBD_IMAGE_OPTION_FEATURES_SET, Value::U64(f.0))
    }
    /// Features to remove from the defaults.
    pub fn features_clear(&mut self, f: Features) -> &mut Self {
        self.set(rbd_raw::RBD_IMAGE_OPTION_FEATURES_CLEAR, Value::U64(f.0))
    }
    /// Separate data pool (erasure-coded pools).
    pub fn data_pool(&mut self, pool: &str) -> &mut Self {
        self.set(rbd_raw::RBD_IMAGE_OPTION_DATA_POOL, Value::Str(pool.into()))
    }
    /// Flatten the destination (deep copy, migration).
    pub fn flatten(&mut self, yes: bool) -> &mut Self {
        self.set(rbd_raw::RBD_IMAGE_OPTION_FLATTEN, Value::U64(u64::from(yes)))
    }
    /// Clone format.
    pub fn clone_format(&mut self, f: CloneFormat) -> &mut Self {
        self.set(rbd_raw::RBD_IMAGE_OPTION_CLONE_FORMAT, Value::U64(f as u64))
    }
    /// Mirror image mode (0 journal, 1 snapshot).
    pub fn mirror_image_mode(&mut self, mode: u64) -> &mut Self {
        self.set(rbd_raw::RBD_IMAGE_OPTION_MIRROR_IMAGE_MODE, Value::U64(mode))
    }
    /// The order set, if any.
    pub fn get_order(&self) -> Option<u8> {
        self.get_u64(rbd_raw::RBD_IMAGE_OPTION_ORDER).map(|o| o as u8)
    }
    /// The stripe unit set, if any.
    pub fn get_stripe_unit(&self) -> Option<u64> {
        self.get_u64(rbd_raw::RBD_IMAGE_OPTION_STRIPE_UNIT)
    }
    /// The stripe count set, if any.
    pub fn get_stripe_count(&self) -> Option<u64> {
        self.get_u64(rbd_raw::RBD_IMAGE_OPTION_STRIPE_COUNT)
    }
    /// The features set, if any.
    pub fn get_features(&self) -> Option<Features> {
        self.get_u64(rbd_raw::RBD_IMAGE_OPTION_FEATURES).map(Features)
    }
    /// The clone format set, if any.
    pub fn get_clone_format(&self) -> Option<CloneFormat> {
        match self.get_u64(rbd_raw::RBD_IMAGE_OPTION_CLONE_FORMAT)? {
            1 => Some(CloneFormat::V1),
            _ => Some(CloneFormat::V2),
        }
    }

    pub(crate) fn to_raw(&self) -> Result<RawOptions> {
        let mut raw: rbd_raw::rbd_image_options_t = std::ptr::null_mut();
        // SAFETY: creates a fresh options object, destroyed by RawOptions' Drop.
        unsafe { rbd_raw::rbd_image_options_create(&mut raw) };
        let opts = RawOptions(raw);
        for (id, v) in &self.values {
            let id_c = *id as std::ffi::c_int;
            match v {
                Value::U64(n) => {
                    try_call!(rbd_raw::rbd_image_options_set_uint64(raw, id_c, *n); "rbd_image_options_set_uint64", id)?;
                }
                Value::Str(s) => {
                    let c = cstr("rbd_image_options_set_string", "option", s)?;
                    try_call!(rbd_raw::rbd_image_options_set_string(raw, id_c, c.as_ptr()); "rbd_image_options_set_string", id)?;
                }
            }
        }
        Ok(opts)
    }
}

/// An owned `rbd_image_options_t`.
pub(crate) struct RawOptions(rbd_raw::rbd_image_options_t);

impl RawOptions {
    pub(crate) fn raw(&self) -> rbd_raw::rbd_image_options_t {
        self.0
    }
}

impl Drop for RawOptions {
    fn drop(&mut self) {
        // SAFETY: created by rbd_image_options_create, destroyed once.
        unsafe { rbd_raw::rbd_image_options_destroy(self.0) };
    }
}
