//! Small shared helpers: C strings and the buffer-size probe loops librbd and librados use.

use std::ffi::{c_char, CStr, CString};

use crate::error::{Error, Result};

/// Converts a name to a C string, rejecting interior NUL with a typed error.
pub(crate) fn cstr(op: &'static str, what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|e| Error::invalid(op, format!("{what} {s:?} contains a NUL byte")).with_source(e))
}

/// Reads a C string the library owns; lossy on invalid UTF-8.
///
/// # Safety
/// `p` must be null or point at a NUL-terminated string valid for the call.
pub(crate) unsafe fn from_c(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: the caller promises a valid NUL-terminated string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Splits a buffer of NUL-separated strings (as `rbd_list`-style calls return).
pub(crate) fn split_nul(buf: &[u8]) -> Vec<String> {
    buf.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
}

/// Calls `f(buf, &mut len)` until it stops answering `-ERANGE`, growing the buffer to the size
/// the library asked for (the in/out `size_t*` convention of `rbd_*_list` calls).
pub(crate) fn grow_buf_inout<T: Clone + Default>(
    initial: usize,
    mut f: impl FnMut(*mut T, &mut usize) -> i64,
) -> std::result::Result<Vec<T>, i64> {
    let mut len = initial.max(1);
    for _ in 0..16 {
        let mut buf = vec![T::default(); len];
        let mut want = len;
        let r = f(buf.as_mut_ptr(), &mut want);
        if r == -(libc::ERANGE as i64) {
            len = want.max(len * 2);
            continue;
        }
        if r < 0 {
            return Err(r);
        }
        // Some calls return the count in `want`, others in `r`; keep what the caller asked for.
        buf.truncate(want.min(len));
        return Ok(buf);
    }
    Err(-(libc::ERANGE as i64))
}

/// Formats `pool[/namespace]/image[@snap]` for error targets and spans.
pub(crate) fn spec(pool: &str, ns: &str, image: &str, snap: Option<&str>) -> String {
    let mut s = String::with_capacity(pool.len() + image.len() + 8);
    s.push_str(pool);
    s.push('/');
    if !ns.is_empty() {
        s.push_str(ns);
        s.push('/');
    }
    s.push_str(image);
    if let Some(snap) = snap {
        s.push('@');
        s.push_str(snap);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_nul_skips_empties() {
        assert_eq!(split_nul(b"a\0bb\0\0"), vec!["a", "bb"]);
    }

    #[test]
    fn grow_buf_retries_on_erange() {
        let mut calls = 0;
        let v: Vec<u8> = grow_buf_inout(1, |p, len| {
            calls += 1;
            if *len < 4 {
                *len = 4;
                return -(libc::ERANGE as i64);
            }
            // SAFETY: p points to at least 4 bytes here.
            unsafe { std::ptr::copy_nonoverlapping(c"abc".as_ptr().cast::<u8>(), p, 4) };
            *len = 4;
            0
        })
        .unwrap();
        assert_eq!(calls, 2);
        assert_eq!(v, b"abc\0");
    }

    #[test]
    fn spec_formats() {
        assert_eq!(spec("p", "", "i", Some("s")), "p/i@s");
        assert_eq!(spec("p", "ns", "i", None), "p/ns/i");
    }

    #[test]
    fn cstr_rejects_nul() {
        assert_eq!(cstr("t", "image", "a\0b").unwrap_err().kind(), crate::ErrorKind::InvalidArgument);
    }
}
