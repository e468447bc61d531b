#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian bookworm machine: Ceph daemons and dev headers, libclang
# for bindgen, python-rbd (for shim parity tests), a .venv with maturin + pytest, and the
# rbd_core Python package built into it. Run by both README commands.
#
#   SETUP_SKIP_PYTHON=1   skip the virtualenv and Python package (the demo does not need them)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
log() { printf 'setup: %s\n' "$*" >&2; }

PKGS=(ceph-mon ceph-osd ceph-mgr ceph-common librbd-dev librados-dev libclang-dev clang
      python3-rbd python3-rados pkg-config libssl-dev)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  log "installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { log "cargo not found: install Rust (rustup) first"; exit 1; }

if [ "${SETUP_SKIP_PYTHON:-0}" != 1 ]; then
  PY=${PYTHON:-python3}
  if [ ! -x .venv/bin/python ]; then
    log "creating .venv with $($PY --version 2>&1)"
    $PY -m venv .venv
  fi
  if ! .venv/bin/python -c 'import maturin, pytest, mypy' 2>/dev/null; then
    log "installing maturin, pytest, mypy into .venv"
    .venv/bin/pip install -q --disable-pip-version-check maturin pytest mypy
  fi
  # Build and install the extension (debug profile unless RBD_CORE_RELEASE=1).
  profile=()
  [ "${RBD_CORE_RELEASE:-0}" = 1 ] && profile=(--release)
  log "building the rbd_core Python package"
  (cd python && VIRTUAL_ENV="$ROOT/.venv" PATH="$ROOT/.venv/bin:$PATH" \
     "$ROOT/.venv/bin/maturin" develop -q "${profile[@]}" 2>&1 | grep -vE '^(📦|🔗|🐍|⚠️ +Warning: .*Cargo.lock)' >&2 || true)
  .venv/bin/python -c 'import rbd_core' || { log "rbd_core failed to import after build"; exit 1; }
fi
log "ok"
