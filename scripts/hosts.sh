#!/usr/bin/env bash
# `make hosts` / `make hosts-stop`: the demo cluster of `make cluster` with
# every node, worker and daemon on a host of its own: a network namespace per
# process, each with its own address on a Linux bridge this script creates
# (one veth pair per host), and an address for the machine itself on the same
# bridge, so that `raftlb status`, curl and a browser reach every node from
# the machine's own namespace. Needs root and `ip` (iproute2).
#
#   host        namespace          address (HOSTS_SUBNET 10.213.0 by default)
#   machine     (the root one)     10.213.0.1 on bridge raftlb-br
#   node A..E   raftlb-node-A..E   10.213.0.11 .. .15, port 34572 (UDP + TCP)
#   worker 1..3 raftlb-worker-1..3 10.213.0.21 .. .23, port 13337
#   daemon 1..3 raftlb-daemon-1..3 10.213.0.31 .. .33 (reports; listens nowhere)
#
# nodes.txt and the cluster key for this mode live in run/hosts/ (RUN), with
# the pids and logs; data in data/hosts/<ID> (DATA). The repo's nodes.txt,
# cluster.key, run/ files and data/ of `make cluster` are not touched, and the
# two clusters can run side by side. Nothing binds 127.0.0.1: each program binds
# the address of its host. Starting twice starts no duplicates. `stop` kills
# every process by its pid (and any other process left in one of these
# namespaces, by pid), then deletes the namespaces, veths and bridge; running
# it twice is harmless.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
RUN=${RUN:-run/hosts}
DATA=${DATA:-data/hosts}
SUBNET=${HOSTS_SUBNET:-10.213.0}
WAIT_SECS=${WAIT_SECS:-15}
NODES=$RUN/nodes.txt
BRIDGE=raftlb-br
NODE_PORT=34572
WORKER_PORT=13337
NODE_IDS=(A B C D E)
SERVERS=(1 2 3)

die() { echo "hosts: $*" >&2; exit 1; }

# need_root: everything here changes the machine's network.
need_root() {
    [[ $(id -u) == 0 ]] || die "needs root: it creates network namespaces, veth pairs and a bridge (try: sudo make $1)"
    command -v ip >/dev/null || die "\`ip\` (iproute2) not found: apt-get install iproute2"
}

# host_ip NAME: the address of host NAME (node-A, worker-1, daemon-1).
host_ip() {
    local name=$1 index
    case $name in
    node-*) index=$(($(printf '%d' "'${name#node-}") - 65 + 11)) ;;
    worker-*) index=$((20 + ${name#worker-})) ;;
    daemon-*) index=$((30 + ${name#daemon-})) ;;
    *) die "no host named $name" ;;
    esac
    echo "$SUBNET.$index"
}

all_hosts() {
    local id i
    for id in "${NODE_IDS[@]}"; do echo "node-$id"; done
    for i in "${SERVERS[@]}"; do echo "worker-$i"; echo "daemon-$i"; done
}

netns_exists() { ip netns list | awk '{ print $1 }' | grep -qx -- "$1"; }
link_exists() { ip link show dev "$1" >/dev/null 2>&1; }

# check_subnet: SUBNET is three parts of an IPv4 address, and SUBNET.0/24 is
# free on this machine, or is the one our bridge already has.
check_subnet() {
    local part have
    [[ $SUBNET =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "HOSTS_SUBNET=$SUBNET: want the first three parts of an IPv4 address, e.g. 10.213.0"
    for part in ${SUBNET//./ }; do
        ((10#$part <= 255)) || die "HOSTS_SUBNET=$SUBNET: $part is not a byte"
    done
    if link_exists "$BRIDGE"; then
        have=$(ip -4 -o addr show dev "$BRIDGE" | awk '{ print $4 }')
        [[ $have == "$SUBNET.1/24" ]] || die "bridge $BRIDGE already has ${have:-no address}, not $SUBNET.1/24: make hosts-stop first to change HOSTS_SUBNET"
    elif ip -4 -o addr show | awk '{ print $4 }' | grep -q "^${SUBNET//./\\.}\."; then
        die "the subnet $SUBNET.0/24 is already in use on this machine: pick another with HOSTS_SUBNET=10.x.y"
    fi
}

# make_network: the bridge with the machine's address, and for every host a
# namespace with loopback up and a veth pair: one end on the bridge, the other
# (eth0) in the namespace with the host's address. What exists is kept.
make_network() {
    local name ns veth
    if ! link_exists "$BRIDGE"; then
        ip link add "$BRIDGE" type bridge
        ip addr add "$SUBNET.1/24" dev "$BRIDGE"
    fi
    ip link set "$BRIDGE" up
    for name in $(all_hosts); do
        ns=raftlb-$name
        veth=rlb-$name
        netns_exists "$ns" || ip netns add "$ns"
        ip -n "$ns" link set lo up
        if ! link_exists "$veth"; then
            ip link add "$veth" type veth peer name eth0 netns "$ns"
            ip link set "$veth" master "$BRIDGE" up
            ip -n "$ns" addr add "$(host_ip "$name")/24" dev eth0
        fi
        ip -n "$ns" link set eth0 up
    done
}

write_nodes_file() {
    local id
    {
        echo "# make hosts: every node on a host (network namespace) of its own"
        for id in "${NODE_IDS[@]}"; do echo "$id $(host_ip "node-$id"):$NODE_PORT"; done
    } > "$NODES.new"
    mv "$NODES.new" "$NODES"
}

# ensure_key: the cluster key beside this mode's nodes.txt, made on first start.
ensure_key() {
    [[ -e $RUN/cluster.key ]] || "$BIN/raftlb" keygen "$RUN/cluster.key"
}

# alive NAME PROGRAM (scripts/procs.sh).
source scripts/procs.sh

# launch NAME PROGRAM ARGS...: start PROGRAM in host NAME's namespace unless it
# runs already. `ip netns exec` execs the program, so $! is the program's pid.
launch() {
    local name=$1 program=$2
    shift 2
    if alive "$name" "$program"; then
        echo "  $name already running (pid $(cat "$RUN/$name.pid"))"
        return 0
    fi
    ip netns exec "raftlb-$name" "$BIN/$program" "$@" >> "$RUN/$name.log" 2>&1 &
    echo $! > "$RUN/$name.pid"
    echo "  $name started on $(host_ip "$name") (pid $!)"
}

start_processes() {
    local id i wpid url
    for id in "${NODE_IDS[@]}"; do
        launch "node-$id" raftlb-node --id "$id" --nodes "$NODES" --data-dir "$DATA/$id"
    done
    for i in "${SERVERS[@]}"; do
        launch "worker-$i" raftlb-worker --host "$(host_ip "worker-$i")" --port "$WORKER_PORT"
        wpid=$(cat "$RUN/worker-$i.pid")
        # A daemon watching an old worker pid is restarted with the new one.
        if alive "daemon-$i" raftlb-daemon && ! tr '\0' ' ' < "/proc/$(cat "$RUN/daemon-$i.pid")/cmdline" | grep -q -- "--pid $wpid "; then
            kill "$(cat "$RUN/daemon-$i.pid")" 2>/dev/null || true
            sleep 0.2
        fi
        url="http://$(host_ip "worker-$i"):$WORKER_PORT"
        launch "daemon-$i" raftlb-daemon --worker "$url" --id "server-$i" --nodes "$NODES" --pid "$wpid"
    done
}

# check_started: every process still runs a moment after its start.
check_started() {
    local failed=0 name
    sleep 0.5
    for name in $(all_hosts); do
        if ! alive "$name" "raftlb-${name%%-*}"; then
            echo "$name did not stay up; the end of $RUN/$name.log:" >&2
            tail -n 3 "$RUN/$name.log" >&2
            failed=1
        fi
    done
    return $failed
}

status_text() { "$BIN/raftlb" --nodes "$NODES" --timeout-ms 500 status 2>&1 || true; }

# wait_until_ready: up to WAIT_SECS for a leader, every node up and every
# server alive in `raftlb status`; otherwise print the status and fail.
wait_until_ready() {
    local deadline=$((SECONDS + WAIT_SECS)) text ready id i
    while :; do
        text=$(status_text)
        ready=1
        grep -q '^leader ' <<< "$text" || ready=0
        for id in "${NODE_IDS[@]}"; do
            awk -v id="$id" '$1 == id || ($1 == "*" && $2 == id) { up = ($0 ~ / up /) } END { exit !up }' \
                <<< "$text" || ready=0
        done
        for i in "${SERVERS[@]}"; do
            awk -v id="server-$i" '$1 == id && $5 == "yes" { ok = 1 } END { exit !ok }' <<< "$text" || ready=0
        done
        ((ready)) && return 0
        ((SECONDS >= deadline)) && break
        sleep 0.2
    done
    echo "after $WAIT_SECS s the cluster on hosts is not ready; raftlb status says:" >&2
    sed 's/^/  /' <<< "$text" >&2
    echo "(logs: $RUN/*.log; make hosts-stop stops it)" >&2
    return 1
}

leader_id() {
    "$BIN/raftlb" --nodes "$NODES" --timeout-ms 1000 status --json 2>/dev/null \
        | sed -n 's/.*"leader":"\([^"]*\)".*/\1/p'
}

start() {
    need_root hosts
    [[ -x $BIN/raftlb-node ]] || die "$BIN/raftlb-node not built: run make build (make hosts does)"
    check_subnet
    mkdir -p "$RUN" "$DATA"
    echo "network: bridge $BRIDGE ($SUBNET.1 for this machine), a namespace and veth pair per host"
    make_network
    write_nodes_file
    ensure_key
    echo "starting nodes, workers and daemons, each on its own host (logs under $RUN/):"
    start_processes
    check_started
    wait_until_ready
    local leader
    leader=$(leader_id)
    echo
    echo "cluster on hosts up: leader $leader, ${#NODE_IDS[@]} nodes, ${#SERVERS[@]} servers alive."
    echo "open the NoteRaft page: http://$(host_ip "node-$leader"):$NODE_PORT/   (any node's address works)"
    echo "try: $BIN/raftlb --nodes $NODES status   |   $BIN/raftlb --nodes $NODES prime 10000"
    echo "a host's shell: ip netns exec raftlb-node-A bash   |   stop: make hosts-stop"
}

# stop_pids PID...: SIGTERM, up to 5 s to end, then SIGKILL.
stop_pids() {
    local pid left=()
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 50); do
        left=()
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
        ((${#left[@]} == 0)) && return 0
        sleep 0.1
    done
    for pid in "${left[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
}

stop() {
    local f pid name ns pids=() stray=() removed=0
    local namespaces
    namespaces=$(ip netns list 2>/dev/null | awk '$1 ~ /^raftlb-(node|worker|daemon)-/ { print $1 }')
    if ! compgen -G "$RUN/*.pid" >/dev/null && [[ -z $namespaces ]] && ! link_exists "$BRIDGE"; then
        echo "hosts: nothing to stop"
        return 0
    fi
    need_root hosts-stop
    # Daemons first (no reports to stopping nodes), then nodes, then workers.
    for f in "$RUN"/daemon-*.pid "$RUN"/node-*.pid "$RUN"/worker-*.pid; do
        [[ -f $f ]] || continue
        pid=$(cat "$f")
        kill -0 "$pid" 2>/dev/null && pids+=("$pid")
        rm -f "$f"
    done
    ((${#pids[@]} == 0)) || stop_pids "${pids[@]}"
    # A process left in one of our namespaces (started by hand in a host's
    # shell, say) would keep the namespace alive: end it too, by its pid.
    for ns in $namespaces; do
        mapfile -t -O "${#stray[@]}" stray < <(ip netns pids "$ns" 2>/dev/null)
    done
    ((${#stray[@]} == 0)) || { echo "  stopping ${#stray[@]} other processes in the hosts' namespaces"; stop_pids "${stray[@]}"; }
    for name in $(all_hosts); do
        link_exists "rlb-$name" && ip link del "rlb-$name"
        if netns_exists "raftlb-$name"; then ip netns del "raftlb-$name"; removed=$((removed + 1)); fi
    done
    link_exists "$BRIDGE" && ip link del "$BRIDGE"
    echo "stopped ${#pids[@]} processes, removed $removed namespaces and bridge $BRIDGE (data stays in $DATA/)"
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) "$BIN/raftlb" --nodes "$NODES" status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
