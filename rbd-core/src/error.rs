//! One error type for the whole crate: the errno, a kind a caller can match on, and what was
//! being done to which pool/image/snapshot.
//!
//! ```
//! use rbd_core::{Error, ErrorKind};
//! let e = Error::from_errno(-16, "rbd_remove", Some("volumes/volume-1".to_string()));
//! assert_eq!(e.kind(), ErrorKind::Busy);
//! assert_eq!(e.errno(), 16);
//! assert_eq!(e.to_string(), "rbd_remove(volumes/volume-1): busy (in use) (errno 16, EBUSY)");
//! ```

use std::fmt;

/// What went wrong, in terms a caller can branch on.
///
/// The errno → kind table follows Ceph's own Python binding (`errno_to_exception` in
/// `rbd.pyx`), so `ImageNotFound` in python-rbd is [`ErrorKind::NotFound`] here.
///
/// ```
/// use rbd_core::ErrorKind;
/// assert_eq!(ErrorKind::from_errno(libc::ENOENT), ErrorKind::NotFound);
/// assert_eq!(ErrorKind::from_errno(libc::EROFS), ErrorKind::ReadOnly);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// ENOENT: the image, snapshot, pool, group or object does not exist.
    NotFound,
    /// EEXIST: the name is already taken.
    Exists,
    /// EBUSY: in use (watchers, protected snapshot, clone children, lock held).
    Busy,
    /// ENOTEMPTY: the image still has snapshots.
    HasSnapshots,
    /// EROFS: the handle is read-only, or another client holds the exclusive lock.
    ReadOnly,
    /// EPERM/EACCES: the client's caps do not allow this.
    PermissionDenied,
    /// EINVAL: bad argument or state (for example flattening a non-clone).
    InvalidArgument,
    /// EDOM/ERANGE: a value is out of range.
    OutOfRange,
    /// ENOSPC: the cluster or pool is full.
    NoSpace,
    /// EDQUOT: a quota or snapshot limit was reached.
    QuotaExceeded,
    /// ETIMEDOUT: the monitor or OSD did not answer in time.
    Timeout,
    /// ESHUTDOWN/EBLOCKLISTED: this client was fenced (blocklisted) or shut down.
    Shutdown,
    /// EOPNOTSUPP/ENOSYS: not supported by this librbd or cluster.
    Unsupported,
    /// ECANCELED: cancelled by a progress callback or a cancel token.
    Cancelled,
    /// EBADMSG and stream-format problems: malformed or truncated input.
    Malformed,
    /// EIO and other I/O failures.
    Io,
    /// Anything else; see [`Error::errno`].
    Other,
}

impl ErrorKind {
    /// Maps a positive or negative errno to a kind.
    pub fn from_errno(errno: i32) -> ErrorKind {
        match errno.abs() {
            libc::ENOENT => ErrorKind::NotFound,
            libc::EEXIST => ErrorKind::Exists,
            libc::EBUSY => ErrorKind::Busy,
            libc::ENOTEMPTY => ErrorKind::HasSnapshots,
            libc::EROFS => ErrorKind::ReadOnly,
            libc::EPERM | libc::EACCES => ErrorKind::PermissionDenied,
            libc::EINVAL => ErrorKind::InvalidArgument,
            libc::EDOM | libc::ERANGE | libc::EFBIG | libc::EOVERFLOW => ErrorKind::OutOfRange,
            libc::ENOSPC => ErrorKind::NoSpace,
            libc::EDQUOT => ErrorKind::QuotaExceeded,
            libc::ETIMEDOUT => ErrorKind::Timeout,
            libc::ESHUTDOWN | libc::ENOTCONN => ErrorKind::Shutdown,
            libc::EOPNOTSUPP | libc::ENOSYS => ErrorKind::Unsupported,
            libc::ECANCELED => ErrorKind::Cancelled,
            libc::EBADMSG => ErrorKind::Malformed,
            libc::EIO => ErrorKind::Io,
            _ => ErrorKind::Other,
        }
    }

    /// A representative errno for errors raised by this library rather than by librbd.
    pub fn default_errno(self) -> i32 {
        match self {
            ErrorKind::NotFound => libc::ENOENT,
            ErrorKind::Exists => libc::EEXIST,
            ErrorKind::Busy => libc::EBUSY,
            ErrorKind::HasSnapshots => libc::ENOTEMPTY,
            ErrorKind::ReadOnly => libc::EROFS,
            ErrorKind::PermissionDenied => libc::EPERM,
            ErrorKind::InvalidArgument => libc::EINVAL,
            ErrorKind::OutOfRange => libc::EDOM,
            ErrorKind::NoSpace => libc::ENOSPC,
            ErrorKind::QuotaExceeded => libc::EDQUOT,
            ErrorKind::Timeout => libc::ETIMEDOUT,
            ErrorKind::Shutdown => libc::ESHUTDOWN,
            ErrorKind::Unsupported => libc::EOPNOTSUPP,
            ErrorKind::Cancelled => libc::ECANCELED,
            ErrorKind::Malformed => libc::EBADMSG,
            ErrorKind::Io => libc::EIO,
            ErrorKind::Other => libc::EIO,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::Exists => "already exists",
            ErrorKind::Busy => "busy (in use)",
            ErrorKind::HasSnapshots => "image has snapshots",
            ErrorKind::ReadOnly => "read-only (or exclusive lock held by another client)",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::OutOfRange => "out of range",
            ErrorKind::NoSpace => "no space left",
            ErrorKind::QuotaExceeded => "quota exceeded",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Shutdown => "client blocklisted or shut down",
            ErrorKind::Unsupported => "not supported",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Malformed => "malformed input",
            ErrorKind::Io => "I/O error",
            ErrorKind::Other => "error",
        }
    }
}

/// The crate's error: errno, kind, operation, target and an optional message or source.
///
/// Displays as `rbd_open(volumes/volume-1@snap): not found (errno 2, ENOENT)`.
pub struct Error {
    errno: i32,
    kind: ErrorKind,
    op: &'static str,
    target: Option<Box<str>>,
    message: Option<Box<str>>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
    recipe: Option<Box<RecipeContext>>,
}

/// Where in a recipe an error happened, and what went wrong while undoing.
#[derive(Debug)]
struct RecipeContext {
    recipe: &'static str,
    step: &'static str,
    undo_errors: Vec<Error>,
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error from a negative return code of a C call.
    pub fn from_errno(ret: i64, op: &'static str, target: impl Into<Option<String>>) -> Error {
        let errno = i32::try_from(ret.unsigned_abs()).unwrap_or(libc::EIO);
        Error {
            errno,
            kind: ErrorKind::from_errno(errno),
            op,
            target: target.into().map(String::into_boxed_str),
            message: None,
            source: None,
            recipe: None,
        }
    }

    /// An error raised by this library (validation, protocol), with a message.
    pub fn new(kind: ErrorKind, op: &'static str, message: impl Into<String>) -> Error {
        Error {
            errno: kind.default_errno(),
            kind,
            op,
            target: None,
            message: Some(message.into().into_boxed_str()),
            source: None,
            recipe: None,
        }
    }

    /// Shorthand for an [`ErrorKind::InvalidArgument`] error raised before anything changed.
    pub fn invalid(op: &'static str, message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidArgument, op, message)
    }

    /// Sets the target (`pool/image@snap`) this error is about.
    #[must_use]
    pub fn with_target(mut self, target: impl Into<String>) -> Error {
        self.target = Some(target.into().into_boxed_str());
        self
    }

    /// Adds a human message.
    #[must_use]
    pub fn with_message(mut self, message: impl Into<String>) -> Error {
        self.message = Some(message.into().into_boxed_str());
        self
    }

    /// Attaches an underlying error.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.source = Some(Box::new(source));
        self
    }

    /// The positive errno (for example 2 for ENOENT).
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// The kind, to match on.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The operation that failed (usually the C function name, or a recipe step).
    pub fn op(&self) -> &'static str {
        self.op
    }

    /// The `pool/image@snap` the operation was acting on, when known.
    pub fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }

    /// The extra message, when there is one.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// Marks this error as the failure of `recipe`'s step `step`, with the errors met while
    /// undoing (the original error stays the error; undo errors are attached).
    #[must_use]
    pub fn in_recipe(mut self, recipe: &'static str, step: &'static str, undo_errors: Vec<Error>) -> Error {
        self.recipe = Some(Box::new(RecipeContext { recipe, step, undo_errors }));
        self
    }

    /// `(recipe, step)` when this error ended a recipe step.
    pub fn recipe_step(&self) -> Option<(&'static str, &'static str)> {
        self.recipe.as_ref().map(|r| (r.recipe, r.step))
    }

    /// Errors met while undoing the recipe after this error (empty when the undo was clean).
    pub fn undo_errors(&self) -> &[Error] {
        self.recipe.as_ref().map_or(&[], |r| r.undo_errors.as_slice())
    }

    /// True when the kind is `kind`.
    pub fn is(&self, kind: ErrorKind) -> bool {
        self.kind == kind
    }
}

fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EDOM => "EDOM",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::EBADMSG => "EBADMSG",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ESHUTDOWN => "ESHUTDOWN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EDQUOT => "EDQUOT",
        libc::ECANCELED => "ECANCELED",
        libc::EACCES => "EACCES",
        libc::ENOTCONN => "ENOTCONN",
        _ => "errno",
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.recipe {
            write!(f, "recipe {} failed at step '{}': ", r.recipe, r.step)?;
        }
        write!(f, "{}", self.op)?;
        if let Some(t) = &self.target {
            write!(f, "({t})")?;
        }
        write!(f, ": {}", self.kind.describe())?;
        if let Some(m) = &self.message {
            write!(f, ": {m}")?;
        }
        write!(f, " (errno {}, {})", self.errno, errno_name(self.errno))?;
        if let Some(r) = &self.recipe {
            for u in &r.undo_errors {
                write!(f, "; undo also failed: {u}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("errno", &self.errno)
            .field("op", &self.op)
            .field("target", &self.target)
            .field("message", &self.message)
            .field("source", &self.source)
            .field("recipe", &self.recipe)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<std::ffi::NulError> for Error {
    fn from(e: std::ffi::NulError) -> Error {
        Error::invalid("cstring", "name contains a NUL byte").with_source(e)
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        std::io::Error::new(std::io::Error::from_raw_os_error(e.errno).kind(), e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        let errno = e.raw_os_error().unwrap_or(libc::EIO);
        let kind = match e.kind() {
            std::io::ErrorKind::UnexpectedEof => ErrorKind::Malformed,
            std::io::ErrorKind::InvalidData => ErrorKind::Malformed,
            _ => ErrorKind::from_errno(errno),
        };
        Error {
            errno: if kind == ErrorKind::Malformed { libc::EBADMSG } else { errno },
            kind,
            op: "io",
            target: None,
            message: None,
            source: Some(Box::new(e)),
            recipe: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_op_target_and_errno() {
        let e = Error::from_errno(-2, "rbd_open", Some("volumes/v1@s".to_string()));
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.to_string(), "rbd_open(volumes/v1@s): not found (errno 2, ENOENT)");
    }

    #[test]
    fn errno_table_matches_python_rbd() {
        for (errno, kind) in [
            (libc::EPERM, ErrorKind::PermissionDenied),
            (libc::EEXIST, ErrorKind::Exists),
            (libc::EBUSY, ErrorKind::Busy),
            (libc::ENOTEMPTY, ErrorKind::HasSnapshots),
            (libc::ESHUTDOWN, ErrorKind::Shutdown),
            (libc::ETIMEDOUT, ErrorKind::Timeout),
            (libc::EDQUOT, ErrorKind::QuotaExceeded),
            (libc::ECANCELED, ErrorKind::Cancelled),
        ] {
            assert_eq!(ErrorKind::from_errno(-errno), kind);
        }
    }

    #[test]
    fn io_error_keeps_errno() {
        let e: std::io::Error = Error::from_errno(-30, "rbd_write2", None).into();
        assert_eq!(e.raw_os_error(), None);
        assert!(e.to_string().contains("EROFS"));
    }
}
