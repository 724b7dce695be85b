#!/usr/bin/env bash
# The local demo cluster behind `make cluster`, `make status`, `make kill-*`,
# `make revive` and `make stop`: nodes A-E from nodes.txt, three workers on
# 13337-13339 and a daemon for each (with --pid), in the background.
# Pids and logs live under run/, data under data/<ID>. The cluster key is
# cluster.key beside the nodes file (where nodes and daemons look by default),
# made with `raftlb keygen` on the first start and never replaced. Starting is idempotent: a
# process whose pid file names a live process of the same program is left alone.
# `start` waits up to WAIT_SECS (10) for a leader, every node and every server,
# then names the leader and the page, or what did not come up and its log's end.
# BIN, NODES, RUN, DATA and WORKER_PORTS ("13337 13338 13339") may be set, so a
# test can run the same script on free ports without touching the demo's.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
NODES=${NODES:-nodes.txt}
RUN=${RUN:-run}
DATA=${DATA:-data}
read -r -a WORKER_PORTS <<< "${WORKER_PORTS:-13337 13338 13339}"
WAIT_SECS=${WAIT_SECS:-10}

mkdir -p "$RUN"

node_ids() { sed -e 's/#.*//' "$NODES" | awk 'NF >= 2 { print $1 }'; }
node_addr() { sed -e 's/#.*//' "$NODES" | awk -v id="$1" '$1 == id { print $2 }'; }

# alive NAME PROGRAM (scripts/procs.sh).
source scripts/procs.sh

# launch NAME PROGRAM ARGS...: start unless already running.
launch() {
    local name=$1 program=$2
    shift 2
    if alive "$name" "$program"; then
        echo "  $name already running (pid $(cat "$RUN/$name.pid"))"
        return 0
    fi
    "$BIN/$program" "$@" >> "$RUN/$name.log" 2>&1 &
    echo $! > "$RUN/$name.pid"
    echo "  $name started (pid $!)"
}

# ensure_key: make the cluster key on first start; an existing one is kept.
ensure_key() {
    local key
    key="$(dirname "$NODES")/cluster.key"
    if [[ ! -e $key ]]; then
        "$BIN/raftlb" keygen "$key"
    fi
}

start_nodes() {
    for id in $(node_ids); do
        launch "node-$id" raftlb-node --id "$id" --nodes "$NODES" --data-dir "$DATA/$id"
    done
}

start_servers() {
    local i=0 port
    for port in "${WORKER_PORTS[@]}"; do
        i=$((i + 1))
        launch "worker-$i" raftlb-worker --port "$port"
        # The daemon samples its worker's process: restart it when the worker
        # got a new pid, so it does not watch a process that is gone.
        local wpid
        wpid=$(cat "$RUN/worker-$i.pid")
        if alive "daemon-$i" raftlb-daemon && ! grep -q -- "--pid $wpid " <(tr '\0' ' ' < "/proc/$(cat "$RUN/daemon-$i.pid")/cmdline"); then
            kill "$(cat "$RUN/daemon-$i.pid")" 2>/dev/null || true
            sleep 0.2
        fi
        launch "daemon-$i" raftlb-daemon --worker "http://127.0.0.1:$port" --id "server-$i" \
            --nodes "$NODES" --pid "$wpid"
    done
}

leader_id() {
    "$BIN/raftlb" --nodes "$NODES" --timeout-ms 1000 status --json 2>/dev/null \
        | sed -n 's/.*"leader":"\([^"]*\)".*/\1/p'
}

running_nodes() {
    for id in $(node_ids); do
        if alive "node-$id" raftlb-node; then echo "$id"; fi
    done
}

# json_field NAME: the number or string NAME in the one-line JSON on stdin.
json_field() { sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p"; }

# node_json ID: node ID's own /status (nothing when it does not answer).
node_json() {
    RAFTLB_NODES="$1=$(node_addr "$1")" "$BIN/raftlb" --timeout-ms 1000 status --json 2>/dev/null || true
}

# stop_node ID: SIGTERM (a leader hands leadership over first), then wait for
# the process to end (kill -9 after 10 s).
stop_node() {
    local id=$1 pid
    pid=$(cat "$RUN/node-$id.pid")
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "node $id did not stop within 10 s: kill -9" >&2
    kill -9 "$pid" 2>/dev/null || true
}

# wait_caught_up ID: until there is a leader and node ID has applied what the
# leader had committed when the wait began (at most 30 s).
wait_caught_up() {
    local id=$1 target="" leader applied
    for _ in $(seq 1 150); do
        leader=$(leader_id)
        if [[ -n $leader && -z $target ]]; then
            target=$(node_json "$leader" | json_field commit_index)
        fi
        applied=$(node_json "$id" | json_field applied_index)
        if [[ -n $target && -n $applied ]] && ((applied >= target)); then
            echo "  node $id caught up (applied $applied, leader $leader had committed $target)"
            return 0
        fi
        sleep 0.2
    done
    echo "node $id did not catch up within 30 s; the end of $RUN/node-$id.log:" >&2
    tail -n 3 "$RUN/node-$id.log" >&2
    return 1
}

kill_node() {
    local id=$1
    kill -9 "$(cat "$RUN/node-$id.pid")"
    echo "killed node $id (kill -9, pid $(cat "$RUN/node-$id.pid"))"
}

# check_started NAME PROGRAM...: every named process is still running a moment
# after its start; otherwise show why (the end of its log) and fail.
check_started() {
    local failed=0 name
    sleep 0.5
    for name in "$@"; do
        local program=raftlb-${name%%-*}
        if ! alive "$name" "$program"; then
            echo "$name did not stay up; the end of $RUN/$name.log:" >&2
            tail -n 3 "$RUN/$name.log" >&2
            failed=1
        fi
    done
    return $failed
}

all_names() {
    for id in $(node_ids); do echo "node-$id"; done
    for i in $(seq 1 ${#WORKER_PORTS[@]}); do echo "worker-$i"; echo "daemon-$i"; done
}

# not_ready STATUS_TEXT: what `raftlb status` shows missing, one item a line
# (nothing when there is a leader, every node is up and every server alive).
not_ready() {
    local text=$1 id i
    grep -q '^leader ' <<< "$text" || echo "leader"
    for id in $(node_ids); do
        awk -v id="$id" '$1 == id || ($1 == "*" && $2 == id) { up = ($0 ~ / up /) } END { exit !up }' \
            <<< "$text" || echo "node-$id"
    done
    for i in $(seq 1 ${#WORKER_PORTS[@]}); do
        awk -v id="server-$i" '$1 == id && $5 == "yes" { ok = 1 } END { exit !ok }' <<< "$text" \
            || echo "server-$i"
    done
}

# wait_until_ready: up to WAIT_SECS for not_ready to be empty; otherwise say
# what did not come up, with the end of the log that says why, and fail.
wait_until_ready() {
    local deadline=$((SECONDS + WAIT_SECS)) text missing item i
    while :; do
        text=$("$BIN/raftlb" --nodes "$NODES" --timeout-ms 500 status 2>&1 || true)
        missing=$(not_ready "$text")
        [[ -z $missing ]] && return 0
        ((SECONDS >= deadline)) && break
        sleep 0.2
    done
    echo "after ${WAIT_SECS} s the cluster is not ready:" >&2
    for item in $missing; do
        case $item in
        leader) echo "  no leader: $(tail -n 1 <<< "$text")" >&2 ;;
        node-*)
            echo "  $item is not up; the end of $RUN/$item.log:" >&2
            tail -n 3 "$RUN/$item.log" 2>/dev/null | sed 's/^/    /' >&2 ;;
        server-*)
            i=${item#server-}
            echo "  $item (worker-$i, daemon-$i) is not alive in the table; the end of their logs:" >&2
            tail -n 3 "$RUN/worker-$i.log" "$RUN/daemon-$i.log" 2>/dev/null | sed 's/^/    /' >&2 ;;
        esac
    done
    echo "(make status shows the cluster now; make stop stops it)" >&2
    return 1
}

case ${1:-} in
start)
    ensure_key
    echo "starting nodes (data under $DATA/, logs under $RUN/):"
    start_nodes
    echo "starting workers and daemons:"
    start_servers
    mapfile -t names < <(all_names)
    check_started "${names[@]}"
    wait_until_ready
    leader=$(leader_id)
    addr=$(node_addr "$leader")
    echo
    echo "cluster up: leader $leader, $(node_ids | wc -l) nodes, ${#WORKER_PORTS[@]} servers alive."
    echo "open the NoteRaft page: http://${addr}/   (any node's port works; /status, /metrics)"
    echo "try: $BIN/raftlb prime 10000   |   $BIN/raftlb note set hello   |   make kill-leader   |   make help"
    echo "logs: $RUN/*.log"
    ;;
revive)
    echo "restarting dead processes with their data:"
    start_nodes
    start_servers
    mapfile -t names < <(all_names)
    check_started "${names[@]}"
    ;;
status)
    "$BIN/raftlb" --nodes "$NODES" status
    ;;
kill-random)
    mapfile -t up < <(running_nodes)
    if ((${#up[@]} == 0)); then echo "no node is running" >&2; exit 1; fi
    kill_node "${up[RANDOM % ${#up[@]}]}"
    ;;
kill-leader)
    leader=$(leader_id)
    if [[ -z $leader ]]; then echo "no leader found (is the cluster running? make status)" >&2; exit 1; fi
    alive "node-$leader" raftlb-node || { echo "leader $leader is not one of ours under $RUN/" >&2; exit 1; }
    kill_node "$leader"
    ;;
kill-follower)
    leader=$(leader_id)
    mapfile -t up < <(running_nodes | grep -vx -- "${leader:-none}")
    if ((${#up[@]} == 0)); then echo "no running follower" >&2; exit 1; fi
    kill_node "${up[RANDOM % ${#up[@]}]}"
    ;;
rolling-restart)
    # Every node in turn, the leader last: each is stopped with SIGTERM (a
    # leader hands leadership over first), started again on its data, and
    # caught up with the leader before the next one goes.
    leader=$(leader_id)
    if [[ -z $leader ]]; then echo "no leader: a rolling restart needs a working cluster (make status)" >&2; exit 1; fi
    mapfile -t ids < <(node_ids)
    for id in "${ids[@]}"; do
        alive "node-$id" raftlb-node || { echo "node $id is not running: make revive first" >&2; exit 1; }
    done
    order=()
    for id in "${ids[@]}"; do [[ $id == "$leader" ]] || order+=("$id"); done
    order+=("$leader")
    echo "rolling restart, leader $leader last: ${order[*]}"
    for id in "${order[@]}"; do
        echo "restarting node $id"
        stop_node "$id"
        launch "node-$id" raftlb-node --id "$id" --nodes "$NODES" --data-dir "$DATA/$id"
        wait_caught_up "$id"
    done
    echo "rolling restart done: leader $(leader_id), every node restarted"
    ;;
stop)
    # Daemons first (so no reports hit stopping nodes), then nodes, then workers.
    pids=()
    for f in "$RUN"/daemon-*.pid "$RUN"/node-*.pid "$RUN"/worker-*.pid; do
        [[ -f $f ]] || continue
        pid=$(cat "$f")
        if kill -TERM "$pid" 2>/dev/null; then pids+=("$pid"); fi
        rm -f "$f"
    done
    for _ in $(seq 1 50); do
        left=()
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
        ((${#left[@]} == 0)) && break
        sleep 0.1
    done
    for pid in "${left[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    echo "stopped ${#pids[@]} processes"
    ;;
*)
    echo "usage: $0 start|revive|status|kill-random|kill-leader|kill-follower|rolling-restart|stop" >&2
    exit 2
    ;;
esac
