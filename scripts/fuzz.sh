#!/usr/bin/env bash
# Fuzz rbd-core's diff/export stream parsers (fuzz/fuzz_targets/diff_stream.rs) for a bounded time.
#
#   scripts/fuzz.sh [SECONDS]        # default 60
#
# Installs cargo-fuzz (from crates.io) if it is missing. cargo-fuzz needs nightly compiler flags:
# the nightly toolchain is used when rustup has one, otherwise the stable one with
# RUSTC_BOOTSTRAP=1. Override with FUZZ_TOOLCHAIN=<toolchain>.
#
# New inputs go to fuzz/target/corpus-work/ (git-ignored); the committed seeds in
# fuzz/corpus/diff_stream/ (the golden streams) are only read. A crash leaves its input in
# fuzz/artifacts/diff_stream/ and makes this script exit non-zero.
set -euo pipefail

duration="${1:-60}"
case "$duration" in
    ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

toolchain=()
if [[ -n "${FUZZ_TOOLCHAIN:-}" ]]; then
    toolchain=("+$FUZZ_TOOLCHAIN")
    [[ "$FUZZ_TOOLCHAIN" == nightly* ]] || export RUSTC_BOOTSTRAP=1
elif command -v rustup >/dev/null 2>&1 && rustup run nightly rustc --version >/dev/null 2>&1; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi

work="$root/fuzz/target/corpus-work/diff_stream"
mkdir -p "$work"

# -rss_limit_mb: the readers must stay bounded whatever lengths the input claims.
cargo "${toolchain[@]}" fuzz run diff_stream "$work" "$root/fuzz/corpus/diff_stream" -- \
    -max_total_time="$duration" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1
