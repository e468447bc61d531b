#!/usr/bin/env bash
# Single-node Ceph Pacific (16.2.x) development cluster on loopback, run as root without systemd.
#
# Usage: scripts/vstart.sh <command> [args]
#
#   up            create (or reuse) the cluster and wait until every pool is usable; idempotent
#   down          stop this cluster's daemons (SIGTERM, then SIGKILL after ~10 s) and delete its folder
#   stop          stop this cluster's daemons but keep the folder (a bluestore cluster can be `up`-ed again)
#   status        cluster summary; exit 0 only if every daemon runs and every OSD is up
#   env           print `export CEPH_CONF=...` and `export RBD_TEST_CLIENT_ID=admin`
#                 (use: eval "$(scripts/vstart.sh env)")
#   wait          wait until all OSDs are up and all PGs active+clean (RBD_DEV_WAIT_TIMEOUT, default 60 s)
#   kill-osd N    SIGKILL osd.N and mark it down in the OSD map
#   stop-osd N    SIGTERM osd.N (clean shutdown)
#   start-osd N   start osd.N again and wait until it is up
#   stop-mon      SIGTERM the monitor
#   start-mon     start the monitor again and wait until it answers
#
# Settings (environment variables):
#   RBD_DEV_DIR              cluster folder (default <repo>/.ceph-dev/cluster)
#   RBD_DEV_MON_PORT         monitor msgr2 port (default 40789); msgr1 listens on port+1
#   OSDS                     number of OSDs (default 1); pool size is 1 for one OSD, 2 otherwise
#   RBD_DEV_OBJECTSTORE      memstore (default) or bluestore (on a plain file in each OSD folder)
#   RBD_DEV_MEMSTORE_BYTES   memstore size per OSD (default 12 GiB)
#   RBD_DEV_BLUESTORE_BYTES  bluestore block file size per OSD (default 8 GiB, sparse)
#   RBD_DEV_WAIT_TIMEOUT     seconds `up`/`wait`/`start-*` wait for the cluster (default 60)
#
# The settings a cluster was created with are kept in $RBD_DEV_DIR/vstart.env; later commands on the
# same folder use them, so only RBD_DEV_DIR has to be repeated.
#
# Users: client.admin, client.glance, client.cinder, client.cinder-backup. The keyring of client.<id>
# is $RBD_DEV_DIR/client.<id>.keyring and ceph.conf points every client there (keyring = $DIR/$name.keyring),
# so `rbd -c $CEPH_CONF --id cinder ...` just works.
# Pools: rbd, images, volumes, vms, backups (8 PGs each, `rbd pool init`-ed).
#
# This script only ever signals processes that it can prove belong to this cluster: their pid file is in
# $RBD_DEV_DIR/run and their command line carries `-c $RBD_DEV_DIR/ceph.conf`.
set -euo pipefail

readonly POOLS=(rbd images volumes vms backups)
readonly CEPH_BINS=(ceph-mon ceph-osd ceph-mgr ceph ceph-authtool monmaptool rbd)

die() { echo "vstart.sh: error: $*" >&2; exit 1; }
log() { echo "vstart.sh: $*" >&2; }
now() { echo "${EPOCHREALTIME/,/.}"; }
elapsed_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd -P)

DIR=$(realpath -m -- "${RBD_DEV_DIR:-$REPO_ROOT/.ceph-dev/cluster}")
[[ $DIR != / && $DIR =~ ^/[A-Za-z0-9._/+-]+$ ]] ||
    die "RBD_DEV_DIR must be a folder path made of [A-Za-z0-9._/+-] (and not /); got '$DIR'"
CONF=$DIR/ceph.conf
RUN=$DIR/run
LOGDIR=$DIR/log
STATE=$DIR/vstart.env
CREATED=$DIR/.created
LOCK=$DIR.lock

WAIT_TIMEOUT=${RBD_DEV_WAIT_TIMEOUT:-60}

# Requested settings (check_conflicts tells which ones the caller set explicitly).
req_port=${RBD_DEV_MON_PORT:-40789}
req_osds=${OSDS:-1}
req_store=${RBD_DEV_OBJECTSTORE:-memstore}
req_membytes=${RBD_DEV_MEMSTORE_BYTES:-$((12 * 1024 * 1024 * 1024))}
req_bsbytes=${RBD_DEV_BLUESTORE_BYTES:-$((8 * 1024 * 1024 * 1024))}

[[ $req_port =~ ^[0-9]+$ ]] && ((req_port >= 1024 && req_port < 65535)) ||
    die "RBD_DEV_MON_PORT must be a port number in 1024..65534 (got '$req_port')"
[[ $req_osds =~ ^[0-9]+$ ]] && ((req_osds >= 1 && req_osds <= 16)) ||
    die "OSDS must be a number in 1..16 (got '$req_osds')"
[[ $req_store == memstore || $req_store == bluestore ]] ||
    die "RBD_DEV_OBJECTSTORE must be memstore or bluestore (got '$req_store')"
[[ $req_membytes =~ ^[0-9]+$ ]] && ((req_membytes >= 268435456)) ||
    die "RBD_DEV_MEMSTORE_BYTES must be a number of bytes, at least 268435456 (256 MiB)"
[[ $req_bsbytes =~ ^[0-9]+$ ]] && ((req_bsbytes >= 1073741824)) ||
    die "RBD_DEV_BLUESTORE_BYTES must be a number of bytes, at least 1073741824 (1 GiB)"
[[ $WAIT_TIMEOUT =~ ^[0-9]+$ ]] || die "RBD_DEV_WAIT_TIMEOUT must be a number of seconds"

# Effective settings: the requested ones, replaced by the recorded ones when the folder holds a cluster.
PORT=$req_port OSD_COUNT=$req_osds STORE=$req_store MEMBYTES=$req_membytes BSBYTES=$req_bsbytes FSID=

load_state() {
    [[ -f $STATE ]] || return 1
    local k v
    while IFS='=' read -r k v; do
        case $k in
            fsid) FSID=$v ;;
            port) PORT=$v ;;
            osds) OSD_COUNT=$v ;;
            objectstore) STORE=$v ;;
            memstore_bytes) MEMBYTES=$v ;;
            bluestore_bytes) BSBYTES=$v ;;
        esac
    done <"$STATE"
    [[ -n $FSID && $PORT =~ ^[0-9]+$ && $OSD_COUNT =~ ^[0-9]+$ ]] || die "$STATE is damaged; run: $0 down"
}

# A folder is ours when it holds our state file, or when it is empty / missing.
dir_is_ours() { [[ ! -e $DIR || -f $STATE || -z "$(ls -A "$DIR" 2>/dev/null)" ]]; }

require_bins() {
    local b missing=()
    for b in "${CEPH_BINS[@]}"; do command -v "$b" >/dev/null || missing+=("$b"); done
    ((${#missing[@]} == 0)) || die "missing ${missing[*]}; install with: apt-get install ceph-mon ceph-osd ceph-mgr ceph-common"
    [[ $(id -u) == 0 ]] || die "run as root (the daemons are started without systemd, as root)"
    command -v flock >/dev/null || die "flock (util-linux) is required"
}

take_lock() {
    mkdir -p "$(dirname "$LOCK")"
    exec 9>>"$LOCK"
    flock -w 300 9 || die "another vstart.sh holds $LOCK for more than 300 s"
    trap on_exit EXIT
    trap 'exit 130' INT TERM
}

CREATING=0
on_exit() {
    local rc=$?
    # A failed creation leaves no daemons behind (the folder stays, for its logs; `up` wipes it).
    if ((CREATING)) && [[ ! -f $CREATED ]]; then
        log "creation failed; stopping the daemons it started (logs stay in $LOGDIR)"
        stop_all || true
    fi
    # Leave no lock file next to a folder that does not exist (after `down`, or a failed `up`).
    [[ -e $DIR ]] || rm -f -- "$LOCK"
    return "$rc"
}

# --- ceph CLI wrappers (always this cluster's conf, always bounded in time) -------------------------
c_ceph() { timeout 30 ceph -c "$CONF" --connect-timeout 20 "$@" 9>&-; }
c_rbd() { timeout 60 rbd -c "$CONF" "$@" 9>&-; }

# --- processes -------------------------------------------------------------------------------------
# proc_is_ours PID: true when PID is a live ceph-{mon,osd,mgr} started with `-c $CONF`.
proc_is_ours() {
    local pid=$1 comm state args i
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
    read -r comm <"/proc/$pid/comm" 2>/dev/null || return 1
    [[ $comm == ceph-mon || $comm == ceph-osd || $comm == ceph-mgr ]] || return 1
    read -r _ _ state _ <"/proc/$pid/stat" 2>/dev/null || return 1
    [[ $state != Z && $state != X ]] || return 1   # a zombie waits for init to reap it
    mapfile -d '' args <"/proc/$pid/cmdline" 2>/dev/null || return 1
    for ((i = 0; i + 1 < ${#args[@]}; i++)); do
        [[ ${args[i]} == -c || ${args[i]} == --conf ]] && [[ ${args[i + 1]} == "$CONF" ]] && return 0
    done
    return 1
}

# daemon_pid NAME (mon.a, osd.0, mgr.x): prints the pid when that daemon runs.
daemon_pid() {
    local f=$RUN/$1.pid pid
    [[ -r $f ]] || return 1
    pid=$(<"$f") || return 1
    proc_is_ours "$pid" || return 1
    # the pid file belongs to this daemon name: its command line has `-i <id>`
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qE -- "(^| )-i ${1#*.}( |$)" || return 1
    echo "$pid"
}

# all_own_pids: every live daemon of this cluster (pid files, plus a /proc scan for `-c $CONF`).
all_own_pids() {
    local f pid p seen=" "
    for f in "$RUN"/*.pid; do
        [[ -r $f ]] || continue
        pid=$(<"$f") || continue
        if proc_is_ours "$pid" && [[ $seen != *" $pid "* ]]; then seen+="$pid "; fi
    done
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        if [[ $seen != *" $pid "* ]] && proc_is_ours "$pid"; then seen+="$pid "; fi
    done
    echo "$seen" | xargs -n1 2>/dev/null | grep -E '^[0-9]+$' || true
}

expected_daemons() {
    echo mon.a
    echo mgr.x
    local i
    for ((i = 0; i < OSD_COUNT; i++)); do echo "osd.$i"; done
}

# terminate PID...: SIGTERM, wait up to 10 s, SIGKILL, wait up to 5 s; fails if one survives.
terminate() {
    local pids=("$@") pid alive t
    ((${#pids[@]})) || return 0
    for pid in "${pids[@]}"; do proc_is_ours "$pid" && kill -TERM "$pid" 2>/dev/null || true; done
    for ((t = 0; t < 100; t++)); do
        alive=()
        for pid in "${pids[@]}"; do proc_is_ours "$pid" && alive+=("$pid"); done
        ((${#alive[@]})) || return 0
        sleep 0.1
    done
    log "still alive after SIGTERM + 10 s, sending SIGKILL: ${alive[*]}"
    for pid in "${alive[@]}"; do proc_is_ours "$pid" && kill -KILL "$pid" 2>/dev/null || true; done
    for ((t = 0; t < 50; t++)); do
        pids=("${alive[@]}")
        alive=()
        for pid in "${pids[@]}"; do proc_is_ours "$pid" && alive+=("$pid"); done
        ((${#alive[@]})) || return 0
        sleep 0.1
    done
    die "could not stop pids ${alive[*]}"
}

stop_all() {
    local pids pid osds=() others=()
    mapfile -t pids < <(all_own_pids)
    for pid in "${pids[@]}"; do
        if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == ceph-osd ]]; then osds+=("$pid"); else others+=("$pid"); fi
    done
    # OSDs first: a stopping OSD tells the monitor, and waits 5 s for it when the monitor is gone.
    terminate "${osds[@]}"
    terminate "${others[@]}"
    rm -f "$RUN"/*.pid
}

# start_daemon TYPE ID: start ceph-TYPE -i ID (it daemonizes) and wait for its pid file.
start_daemon() {
    local type=$1 id=$2 name=$1.$2 t
    rm -f "$RUN/$name.pid"
    # fd 9 is the lock: the daemon must not inherit it. Debian's Ceph uses glibc malloc, whose
    # per-thread arenas keep freed memory: a memstore OSD's RSS grew to 7-11 GiB holding < 1 GiB
    # of data after a few hours of tests. Few arenas and an eager trim keep RSS near the data
    # (measured: 2 arenas, 1.5 GiB stored then deleted: RSS 1.5 GiB -> 66 MiB). Benchmarks may raise
    # RBD_DEV_MALLOC_ARENA_MAX (glibc default 8 x cores) for some OSD throughput, at the cost of RSS.
    if ! MALLOC_ARENA_MAX=${RBD_DEV_MALLOC_ARENA_MAX:-4} MALLOC_TRIM_THRESHOLD_=${RBD_DEV_MALLOC_TRIM:-33554432} \
        "/usr/bin/ceph-$type" -c "$CONF" -i "$id" 9>&- >>"$LOGDIR/$name.stdout" 2>&1; then
        tail -n 20 "$LOGDIR/$name.stdout" "$LOGDIR/$name.log" 2>/dev/null >&2 || true
        die "ceph-$type -i $id failed to start; see $LOGDIR/$name.log"
    fi
    for ((t = 0; t < 100; t++)); do
        daemon_pid "$name" >/dev/null && return 0
        sleep 0.1
    done
    tail -n 20 "$LOGDIR/$name.log" 2>/dev/null >&2 || true
    die "$name did not write $RUN/$name.pid (or died); see $LOGDIR/$name.log"
}

# --- cluster state ---------------------------------------------------------------------------------
# cluster_json: `ceph status` as JSON (empty on failure).
cluster_json() { c_ceph status -f json 2>/dev/null || true; }

# summarize JSON: prints "<osds up> <osds in> <num osds> <num pgs> <pgs active+clean> <mgr available>"
summarize() {
    /usr/bin/python3 -c '
import json, sys
try:
    s = json.loads(sys.stdin.read())
except Exception:
    print("-1 -1 -1 -1 -1 0"); sys.exit(0)
om = s.get("osdmap", {})
om = om.get("osdmap", om)   # older layout nests it
pm = s.get("pgmap", {})
ok = {"active", "clean", "scrubbing", "deep", "snaptrim", "snaptrim_wait"}
clean = 0
for st in pm.get("pgs_by_state", []):
    parts = set(st["state_name"].split("+"))
    if {"active", "clean"} <= parts <= ok:
        clean += st["count"]
print(om.get("num_up_osds", 0), om.get("num_in_osds", 0), om.get("num_osds", 0),
      pm.get("num_pgs", 0), clean, 1 if s.get("mgrmap", {}).get("available") else 0)
'
}

# healthy: mon answers, all OSD_COUNT OSDs up and in, mgr available, every PG active+clean.
healthy() {
    local up in n pgs clean mgr
    read -r up in n pgs clean mgr < <(cluster_json | summarize)
    ((up == OSD_COUNT && in == OSD_COUNT && n == OSD_COUNT && mgr == 1 && pgs > 0 && clean == pgs))
}

wait_healthy() {
    local deadline=$((SECONDS + WAIT_TIMEOUT)) line
    while ((SECONDS < deadline)); do
        healthy && return 0
        sleep 0.5
    done
    line=$(cluster_json | summarize)
    log "timed out after ${WAIT_TIMEOUT}s; osds up/in/total, pgs total/active+clean, mgr: $line"
    c_ceph -s >&2 || true
    [[ $STORE == memstore ]] && log "memstore OSDs lose their data when killed; recreate with: $0 down && $0 up"
    return 1
}

all_daemons_alive() {
    local d
    for d in $(expected_daemons); do daemon_pid "$d" >/dev/null || return 1; done
}

# --- creation --------------------------------------------------------------------------------------
write_conf() {
    local size=1
    ((OSD_COUNT >= 2)) && size=2
    cat >"$CONF" <<EOF
# Generated by scripts/vstart.sh; a throw-away development cluster.
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$PORT,v1:127.0.0.1:$((PORT + 1))]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = $DIR/\$name.keyring
run dir = $RUN
crash dir = $DIR/crash
mon cluster log file = $LOGDIR/cluster.log
osd pool default size = $size
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail crit = 0
mon data avail warn = 1
osd class load list = *
osd class default list = *
osd objectstore = $STORE
memstore device bytes = $MEMBYTES
bluestore block create = true
bluestore block size = $BSBYTES
bluestore fsck on mkfs = false
osd memory target = 1073741824
mgr initial modules = iostat
mgr stats period = 1
mon mgr digest period = 1
paxos propose interval = 0.1

[mon]
mon data = $DIR/mon.\$id
keyring = $DIR/mon.\$id/keyring
pid file = $RUN/\$name.pid
admin socket = $RUN/\$name.asok
log file = $LOGDIR/\$name.log

[osd]
osd data = $DIR/osd.\$id
keyring = $DIR/osd.\$id/keyring
pid file = $RUN/\$name.pid
admin socket = $RUN/\$name.asok
log file = $LOGDIR/\$name.log

[mgr]
mgr data = $DIR/mgr.\$id
keyring = $DIR/mgr.\$id/keyring
pid file = $RUN/\$name.pid
admin socket = $RUN/\$name.asok
log file = $LOGDIR/\$name.log

[client]
keyring = $DIR/\$name.keyring
admin socket = $RUN/\$name.\$pid.asok
EOF
}

# new_key FILE NAME CAPS...: create FILE with a fresh key for NAME, with caps (pairs: subsystem cap).
new_key() {
    local file=$1 name=$2
    shift 2
    local args=()
    while (($#)); do args+=(--cap "$1" "$2"); shift 2; done
    ceph-authtool --create-keyring "$file" --gen-key -n "$name" "${args[@]}" >/dev/null
    chmod 600 "$file"
    ceph-authtool "$DIR/mon.keyring" --import-keyring "$file" >/dev/null
}

create_cluster() {
    local i p pids=() uuids=() cmds
    log "creating a new cluster in $DIR (mon 127.0.0.1:$req_port, $req_osds x $req_store OSD)"
    local port
    for port in "$req_port" "$((req_port + 1))"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            die "127.0.0.1:$port is already in use (another cluster?); pick another RBD_DEV_MON_PORT (it uses port and port+1)"
        fi
    done
    CREATING=1
    mkdir -p "$DIR" "$RUN" "$LOGDIR" "$DIR/crash"
    FSID=$(cat /proc/sys/kernel/random/uuid)
    PORT=$req_port OSD_COUNT=$req_osds STORE=$req_store MEMBYTES=$req_membytes BSBYTES=$req_bsbytes
    printf '%s\n' "fsid=$FSID" "port=$PORT" "osds=$OSD_COUNT" "objectstore=$STORE" \
        "memstore_bytes=$MEMBYTES" "bluestore_bytes=$BSBYTES" >"$STATE"
    write_conf

    # Keys: every entity (with its caps) goes into the monitor's mkfs keyring, so the monitor starts
    # with the whole auth database and no `ceph auth` round trips are needed.
    ceph-authtool --create-keyring "$DIR/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    new_key "$DIR/client.admin.keyring" client.admin \
        mon 'allow *' osd 'allow *' mds 'allow *' mgr 'allow *'
    new_key "$DIR/client.glance.keyring" client.glance \
        mon 'profile rbd' osd 'profile rbd pool=images' mgr 'profile rbd pool=images'
    new_key "$DIR/client.cinder.keyring" client.cinder \
        mon 'profile rbd' \
        osd 'profile rbd pool=volumes, profile rbd pool=vms, profile rbd-read-only pool=images' \
        mgr 'profile rbd pool=volumes, profile rbd pool=vms'
    new_key "$DIR/client.cinder-backup.keyring" client.cinder-backup \
        mon 'profile rbd' osd 'profile rbd pool=backups' mgr 'profile rbd pool=backups'
    mkdir -p "$DIR/mgr.x"
    new_key "$DIR/mgr.x/keyring" mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *'
    for ((i = 0; i < OSD_COUNT; i++)); do
        mkdir -p "$DIR/osd.$i"
        new_key "$DIR/osd.$i/keyring" "osd.$i" \
            mon 'allow profile osd' mgr 'allow profile osd' osd 'allow *'
    done

    monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$PORT,v1:127.0.0.1:$((PORT + 1))]" \
        "$DIR/monmap" >/dev/null
    mkdir -p "$DIR/mon.a"
    ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/mon.keyring" \
        >"$LOGDIR/mon.a.mkfs" 2>&1 || { cat "$LOGDIR/mon.a.mkfs" >&2; die "ceph-mon --mkfs failed"; }

    # OSD mkfs needs no monitor (--no-mon-config); run it in the background (bluestore takes a while).
    for ((i = 0; i < OSD_COUNT; i++)); do
        uuids[i]=$(cat /proc/sys/kernel/random/uuid)
        ceph-osd -c "$CONF" -i "$i" --mkfs --osd-uuid "${uuids[i]}" --no-mon-config \
            >"$LOGDIR/osd.$i.mkfs" 2>&1 9>&- &
        pids[i]=$!
    done

    start_daemon mon a

    # One CLI session for all monitor commands (each `ceph` start costs ~0.4 s of Python).
    # devicehealth would create a device_health_metrics pool shortly after the OSDs are up; it is off
    # before the mgr starts.
    cmds="osd set-require-min-compat-client mimic --yes-i-really-mean-it"$'\n'
    cmds+="config set mgr mgr/devicehealth/enable_monitoring false --force"$'\n'
    for ((i = 0; i < OSD_COUNT; i++)); do cmds+="osd new ${uuids[i]} $i"$'\n'; done
    for p in "${POOLS[@]}"; do cmds+="osd pool create $p 8 8"$'\n'; done
    run_mon_cmds "$cmds"
    start_daemon mgr x

    for ((i = 0; i < OSD_COUNT; i++)); do
        wait "${pids[i]}" || {
            grep -v '^ *[0-9]*: \|^ *-\?[0-9]*> \|^$' "$LOGDIR/osd.$i.mkfs" | tail -n 12 >&2
            die "ceph-osd -i $i --mkfs failed; see $LOGDIR/osd.$i.mkfs"
        }
    done
    for ((i = 0; i < OSD_COUNT; i++)); do start_daemon osd "$i"; done

    # `rbd pool init` blocks until the pool's PGs are active; run the five at once.
    pids=()
    for p in "${POOLS[@]}"; do
        c_rbd pool init "$p" >"$LOGDIR/pool-init.$p" 2>&1 &
        pids+=($!)
    done
    i=0
    for p in "${POOLS[@]}"; do
        wait "${pids[i]}" || { cat "$LOGDIR/pool-init.$p" >&2; die "rbd pool init $p failed"; }
        i=$((i + 1))
    done

    wait_healthy || die "cluster did not become healthy; logs in $LOGDIR"
    c_rbd ls rbd >/dev/null || die "rbd ls rbd failed"
    touch "$CREATED"
}

# run_mon_cmds TEXT: run newline-separated ceph commands in one interactive `ceph` session; each must
# succeed.
run_mon_cmds() {
    local out
    out=$(printf '%s' "$1" | timeout 60 ceph -c "$CONF" --connect-timeout 20 9>&- 2>&1) || {
        echo "$out" >&2
        die "ceph commands failed"
    }
    # The interactive mode does not stop on errors; check each reply.
    if grep -qE '^(Error|Invalid command)' <<<"$out"; then
        echo "$out" >&2
        die "a ceph command failed"
    fi
}

# restart_existing: start the daemons that are not running (bluestore data survives).
restart_existing() {
    local t0 d
    t0=$(now)
    log "starting the existing $STORE cluster in $DIR"
    mkdir -p "$RUN" "$LOGDIR"
    for d in $(expected_daemons); do
        daemon_pid "$d" >/dev/null || start_daemon "${d%%.*}" "${d#*.}"
    done
    wait_healthy || die "cluster did not become healthy; logs in $LOGDIR"
    log "cluster up in $(elapsed_since "$t0") s"
}

# --- commands --------------------------------------------------------------------------------------
check_conflicts() {
    local bad=()
    [[ -n ${RBD_DEV_MON_PORT:-} && $req_port != "$PORT" ]] && bad+=("port $PORT (asked $req_port)")
    [[ -n ${OSDS:-} && $req_osds != "$OSD_COUNT" ]] && bad+=("$OSD_COUNT OSDs (asked $req_osds)")
    [[ -n ${RBD_DEV_OBJECTSTORE:-} && $req_store != "$STORE" ]] && bad+=("$STORE (asked $req_store)")
    ((${#bad[@]} == 0)) || return 1
    return 0
}

cmd_up() {
    local t0
    t0=$(now)
    require_bins
    take_lock
    dir_is_ours || die "$DIR exists and is not a vstart.sh cluster folder (no vstart.env); refusing to touch it"
    if [[ -f $STATE ]]; then
        load_state
        if ! check_conflicts; then
            die "the cluster in $DIR was made with port $PORT, $OSD_COUNT OSDs, $STORE; run '$0 down' first to change settings"
        fi
        if [[ -f $CREATED ]] && all_daemons_alive; then
            if healthy; then
                log "already running and healthy ($DIR, port $PORT, $OSD_COUNT OSDs, $STORE); $(elapsed_since "$t0") s"
                return 0
            fi
            log "daemons are running; waiting for the cluster to become healthy"
            wait_healthy || die "the running cluster in $DIR is not healthy; try: $0 down && $0 up"
            log "cluster healthy; $(elapsed_since "$t0") s"
            return 0
        fi
        if [[ -f $CREATED && $STORE == bluestore ]]; then
            restart_existing
            return 0
        fi
        if [[ -f $CREATED ]]; then
            log "the cluster in $DIR is not (fully) running; memstore data is lost, recreating it"
        else
            log "the cluster in $DIR was never completely created; recreating it"
        fi
        stop_all
        rm -rf -- "$DIR"
    fi
    create_cluster
    log "cluster up in $(elapsed_since "$t0") s"
}

cmd_stop() {
    local remove=$1
    take_lock
    if [[ ! -e $DIR ]]; then
        log "no cluster in $DIR"
    else
        dir_is_ours || die "$DIR is not a vstart.sh cluster folder (no vstart.env); refusing to touch it"
        stop_all
        local left
        left=$(all_own_pids)
        [[ -z $left ]] || die "daemons still running: $left"
        if [[ $remove == 1 ]]; then
            rm -rf -- "$DIR"
            log "stopped and removed $DIR"
        else
            log "stopped the daemons of $DIR (folder kept)"
        fi
    fi
    return 0
}

cmd_status() {
    [[ -f $STATE ]] || { echo "no cluster in $DIR"; return 1; }
    load_state
    local d pid bad=0 up in n pgs clean mgr json
    echo "cluster: $DIR (mon 127.0.0.1:$PORT, $OSD_COUNT x $STORE OSD)"
    for d in $(expected_daemons); do
        if pid=$(daemon_pid "$d"); then echo "  $d running (pid $pid)"; else echo "  $d NOT running"; bad=1; fi
    done
    if ! daemon_pid mon.a >/dev/null; then echo "not running"; return 1; fi
    c_ceph -s || { echo "monitor does not answer"; return 1; }
    c_ceph osd stat || true
    json=$(cluster_json)
    read -r up in n pgs clean mgr < <(summarize <<<"$json")
    ((up == OSD_COUNT)) || { echo "only $up of $OSD_COUNT OSDs up"; bad=1; }
    return "$bad"
}

cmd_env() {
    echo "export CEPH_CONF=$CONF"
    echo "export RBD_TEST_CLIENT_ID=admin"
}

cmd_wait() {
    [[ -f $STATE ]] || die "no cluster in $DIR"
    load_state
    local t0
    t0=$(now)
    wait_healthy || exit 1
    log "healthy after $(elapsed_since "$t0") s"
}

need_osd_id() {
    [[ ${1:-} =~ ^[0-9]+$ ]] || die "usage: $0 $2 <osd id>"
    [[ -f $STATE ]] || die "no cluster in $DIR"
    load_state
    (($1 < OSD_COUNT)) || die "osd.$1 does not exist (the cluster has $OSD_COUNT OSDs)"
}

cmd_kill_osd() {
    need_osd_id "${1:-}" kill-osd
    local pid
    pid=$(daemon_pid "osd.$1") || die "osd.$1 is not running"
    kill -KILL "$pid"
    local t
    for ((t = 0; t < 50; t++)); do proc_is_ours "$pid" || break; sleep 0.1; done
    ! proc_is_ours "$pid" || die "osd.$1 (pid $pid) survived SIGKILL"
    rm -f "$RUN/osd.$1.pid"
    # Nobody reports a lone OSD's death quickly (mon osd report timeout is 900 s): mark it down now.
    c_ceph osd down "osd.$1" >/dev/null 2>&1 || log "could not mark osd.$1 down (is the monitor running?)"
    log "killed osd.$1 (pid $pid)"
    [[ $STORE == memstore ]] && log "note: memstore OSDs come back empty after a kill; use RBD_DEV_OBJECTSTORE=bluestore for fault tests"
    return 0
}

cmd_stop_osd() {
    need_osd_id "${1:-}" stop-osd
    local pid
    pid=$(daemon_pid "osd.$1") || { log "osd.$1 is not running"; return 0; }
    terminate "$pid"
    log "stopped osd.$1"
}

cmd_start_osd() {
    need_osd_id "${1:-}" start-osd
    take_lock
    if daemon_pid "osd.$1" >/dev/null; then log "osd.$1 is already running"; return 0; fi
    start_daemon osd "$1"
    local deadline=$((SECONDS + WAIT_TIMEOUT))
    while ((SECONDS < deadline)); do
        if c_ceph osd dump -f json 2>/dev/null | /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
sys.exit(0 if any(o["osd"] == int(sys.argv[1]) and o["up"] for o in d["osds"]) else 1)' "$1"; then
            log "osd.$1 is up"
            return 0
        fi
        sleep 0.5
    done
    die "osd.$1 did not come up within ${WAIT_TIMEOUT}s; see $LOGDIR/osd.$1.log"
}

cmd_stop_mon() {
    [[ -f $STATE ]] || die "no cluster in $DIR"
    load_state
    local pid
    pid=$(daemon_pid mon.a) || { log "mon.a is not running"; return 0; }
    terminate "$pid"
    log "stopped mon.a"
}

cmd_start_mon() {
    [[ -f $STATE ]] || die "no cluster in $DIR"
    load_state
    take_lock
    if ! daemon_pid mon.a >/dev/null; then start_daemon mon a; fi
    local deadline=$((SECONDS + WAIT_TIMEOUT))
    while ((SECONDS < deadline)); do
        if c_ceph quorum_status >/dev/null 2>&1; then log "mon.a is up"; return 0; fi
        sleep 0.5
    done
    die "mon.a does not answer after ${WAIT_TIMEOUT}s; see $LOGDIR/mon.a.log"
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_stop 1 ;;
    stop) cmd_stop 0 ;;
    status) cmd_status ;;
    env) cmd_env ;;
    wait) cmd_wait ;;
    kill-osd) cmd_kill_osd "${2:-}" ;;
    stop-osd) cmd_stop_osd "${2:-}" ;;
    start-osd) cmd_start_osd "${2:-}" ;;
    stop-mon) cmd_stop_mon ;;
    start-mon) cmd_start_mon ;;
    -h | --help | help | "") usage ;;
    *) echo "vstart.sh: unknown command '$1'" >&2; usage ;;
esac
