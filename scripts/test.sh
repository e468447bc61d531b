#!/usr/bin/env bash
# The README's test command: set-up, a freshly started dev cluster, all Rust and Python tests
# against it, then the cluster is stopped (also on failure).
#
#   RBD_TEST_DIR / RBD_TEST_MON_PORT   where the throwaway cluster lives (default .ceph-dev/test, 40950)
#   RBD_TEST_FAST=1                    skip the short fuzz smoke run
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
scripts/setup.sh

export RBD_DEV_DIR=${RBD_TEST_DIR:-$ROOT/.ceph-dev/test}
export RBD_DEV_MON_PORT=${RBD_TEST_MON_PORT:-40950}
scripts/vstart.sh down >/dev/null 2>&1 || true
trap 'scripts/vstart.sh down >/dev/null 2>&1 || true' EXIT
scripts/vstart.sh up
eval "$(scripts/vstart.sh env)"

status=0
echo "== Rust tests"
cargo test --workspace --exclude rbd-core-python 2>&1 | tee target/rust-tests.log || status=1
echo "== Python tests"
.venv/bin/python -m pytest -q python/tests || status=1
if [ "${RBD_TEST_FAST:-0}" != 1 ]; then
  echo "== Fuzz smoke (diff stream parser, bounded)"
  scripts/fuzz.sh "${RBD_FUZZ_SECONDS:-30}" || status=1
fi
exit $status
