//! Glance RBD image locations: `rbd://<fsid>/<pool>/<image>/<snap>`.
//!
//! This is the URL Glance's RBD store hands out and Nova parses to decide whether it can clone
//! an image (`glance_store/_drivers/rbd.py` `StoreLocation`, `nova/storage/rbd_utils.py`
//! `parse_url`). Each of the four parts is percent-encoded the way Python's
//! `urllib.parse.quote(part, '')` does: every byte outside the RFC 3986 unreserved set
//! (`A-Z a-z 0-9 - . _ ~`) becomes `%XX` (upper-case hex), `/` included. The legacy form
//! `rbd://<image>` (one part: no fsid, pool or snapshot) is what Glance wrote when it did not know
//! the fsid; it still parses, and formats back the same way.
//!
//! ```
//! use rbd_core::recipes::location::Location;
//! let loc = Location::parse("rbd://29e2ab17-de19-431f-b24f-3a31ece959a1/images/c0ffee/snap")?;
//! assert_eq!(loc.pool.as_deref(), Some("images"));
//! assert_eq!(loc.image, "c0ffee");
//! assert_eq!(loc.snap.as_deref(), Some("snap"));
//!
//! let odd = Location::new("fsid", "my pool", "a/b", "snap");
//! assert_eq!(odd.to_string(), "rbd://fsid/my%20pool/a%2Fb/snap");
//! assert_eq!(Location::parse(&odd.to_string())?, odd);
//!
//! let legacy = Location::parse("rbd://c0ffee")?;
//! assert!(legacy.is_legacy());
//! assert!(Location::parse("file:///tmp/x").is_err());
//! # Ok::<(), rbd_core::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The URL scheme prefix.
pub const SCHEME_PREFIX: &str = "rbd://";

/// A parsed Glance RBD location. `fsid`, `pool` and `snap` are all `Some` (the four-part form)
/// or all `None` (the legacy one-part form `rbd://<image>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The cluster fsid.
    pub fsid: Option<String>,
    /// The pool holding the image.
    pub pool: Option<String>,
    /// The image name (the Glance image id).
    pub image: String,
    /// The snapshot Nova clones from (`snap` for Glance images).
    pub snap: Option<String>,
}

impl Location {
    /// The four-part location `rbd://fsid/pool/image/snap`.
    pub fn new(fsid: &str, pool: &str, image: &str, snap: &str) -> Location {
        Location { fsid: Some(fsid.into()), pool: Some(pool.into()), image: image.into(), snap: Some(snap.into()) }
    }

    /// The legacy one-part location `rbd://image`.
    pub fn legacy(image: &str) -> Location {
        Location { fsid: None, pool: None, image: image.into(), snap: None }
    }

    /// True for the legacy one-part form (no fsid, pool or snapshot).
    pub fn is_legacy(&self) -> bool {
        self.fsid.is_none() && self.pool.is_none() && self.snap.is_none()
    }

    /// Parses `rbd://fsid/pool/image/snap` or `rbd://image`, percent-decoding each part.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidArgument`] when the scheme is not `rbd://`, the number of
    /// parts is not 1 or 4, a part is empty (before or after decoding), a `%` escape is
    /// malformed, or a decoded part is not UTF-8 or contains a NUL byte.
    pub fn parse(url: &str) -> Result<Location> {
        let bad = |why: String| Error::invalid("location_parse", format!("{why}: {url:?}"));
        let rest = url.strip_prefix(SCHEME_PREFIX).ok_or_else(|| bad("not an rbd:// location".into()))?;
        let parts = rest
            .split('/')
            .map(|p| {
                if p.is_empty() {
                    return Err(bad("empty component in rbd location".into()));
                }
                let d = percent_decode(p).map_err(|why| bad(format!("bad component {p:?} ({why})")))?;
                if d.is_empty() || d.contains('\0') {
                    return Err(bad(format!("bad component {p:?}")));
                }
                Ok(d)
            })
            .collect::<Result<Vec<String>>>()?;
        match <[String; 4]>::try_from(parts) {
            Ok([fsid, pool, image, snap]) => {
                Ok(Location { fsid: Some(fsid), pool: Some(pool), image, snap: Some(snap) })
            }
            Err(parts) if parts.len() == 1 => Ok(Location::legacy(&parts[0])),
            Err(parts) => Err(bad(format!("expected 1 or 4 components, got {}", parts.len()))),
        }
    }

    /// `pool/image@snap` (for messages), or just the image for the legacy form.
    pub fn spec(&self) -> String {
        match (&self.pool, &self.snap) {
            (Some(p), Some(s)) => format!("{p}/{}@{s}", self.image),
            (Some(p), None) => format!("{p}/{}", self.image),
            (None, Some(s)) => format!("{}@{s}", self.image),
            (None, None) => self.image.clone(),
        }
    }
}

impl fmt::Display for Location {
    /// Formats the URL with every part percent-encoded (`urllib.parse.quote(part, '')`). A
    /// location with only some of fsid/pool/snap set (not produced by [`Location::parse`])
    /// formats as the legacy form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.fsid, &self.pool, &self.snap) {
            (Some(fsid), Some(pool), Some(snap)) => write!(
                f,
                "{SCHEME_PREFIX}{}/{}/{}/{}",
                percent_encode(fsid),
                percent_encode(pool),
                percent_encode(&self.image),
                percent_encode(snap)
            ),
            _ => write!(f, "{SCHEME_PREFIX}{}", percent_encode(&self.image)),
        }
    }
}

impl FromStr for Location {
    type Err = Error;
    fn from_str(s: &str) -> Result<Location> {
        Location::parse(s)
    }
}

/// True for the RFC 3986 unreserved characters (what `urllib.parse.quote(s, '')` keeps).
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encodes every byte of `s` (UTF-8) outside the unreserved set, upper-case hex.
///
/// ```
/// use rbd_core::recipes::location::percent_encode;
/// assert_eq!(percent_encode("a b/c~d"), "a%20b%2Fc~d");
/// assert_eq!(percent_encode("é"), "%C3%A9");
/// ```
pub fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// Decodes `%XX` escapes (either hex case). Unlike Python's lenient `unquote`, a `%` not
/// followed by two hex digits is an error, and the result must be UTF-8.
///
/// # Errors
/// A short description of the problem.
///
/// ```
/// use rbd_core::recipes::location::percent_decode;
/// assert_eq!(percent_decode("a%20b%2fc").unwrap(), "a b/c");
/// assert!(percent_decode("100%").is_err());
/// ```
pub fn percent_decode(s: &str) -> std::result::Result<String, &'static str> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| char::from(c).to_digit(16);
            match (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
                (Some(h), Some(l)) => {
                    // Two hex digits: at most 0xff.
                    out.push(u8::try_from(h * 16 + l).map_err(|_| "bad escape")?);
                    i += 3;
                }
                _ => return Err("'%' not followed by two hex digits"),
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 after decoding")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const FSID: &str = "29e2ab17-de19-431f-b24f-3a31ece959a1";

    #[test]
    fn four_part_round_trip() {
        let url = format!("rbd://{FSID}/images/0f5e2a8b-6c8e-4d0c-9a6b-1f2e3d4c5b6a/snap");
        let loc = Location::parse(&url).unwrap();
        assert_eq!(loc, Location::new(FSID, "images", "0f5e2a8b-6c8e-4d0c-9a6b-1f2e3d4c5b6a", "snap"));
        assert!(!loc.is_legacy());
        assert_eq!(loc.to_string(), url);
        assert_eq!(loc.spec(), "images/0f5e2a8b-6c8e-4d0c-9a6b-1f2e3d4c5b6a@snap");
        assert_eq!(url.parse::<Location>().unwrap(), loc);
    }

    #[test]
    fn legacy_round_trip() {
        let loc = Location::parse("rbd://my-image").unwrap();
        assert_eq!(loc, Location::legacy("my-image"));
        assert!(loc.is_legacy());
        assert_eq!(loc.to_string(), "rbd://my-image");
        assert_eq!(loc.spec(), "my-image");
        let odd = Location::legacy("a/b c");
        assert_eq!(odd.to_string(), "rbd://a%2Fb%20c");
        assert_eq!(Location::parse(&odd.to_string()).unwrap(), odd);
    }

    #[test]
    fn quoting_matches_python_quote_with_no_safe_chars() {
        // urllib.parse.quote(x, '') for each x, computed with CPython 3.11.
        for (raw, quoted) in [
            ("images", "images"),
            ("a b", "a%20b"),
            ("a/b", "a%2Fb"),
            ("snap@1", "snap%401"),
            ("x%y", "x%25y"),
            ("A-Z_a.z~0", "A-Z_a.z~0"),
            ("?#[]!$&'()*+,;=:", "%3F%23%5B%5D%21%24%26%27%28%29%2A%2B%2C%3B%3D%3A"),
            ("ü", "%C3%BC"),
            ("日本", "%E6%97%A5%E6%9C%AC"),
        ] {
            assert_eq!(percent_encode(raw), quoted, "{raw}");
            assert_eq!(percent_decode(quoted).unwrap(), raw);
            let loc = Location::new(raw, raw, raw, raw);
            assert_eq!(Location::parse(&loc.to_string()).unwrap(), loc, "{raw}");
        }
    }

    #[test]
    fn decodes_lower_case_and_unneeded_escapes() {
        let loc = Location::parse("rbd://f/im%61ges/a%2fb/sn%61p").unwrap();
        assert_eq!(loc, Location::new("f", "images", "a/b", "snap"));
        // Formatting re-encodes canonically.
        assert_eq!(loc.to_string(), "rbd://f/images/a%2Fb/snap");
    }

    #[test]
    fn rejects_malformed() {
        for url in [
            "",
            "rbd:/",
            "rbd://",
            "rbd:/x/y/z/w",
            "RBD://f/p/i/s",
            "file:///f/p/i/s",
            "http://f/p/i/s",
            " rbd://f/p/i/s",
            "rbd://f/p",
            "rbd://f/p/i",
            "rbd://f/p/i/s/extra",
            "rbd://f//i/s",
            "rbd:///p/i/s",
            "rbd://f/p/i/",
            "rbd://f/p/i/s/",
            "rbd://image/",
            "rbd://%",
            "rbd://f/p/%zz/s",
            "rbd://f/p/i/%4",
            "rbd://f/p/%FF/s",
            "rbd://f/p/%00/s",
        ] {
            let e = Location::parse(url).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{url:?}: {e}");
            assert!(e.to_string().contains("location"), "{e}");
        }
    }

    #[test]
    fn partial_location_formats_as_legacy() {
        let loc = Location { fsid: None, pool: Some("p".into()), image: "i".into(), snap: Some("s".into()) };
        assert_eq!(loc.to_string(), "rbd://i");
        assert_eq!(loc.spec(), "p/i@s");
    }
}
