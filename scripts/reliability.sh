#!/usr/bin/env bash
# The fault and security suite (issue #10), with its figures merged into
# target/reliability/summary.md (see docs/reliability.md).
#
#   scripts/reliability.sh            quick part: the fault_* integration tests against the two test
#                                     clusters (started like scripts/test.sh does, or reused when
#                                     CEPH_CONF and RBD_TEST_CEPH_CONF2 are set), a short fuzz run
#   scripts/reliability.sh --long     also: OSD loss and in-flight monitor/OSD outages on a 3-OSD BlueStore
#                                     cluster of its own (tests/fault_osd_loss.rs, --features long-faults),
#                                     the fuzz target for RBD_FUZZ_LONG_SECONDS (default 600), and the
#                                     integration tests core_io, core_layering, diff_*, recipes_glance under
#                                     valgrind (suppressions: tests/valgrind.supp)
#   scripts/reliability.sh --summary  only merge target/reliability/figures/*.json into the summary
#   scripts/reliability.sh --long --only osd|fuzz|valgrind   one part of the long suite (no quick tests)
#
# Settings (environment):
#   RBD_REL_DIR / RBD_REL_DIR2 / RBD_REL_MON_PORT / RBD_REL_MON_PORT2   the quick clusters
#                               (default .ceph-dev/rel, .ceph-dev/rel2, ports 41150, 41170)
#   RBD_FAULT_DIR / RBD_FAULT_MON_PORT   the long suite's 3-OSD cluster (default .ceph-dev/fault-osd, 41100)
#   RBD_FUZZ_SECONDS            quick fuzz run (default 30; 0 skips it)
#   RBD_FUZZ_LONG_SECONDS       long fuzz run (default 600)
#   RBD_VALGRIND_TESTS          test targets run under valgrind (default: core_io core_layering
#                               diff_interop diff_transfer recipes_glance)
#   RBD_REL_KEEP=1              leave the clusters this script started running
#
# Exit status: non-zero when a test or check failed; the summary is written in every case.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

MODE=quick
ONLY=
while (($#)); do
  case $1 in
    --long) MODE=long ;;
    --summary) MODE=summary ;;
    --only) ONLY=${2:-}; shift
      [[ $ONLY == osd || $ONLY == fuzz || $ONLY == valgrind ]] || { echo "--only osd|fuzz|valgrind" >&2; exit 2; } ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--long [--only osd|fuzz|valgrind]|--summary]" >&2; exit 2 ;;
  esac
  shift
done
[[ -z $ONLY || $MODE == long ]] || { echo "--only needs --long" >&2; exit 2; }
want() { [[ -z $ONLY || $ONLY == "$1" ]]; }

OUT=$ROOT/target/reliability
FIG=$OUT/figures
mkdir -p "$FIG" "$OUT/logs"
status=0
STARTED=()

# --- summary -------------------------------------------------------------------------------------
write_summary() {
  python3 - "$FIG" "$OUT/summary.md" <<'EOF'
import json, os, sys, glob, datetime
fig_dir, out = sys.argv[1], sys.argv[2]
rows = []
for f in sorted(glob.glob(os.path.join(fig_dir, "*.json"))):
    try:
        d = json.load(open(f))
    except Exception as e:
        rows.append(("?", os.path.basename(f), f"unreadable figure file: {e}", False, 0))
        continue
    rows.append((d.get("suite", "?"), d.get("name", "?"), d.get("figure", ""), bool(d.get("pass")), os.path.getmtime(f)))
passed = sum(1 for r in rows if r[3])
def cell(s):
    return str(s).replace("|", "\\|").replace("\n", " ")
lines = [
    "# Reliability summary (issue #10)",
    "",
    f"Generated {datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M UTC')} by `scripts/reliability.sh` from "
    f"`target/reliability/figures/*.json`: {len(rows)} figures, {passed} pass, {len(rows) - passed} fail. "
    "What each test proves: `docs/reliability.md`.",
    "",
    "| suite | test | figure | pass | recorded |",
    "|---|---|---|---|---|",
]
for suite, name, figure, ok, mtime in rows:
    when = datetime.datetime.utcfromtimestamp(mtime).strftime("%Y-%m-%d %H:%M") if mtime else ""
    lines.append(f"| {cell(suite)} | {cell(name)} | {cell(figure)} | {'pass' if ok else '**FAIL**'} | {when} |")
open(out, "w").write("\n".join(lines) + "\n")
print(f"reliability.sh: {out}: {len(rows)} figures, {passed} pass")
EOF
}

# record SUITE NAME PASS(true|false) FIGURE DETAIL_JSON: a figure from this script.
record() {
  python3 - "$FIG" "$@" <<'EOF'
import json, os, sys
fig_dir, suite, name, ok, figure, detail = sys.argv[1:7]
d = {"suite": suite, "name": name, "figure": figure, "pass": ok == "true", "detail": json.loads(detail or "{}")}
open(os.path.join(fig_dir, f"{suite}.{name}.json"), "w").write(json.dumps(d, indent=2) + "\n")
print(f"FIGURE {suite}.{name}: {figure} ({'pass' if d['pass'] else 'FAIL'})")
EOF
}

if [[ $MODE == summary ]]; then
  write_summary
  exit 0
fi

# --- clusters ------------------------------------------------------------------------------------
cleanup() {
  if [[ ${RBD_REL_KEEP:-0} != 1 ]]; then
    local d
    for d in "${STARTED[@]}"; do RBD_DEV_DIR=$d scripts/vstart.sh down >/dev/null 2>&1 || true; done
  fi
}
trap cleanup EXIT

if [[ $ONLY == osd || $ONLY == fuzz ]]; then
  :   # these parts need no test clusters
elif [[ -n ${CEPH_CONF:-} && -n ${RBD_TEST_CEPH_CONF2:-} ]]; then
  echo "reliability.sh: reusing CEPH_CONF=$CEPH_CONF and RBD_TEST_CEPH_CONF2=$RBD_TEST_CEPH_CONF2"
else
  C1=${RBD_REL_DIR:-$ROOT/.ceph-dev/rel}
  C2=${RBD_REL_DIR2:-$ROOT/.ceph-dev/rel2}
  RBD_DEV_DIR=$C2 RBD_DEV_MON_PORT=${RBD_REL_MON_PORT2:-41170} scripts/vstart.sh up || exit 1
  STARTED+=("$C2")
  eval "$(RBD_DEV_DIR=$C2 scripts/vstart.sh env)"
  export RBD_TEST_CEPH_CONF2=$CEPH_CONF
  RBD_DEV_DIR=$C1 RBD_DEV_MON_PORT=${RBD_REL_MON_PORT:-41150} scripts/vstart.sh up || exit 1
  STARTED+=("$C1")
  eval "$(RBD_DEV_DIR=$C1 scripts/vstart.sh env)"
fi

# --- quick: the fault_* tests ---------------------------------------------------------------------
if [[ -z $ONLY ]]; then
quick_tests=()
for f in tests/fault_*.rs; do
  t=$(basename "$f" .rs)
  [[ $t == fault_osd_loss ]] && continue   # long part, needs --features long-faults
  quick_tests+=(--test "$t")
done
echo "== fault tests: ${quick_tests[*]}"
t0=$SECONDS
cargo test --no-fail-fast "${quick_tests[@]}" 2>&1 | tee "$OUT/logs/fault-quick.log" || status=1
echo "reliability.sh: quick fault tests took $((SECONDS - t0)) s"
fi

# --- fuzz ----------------------------------------------------------------------------------------
# run_fuzz SECONDS NAME: runs scripts/fuzz.sh and records executions, speed and crashes.
run_fuzz() {
  local secs=$1 name=$2 log=$OUT/logs/fuzz-$2.log rc
  echo "== fuzz diff_stream for $secs s"
  scripts/fuzz.sh "$secs" >"$log" 2>&1
  rc=$?
  python3 - "$log" "$rc" "$secs" "$FIG" "$name" <<'EOF'
import json, os, re, sys
log, rc, secs, fig_dir, name = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
text = open(log, errors="replace").read()
def stat(k):
    m = re.findall(r"stat::%s:\s*(\d+)" % k, text)
    return int(m[-1]) if m else None
execs, speed, rss = stat("number_of_executed_units"), stat("average_exec_per_sec"), stat("peak_rss_mb")
crashes = len(re.findall(r"^==\d+== ERROR: libFuzzer|^SUMMARY: libFuzzer|Test unit written to .*crash-", text, re.M))
cov = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)", text)
ok = rc == 0 and crashes == 0 and execs is not None
fig = (f"diff_stream fuzz target, {secs} s: {execs if execs is not None else '?'} executions "
       f"({speed if speed is not None else '?'}/s), {crashes} crashes, peak RSS {rss if rss is not None else '?'} MB"
       + (f", coverage {cov[-1][0]} edges / corpus {cov[-1][2]}" if cov else "")
       + ("" if rc == 0 else f" (fuzz.sh exit {rc}; log {log})"))
d = {"suite": "fuzz", "name": name, "figure": fig, "pass": ok,
     "detail": {"seconds": secs, "executions": execs, "exec_per_sec": speed, "peak_rss_mb": rss, "crashes": crashes,
                "exit": rc, "log": log}}
open(os.path.join(fig_dir, f"fuzz.{name}.json"), "w").write(json.dumps(d, indent=2) + "\n")
print(f"FIGURE fuzz.{name}: {fig} ({'pass' if ok else 'FAIL'})")
sys.exit(0 if ok else 1)
EOF
}

if [[ $MODE == quick ]]; then
  if [[ ${RBD_FUZZ_SECONDS:-30} != 0 ]]; then run_fuzz "${RBD_FUZZ_SECONDS:-30}" diff_stream_quick || status=1; fi
  write_summary
  exit $status
fi

# --- long: OSD loss and outages on a cluster of its own --------------------------------------------
FDIR=${RBD_FAULT_DIR:-$ROOT/.ceph-dev/fault-osd}
if ! want osd; then
  :
elif echo "== OSD loss / outages on $FDIR" && RBD_DEV_DIR=$FDIR RBD_DEV_MON_PORT=${RBD_FAULT_MON_PORT:-41100} OSDS=3 RBD_DEV_OBJECTSTORE=bluestore \
   RBD_DEV_BLUESTORE_BYTES=$((4 << 30)) RBD_DEV_WAIT_TIMEOUT=180 scripts/vstart.sh up; then
  STARTED+=("$FDIR")
  RBD_FAULT_CONF=$FDIR/ceph.conf RBD_FAULT_DEV_DIR=$FDIR \
    cargo test --features long-faults --test fault_osd_loss -- --test-threads=1 2>&1 | tee "$OUT/logs/fault-long.log" || status=1
  # Leave the cluster running when a test left it broken, for a look at its logs.
  RBD_DEV_DIR=$FDIR RBD_DEV_WAIT_TIMEOUT=60 scripts/vstart.sh wait || { echo "fault cluster unhealthy; kept"; STARTED=("${STARTED[@]/$FDIR}"); status=1; }
else
  record fault_osd_loss cluster false "could not start the 3-OSD BlueStore cluster in $FDIR" '{}'
  status=1
fi

# --- long: fuzz ------------------------------------------------------------------------------------
if want fuzz; then run_fuzz "${RBD_FUZZ_LONG_SECONDS:-600}" diff_stream_long || status=1; fi
if ! want valgrind; then
  write_summary
  exit $status
fi

# --- long: valgrind --------------------------------------------------------------------------------
VG=$OUT/valgrind
mkdir -p "$VG"
read -r -a vg_tests <<<"${RBD_VALGRIND_TESTS:-core_io core_layering diff_interop diff_transfer recipes_glance}"
args=()
for t in "${vg_tests[@]}"; do args+=(--test "$t"); done
echo "== valgrind: ${vg_tests[*]}"
mapfile -t bins < <(cargo test --no-run --message-format=json "${args[@]}" 2>/dev/null | python3 -c '
import json, sys
for l in sys.stdin:
    try: d = json.loads(l)
    except ValueError: continue
    if d.get("reason") == "compiler-artifact" and d.get("executable") and d["target"]["kind"] == ["test"]:
        print(d["target"]["name"] + " " + d["executable"])')
for line in "${bins[@]}"; do
  name=${line%% *} bin=${line#* }
  echo "-- valgrind $name"
  t0=$SECONDS
  # No --error-exitcode: the verdict comes from the classified report below.
  timeout 3600 valgrind --tool=memcheck --leak-check=no --num-callers=40 \
    --error-limit=no --gen-suppressions=all --suppressions="$ROOT/tests/valgrind.supp" \
    --log-file="$VG/$name.log" "$bin" --test-threads=2 >"$VG/$name.out" 2>&1
  echo "rc=$? seconds=$((SECONDS - t0))" >"$VG/$name.rc"
done
python3 - "$VG" "$FIG" "${vg_tests[@]}" <<'EOF' || status=1
import json, os, re, sys
vg, fig_dir, names = sys.argv[1], sys.argv[2], sys.argv[3:]
ours = re.compile(r"(rbd_core|rbd_lifecycle|librbd_sys|librados_sys|core_io|core_layering|diff_interop|diff_transfer|recipes_glance)::")
total_err = ours_err = suppressed = 0
per = {}
for n in names:
    log = os.path.join(vg, f"{n}.log")
    rcf = os.path.join(vg, f"{n}.rc")
    if not os.path.exists(log):
        per[n] = {"missing": True}
        continue
    text = open(log, errors="replace").read()
    rc = open(rcf).read().strip() if os.path.exists(rcf) else "?"
    out = open(os.path.join(vg, f"{n}.out"), errors="replace").read() if os.path.exists(os.path.join(vg, f"{n}.out")) else ""
    m = re.findall(r"ERROR SUMMARY: (\d+) errors from (\d+) contexts \(suppressed: (\d+) from (\d+)\)", text)
    errs, sup = (int(m[-1][0]), int(m[-1][2])) if m else (None, None)
    # Each error block starts with "==pid== <kind>" after a blank "==pid== " line; classify by whether
    # a frame of our crates is in its stack.
    blocks = re.split(r"\n==\d+== \n", text)
    mine = []
    for b in blocks:
        first = b.strip().splitlines()[0] if b.strip() else ""
        kind = re.sub(r"^==\d+== ", "", first)
        if re.match(r"(Invalid (read|write|free)|Conditional jump|Use of uninitialised|Syscall param|Mismatched free|Source and destination overlap)", kind):
            if ours.search(b):
                mine.append(kind)
    passed = re.findall(r"test result: (\w+)\. (\d+) passed; (\d+) failed", out)
    per[n] = {"errors": errs, "suppressed": sup, "errors_in_our_code": len(mine), "kinds_in_our_code": sorted(set(mine)),
              "run": rc, "tests": passed[-1] if passed else None}
    total_err += errs or 0
    ours_err += len(mine)
    suppressed += sup or 0
ran = [n for n in names if not per.get(n, {}).get("missing") and per[n]["errors"] is not None]
ok = ours_err == 0 and len(ran) == len(names)
fig = (f"{len(ran)}/{len(names)} test binaries ({', '.join(names)}) under valgrind memcheck: "
       f"{ours_err} invalid accesses/uninitialised uses with a frame in our code, {total_err} unsuppressed errors in total, "
       f"{suppressed} suppressed librbd/librados/libceph-common reports (tests/valgrind.supp)")
d = {"suite": "memory", "name": "valgrind", "figure": fig, "pass": ok, "detail": per}
open(os.path.join(fig_dir, "memory.valgrind.json"), "w").write(json.dumps(d, indent=2) + "\n")
print(f"FIGURE memory.valgrind: {fig} ({'pass' if ok else 'FAIL'})")
sys.exit(0 if ok else 1)
EOF

write_summary
exit $status
