//! Generates bindings for `rbd/librbd.h` and `rbd/features.h` with bindgen and links `librbd`.
//!
//! Also turns the header's version and `LIBRBD_SUPPORTS_*` macros into cfgs
//! (`librbd_supports_<name>`, `librbd_ge_<major>_<minor>`) so APIs newer than the installed
//! librbd can be gated, and exports them to dependents as `DEP_RBD_VERSION_CODE` and
//! `DEP_RBD_SUPPORTS` (comma separated).
//!
//! Environment: `LIBRBD_INCLUDE_DIR`, `LIBRBD_LIB_DIR` override the system paths.

use std::env;
use std::path::{Path, PathBuf};

const MISSING_HEADERS: &str = "librbd headers not found (rbd/librbd.h); install librbd-dev \
(Debian/Ubuntu: `apt-get install librbd-dev librados-dev`) or librbd-devel (Fedora/RHEL), \
or set LIBRBD_INCLUDE_DIR";

/// Every `LIBRBD_SUPPORTS_*` name known from Pacific up to Squid; the cfg is declared for all so
/// code may test names the installed header does not define.
const KNOWN_SUPPORTS: &[&str] = &[
    "aio_flush",
    "aio_open",
    "compare_and_write",
    "locking",
    "invalidate",
    "iovec",
    "watch",
    "writesame",
    "write_zeroes",
    "encryption",
    "diff_iterate3",
    "clone4",
    "group_snap_get_info",
    "rollback_with_progress",
];

fn find_include_dir() -> PathBuf {
    println!("cargo:rerun-if-env-changed=LIBRBD_INCLUDE_DIR");
    if let Some(dir) = env::var_os("LIBRBD_INCLUDE_DIR") {
        let dir = PathBuf::from(dir);
        if dir.join("rbd/librbd.h").is_file() {
            return dir;
        }
        panic!("{MISSING_HEADERS} (LIBRBD_INCLUDE_DIR={} has no rbd/librbd.h)", dir.display());
    }
    for dir in ["/usr/include", "/usr/local/include"] {
        if Path::new(dir).join("rbd/librbd.h").is_file() {
            return PathBuf::from(dir);
        }
    }
    panic!("{MISSING_HEADERS}");
}

/// Reads `#define NAME <int>` from the header text.
fn define(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        if it.next()? == "#define" && it.next()? == name {
            it.next()?.parse().ok()
        } else {
            None
        }
    })
}

fn main() {
    let include = find_include_dir();
    println!("cargo:rerun-if-env-changed=LIBRBD_LIB_DIR");
    if let Some(lib) = env::var_os("LIBRBD_LIB_DIR") {
        println!("cargo:rustc-link-search=native={}", PathBuf::from(lib).display());
    }
    println!("cargo:rustc-link-lib=rbd");
    let header = include.join("rbd/librbd.h");
    println!("cargo:rerun-if-changed={}", header.display());
    let text = std::fs::read_to_string(&header).unwrap_or_else(|e| panic!("read {}: {e}", header.display()));

    // Version and feature macros → cfgs.
    let major = define(&text, "LIBRBD_VER_MAJOR").expect("LIBRBD_VER_MAJOR in librbd.h");
    let minor = define(&text, "LIBRBD_VER_MINOR").expect("LIBRBD_VER_MINOR in librbd.h");
    let extra = define(&text, "LIBRBD_VER_EXTRA").unwrap_or(0);
    let code = (major << 16) + (minor << 8) + extra;
    println!("cargo:version_code={code}");
    for m in 16..=30 {
        println!("cargo:rustc-check-cfg=cfg(librbd_ge_1_{m})");
        if major > 1 || (major == 1 && minor >= m) {
            println!("cargo:rustc-cfg=librbd_ge_1_{m}");
        }
    }
    let mut supported = Vec::new();
    for name in KNOWN_SUPPORTS {
        println!("cargo:rustc-check-cfg=cfg(librbd_supports_{name})");
        let macro_name = format!("LIBRBD_SUPPORTS_{}", name.to_uppercase());
        if define(&text, &macro_name) == Some(1) {
            println!("cargo:rustc-cfg=librbd_supports_{name}");
            supported.push(*name);
        }
    }
    println!("cargo:supports={}", supported.join(","));

    let builder = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .header(include.join("rbd/features.h").to_string_lossy())
        .clang_arg(format!("-I{}", include.display()))
        .allowlist_function("rbd_.*")
        .allowlist_type("rbd_.*|librbd_.*")
        .allowlist_var("RBD_.*|LIBRBD_.*")
        // One definition of the shared rados types: the ones in librados-sys.
        .blocklist_type("rados_.*")
        .raw_line("#[allow(unused_imports)] use librados_sys::*;")
        .blocklist_function(".*_va(list)?$")
        .blocklist_item("__.*")
        .blocklist_type("timeval|timespec|time_t")
        .derive_default(true)
        .size_t_is_usize(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    let bindings = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.generate())).unwrap_or_else(|_| {
        panic!(
            "bindgen could not run (libclang missing?). Install libclang-dev \
             (`apt-get install libclang-dev`) or set LIBCLANG_PATH"
        )
    });
    let bindings = bindings.unwrap_or_else(|e| {
        panic!("bindgen failed on {}: {e}. Install libclang-dev or set LIBCLANG_PATH", header.display())
    });
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("bindgen.rs");
    bindings.write_to_file(&out).expect("write bindings");
}
