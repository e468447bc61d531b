#!/usr/bin/env bash
# The README's demo command: set-up, a local dev cluster when CEPH_CONF is not given, then
# `rbdlc demo` (the lifecycle tour). Extra arguments go to `rbdlc demo`.
#
#   KEEP_CLUSTER=1   leave the demo cluster running afterwards (stop it with scripts/vstart.sh down)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SETUP_SKIP_PYTHON=1 scripts/setup.sh
if [ -z "${CEPH_CONF:-}" ]; then
  scripts/vstart.sh up
  [ "${KEEP_CLUSTER:-0}" = 1 ] || trap 'scripts/vstart.sh down >/dev/null 2>&1 || true' EXIT
  eval "$(scripts/vstart.sh env)"
fi
cargo run -q --release --example rbdlc -- --id "${RBD_TEST_CLIENT_ID:-admin}" demo "$@"
