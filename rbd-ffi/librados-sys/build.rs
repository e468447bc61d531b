//! Generates bindings for `rados/librados.h` with bindgen and links `librados`.
//!
//! Environment: `LIBRADOS_INCLUDE_DIR`, `LIBRADOS_LIB_DIR` override the system paths.

use std::env;
use std::path::{Path, PathBuf};

const MISSING_HEADERS: &str = "librados headers not found (rados/librados.h); \
install librados-dev (Debian/Ubuntu: `apt-get install librados-dev`) or librados-devel \
(Fedora/RHEL), or set LIBRADOS_INCLUDE_DIR";

fn find_include_dir() -> PathBuf {
    println!("cargo:rerun-if-env-changed=LIBRADOS_INCLUDE_DIR");
    if let Some(dir) = env::var_os("LIBRADOS_INCLUDE_DIR") {
        let dir = PathBuf::from(dir);
        if dir.join("rados/librados.h").is_file() {
            return dir;
        }
        panic!("{MISSING_HEADERS} (LIBRADOS_INCLUDE_DIR={} has no rados/librados.h)", dir.display());
    }
    for dir in ["/usr/include", "/usr/local/include"] {
        if Path::new(dir).join("rados/librados.h").is_file() {
            return PathBuf::from(dir);
        }
    }
    panic!("{MISSING_HEADERS}");
}

fn main() {
    let include = find_include_dir();
    println!("cargo:rerun-if-env-changed=LIBRADOS_LIB_DIR");
    if let Some(lib) = env::var_os("LIBRADOS_LIB_DIR") {
        println!("cargo:rustc-link-search=native={}", PathBuf::from(lib).display());
    }
    println!("cargo:rustc-link-lib=rados");
    println!("cargo:include={}", include.display());
    let header = include.join("rados/librados.h");
    println!("cargo:rerun-if-changed={}", header.display());

    let builder = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .clang_arg(format!("-I{}", include.display()))
        .allowlist_function("rados_.*")
        .allowlist_type("rados_.*")
        .allowlist_var("LIBRADOS_.*|CEPH_.*|RADOS_.*")
        .blocklist_function(".*_va(list)?$")
        .blocklist_item("__.*")
        .blocklist_type("timeval|timespec|time_t")
        .raw_line("pub use libc::{time_t, timespec, timeval};")
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
