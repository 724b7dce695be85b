# Sourced by scripts/cluster.sh and scripts/hosts.sh (from the checkout's root):
# the one check of whether a program they started still runs.

# alive NAME PROGRAM: the pid in $RUN/NAME.pid is running PROGRAM.
alive() {
    local pidfile="$RUN/$1.pid" pid
    [[ -f $pidfile ]] || return 1
    pid=$(cat "$pidfile")
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$2" || return 1
}
