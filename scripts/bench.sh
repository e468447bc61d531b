#!/usr/bin/env bash
# The benchmark suite in one command: rbd-core against the rbd CLI, python-rbd and the ways
# OpenStack's drivers use them (benches/compare, benches/py).
#
#   scripts/bench.sh [--quick] [--network] [--phases upload,backup,clones,python,memory,scaling] [--keep]
#
#   --quick     smoke run: tiny sizes, one repetition, targets printed but not enforced
#   --network   network mode: ~5 ms OSD-side injected message delay on both clusters
#   --phases    run only these phases (default: all six)
#   --keep      leave the two clusters running afterwards
#
# Set-up (scripts/setup.sh), then two throw-away memstore clusters of its own (RBD_BENCH_DIR /
# RBD_BENCH_DIR2, default .ceph-dev/bench1 and .ceph-dev/bench2, monitor ports RBD_BENCH_MON_PORT /
# RBD_BENCH_MON_PORT2, default 40980 / 41000, memstore RBD_BENCH_MEMSTORE_BYTES per OSD, default
# 10 GiB; memstore_page_set is turned on and the pools recreated, see prepare_cluster). A full run
# recreates both clusters before every phase (a memstore OSD keeps the memory
# of removed objects), builds the bench in release (`cargo bench`), and builds a release wheel of
# the rbd_core Python package into its own venv (target/bench-venv) for the Python comparison.
# Results: target/bench-results/compare-<local|network>.{md,json,png} (+ one JSON per phase;
# target/bench-results/quick/ for --quick).
# The clusters are stopped at the end (also on failure) unless --keep.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

QUICK=0 NETWORK=0 KEEP=0 PHASES=upload,backup,clones,python,memory,scaling
while (($#)); do
  case $1 in
    --quick) QUICK=1 ;;
    --network) NETWORK=1 ;;
    --keep) KEEP=1 ;;
    --phases) PHASES=${2:?--phases needs a list}; shift ;;
    --phases=*) PHASES=${1#--phases=} ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
MODE=local
ARGS=()
((QUICK)) && ARGS+=(--quick)
((NETWORK)) && { ARGS+=(--network); MODE=network; }

scripts/setup.sh

B1=${RBD_BENCH_DIR:-$ROOT/.ceph-dev/bench1}
B2=${RBD_BENCH_DIR2:-$ROOT/.ceph-dev/bench2}
P1=${RBD_BENCH_MON_PORT:-40980}
P2=${RBD_BENCH_MON_PORT2:-41000}
if ((QUICK)); then MEM=${RBD_BENCH_MEMSTORE_BYTES:-$((2 << 30))}; else MEM=${RBD_BENCH_MEMSTORE_BYTES:-$((10 << 30))}; fi

down_all() {
  RBD_DEV_DIR=$B1 scripts/vstart.sh down >/dev/null 2>&1 || true
  RBD_DEV_DIR=$B2 scripts/vstart.sh down >/dev/null 2>&1 || true
}
# prepare_cluster DIR: two memstore settings that keep the OSD's memory in check.
# - memstore's default object (one contiguous buffer) stores a 64 KiB write at the end of a fresh
#   4 MiB object as 4 MiB, zeros included (1024 random 64 KiB writes into an 8 GiB volume: 1.9 GB
#   of OSD memory instead of 0.18 GB). Turn on memstore_page_set (64 KiB pages, allocated when
#   written) and recreate the pools, whose PG collections pick the setting up when created.
# - memstore reports itself rotational, so snapshot trimming sleeps osd_snap_trim_sleep_hdd (5 s)
#   between trims and the objects of removed snapshots stay in memory for minutes: no sleep.
prepare_cluster() {
  local conf=$1/ceph.conf p
  ceph -c "$conf" config set osd osd_snap_trim_sleep_hdd 0
  ceph -c "$conf" config set osd memstore_page_set true
  for p in rbd images volumes vms backups; do
    ceph -c "$conf" osd pool delete "$p" "$p" --yes-i-really-really-mean-it >/dev/null 2>&1
    ceph -c "$conf" osd pool create "$p" 8 8 >/dev/null 2>&1
    rbd -c "$conf" pool init "$p"
  done
  RBD_DEV_DIR=$1 scripts/vstart.sh wait
}
up_all() {
  local pids=()
  RBD_DEV_DIR=$B1 RBD_DEV_MON_PORT=$P1 RBD_DEV_MEMSTORE_BYTES=$MEM scripts/vstart.sh up & pids+=($!)
  RBD_DEV_DIR=$B2 RBD_DEV_MON_PORT=$P2 RBD_DEV_MEMSTORE_BYTES=$MEM scripts/vstart.sh up & pids+=($!)
  local p rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  ((rc == 0)) || return 1
  prepare_cluster "$B1" & pids=($!)
  prepare_cluster "$B2" & pids+=($!)
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return $rc
}
((KEEP)) || trap down_all EXIT

echo "== building the benchmark (release)"
cargo bench --bench compare --no-run

PY=$ROOT/.venv/bin/python
if ((!QUICK)); then
  echo "== building a release wheel of the rbd_core Python package into target/bench-venv"
  rm -rf target/bench-wheels
  (cd python && "$ROOT/.venv/bin/maturin" build --release -q --auditwheel skip -o "$ROOT/target/bench-wheels")
  [ -x target/bench-venv/bin/python ] || /usr/bin/python3 -m venv target/bench-venv
  target/bench-venv/bin/pip install -q --disable-pip-version-check --no-deps --force-reinstall target/bench-wheels/*.whl
  PY=$ROOT/target/bench-venv/bin/python
fi
export RBD_BENCH_PYTHON=$PY

OUT=target/bench-results
((QUICK)) && OUT=target/bench-results/quick
mkdir -p "$OUT"
for phase in ${PHASES//,/ }; do rm -f "$OUT/compare-$MODE-$phase.json"; done
down_all
status=0
first=1
for phase in ${PHASES//,/ }; do
  # Fresh clusters for every phase of a full run; one pair for the whole quick run.
  if ((first || !QUICK)); then
    down_all
    up_all
    first=0
  fi
  echo "== phase $phase ($MODE); memory available: $(awk '/MemAvailable/ {printf "%d MiB", $2/1024}' /proc/meminfo); load: $(cut -d' ' -f1-3 /proc/loadavg)"
  cargo bench --bench compare -- "${ARGS[@]}" --phases "$phase" --no-report \
    --conf "$B1/ceph.conf" --dst-conf "$B2/ceph.conf" --id admin || status=1
done
cargo bench --bench compare -- --report-only "${ARGS[@]}" || status=1
exit $status
