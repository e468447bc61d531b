#!/usr/bin/env bash
# The README's test command: set-up, a freshly started dev cluster, all Rust and Python tests
# against it, then the cluster is stopped (also on failure).
#
#   RBD_TEST_DIR / RBD_TEST_MON_PORT   where the throwaway cluster lives (default .ceph-dev/test, 40950)
#   RBD_TEST_FAST=1                    skip the short fuzz and benchmark smoke runs
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
scripts/setup.sh

# Two throwaway clusters: the main one, and a second for cross-cluster transfer and backup.
C1=${RBD_TEST_DIR:-$ROOT/.ceph-dev/test}
C2=${RBD_TEST_DIR2:-$ROOT/.ceph-dev/test2}
P1=${RBD_TEST_MON_PORT:-40950}
P2=${RBD_TEST_MON_PORT2:-40970}
down_all() {
  RBD_DEV_DIR=$C1 scripts/vstart.sh down >/dev/null 2>&1 || true
  RBD_DEV_DIR=$C2 scripts/vstart.sh down >/dev/null 2>&1 || true
}
down_all
trap down_all EXIT
RBD_DEV_DIR=$C2 RBD_DEV_MON_PORT=$P2 scripts/vstart.sh up
eval "$(RBD_DEV_DIR=$C2 RBD_DEV_MON_PORT=$P2 scripts/vstart.sh env)"
export RBD_TEST_CEPH_CONF2=$CEPH_CONF
RBD_DEV_DIR=$C1 RBD_DEV_MON_PORT=$P1 scripts/vstart.sh up
eval "$(RBD_DEV_DIR=$C1 RBD_DEV_MON_PORT=$P1 scripts/vstart.sh env)"

status=0
echo "== Rust tests"
cargo test --workspace --exclude rbd-core-python --no-fail-fast 2>&1 | tee target/rust-tests.log || status=1
echo "== Python tests"
.venv/bin/python -m pytest -q python/tests || status=1
if [ "${RBD_TEST_FAST:-0}" != 1 ]; then
  echo "== Fuzz smoke (diff stream parser, bounded)"
  scripts/fuzz.sh "${RBD_FUZZ_SECONDS:-30}" || status=1
  echo "== Benchmark smoke (benches/compare --quick against these two clusters, ~1 min)"
  cargo test --bench compare -- --quick || status=1
fi
echo "== Reliability summary (figures the fault_* tests recorded)"
scripts/reliability.sh --summary || status=1
exit $status
