//! Turning C return codes into `Result`s in one place.

use crate::error::{Error, Result};

/// Checks a librados/librbd return value: negative is `-errno`, anything else passes through
/// (some calls return a byte count or an id).
#[inline]
pub(crate) fn c_try(ret: impl Into<i64>, op: &'static str, target: impl FnOnce() -> Option<String>) -> Result<u64> {
    let ret = ret.into();
    if ret < 0 {
        Err(Error::from_errno(ret, op, target()))
    } else {
        Ok(ret as u64)
    }
}

/// `try_call!(rbd_raw::rbd_open(...); "rbd_open", target_expr)` → `Result<u64>`.
///
/// The call is made inside an `unsafe` block: every use must be preceded by a `// SAFETY:` note
/// on the pointers it passes.
macro_rules! try_call {
    ($call:expr; $op:expr) => {
        // SAFETY: the caller's pointers are valid for the call (see the macro docs).
        $crate::call::c_try(
            #[allow(clippy::undocumented_unsafe_blocks)]
            unsafe {
                $call
            },
            $op,
            || None,
        )
    };
    ($call:expr; $op:expr, $target:expr) => {
        $crate::call::c_try(
            #[allow(clippy::undocumented_unsafe_blocks)]
            // SAFETY: the caller's pointers are valid for the call (see the macro docs).
            unsafe {
                $call
            },
            $op,
            || Some(::std::string::ToString::to_string(&$target)),
        )
    };
}
pub(crate) use try_call;
