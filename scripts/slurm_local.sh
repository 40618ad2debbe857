#!/usr/bin/env bash
# A single-node SLURM on localhost, for trying the pipeline's launch prefixes and for the cluster
# test (docs/cluster.md). Everything lives in a state folder the caller gives: the configuration
# (slurm.conf: controller and node on localhost, partition `debug`, no munge, no cgroups, no
# accounting), the daemons' state, spool, pid and log files. Needs slurmctld, slurmd and
# slurm-client (scripts/install_deps.sh); no systemd, no munged, nothing outside the folder.
#
#   scripts/slurm_local.sh start <dir>   write the configuration, start slurmctld and slurmd, wait
#                                        until sinfo shows the node idle, print the environment
#   scripts/slurm_local.sh env <dir>     print the environment again
#   scripts/slurm_local.sh stop <dir>    cancel what still runs, stop both daemons by their pids
#
#   d=$(mktemp -d); trap 'scripts/slurm_local.sh stop "$d"' EXIT
#   eval "$(scripts/slurm_local.sh start "$d")"     # exports SLURM_CONF=<dir>/slurm.conf
#   srun -n2 hostname
#
# `start` prints only the `export` lines on standard output (its progress goes to standard error).
# Ports: 6817/6818 (SLURM's defaults) when both are free, else the first free pair above 6900.
# SLURM_LOCAL_TIMEOUT (seconds, default 60) bounds the wait for the idle node. The daemons run as
# the user who starts them (SlurmUser, SlurmdUser); tried as root. A start that fails stops what it started (the logs stay). `stop` works after any
# start, also one killed half-way: it cancels the jobs when the controller answers, kills the pids
# the daemons were started with (kept in <dir>/slurmctld.pid and <dir>/slurmd.pid), then every
# process that still has one of their log, spool or state files open (step daemons of jobs still
# running) and its descendants.
set -euo pipefail

usage() { echo "usage: scripts/slurm_local.sh start|stop|env <state dir>" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd="$1"
[ -d "$2" ] || { echo "slurm_local: $2: no such folder (create it first, e.g. with mktemp -d)" >&2; exit 2; }
dir=$(cd "$2" && pwd)
conf="$dir/slurm.conf"
timeout="${SLURM_LOCAL_TIMEOUT:-60}"

log() { echo "slurm_local: $*" >&2; }

print_env() { echo "export SLURM_CONF=$conf"; }

# Something accepts connections on 127.0.0.1:<port>.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
# The pid in <dir>/<daemon>.pid while that process is the daemon (not a later one with its number).
pid_of() {
  local p
  p=$( { tr -cd 0-9 < "$dir/$1.pid"; } 2>/dev/null || true)
  [ -n "$p" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$1" ] && echo "$p" || true
}

# The pids of the processes with one of the daemons' files open (their logs, spool or state: the
# daemons, and the step daemons of jobs still running, which keep slurmd.log open), and their
# descendants (the jobs' tasks).
folder_pids() {
  local p f ppid found=() more=1
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = "$$" ] && continue
    for f in /proc/"$p"/fd/*; do
      case "$(readlink "$f" 2>/dev/null)" in
        "$dir"/slurmctld.log | "$dir"/slurmd.log | "$dir"/slurmctld.out | "$dir"/slurmd.out | "$dir"/spool/* | "$dir"/state/*)
          found+=("$p"); break ;;
      esac
    done
  done
  while [ ${#found[@]} -gt 0 ] && [ $more -eq 1 ]; do
    more=0
    for p in /proc/[0-9]*; do
      p=${p#/proc/}
      ppid=$(awk '{ print $4 }' "/proc/$p/stat" 2>/dev/null) || continue
      [[ " ${found[*]} " == *" $ppid "* && " ${found[*]} " != *" $p "* ]] && { found+=("$p"); more=1; }
    done
  done
  [ ${#found[@]} -eq 0 ] || printf '%s\n' "${found[@]}"
}

# Sends TERM to the pids given, waits up to 10 s, then KILL.
stop_pids() {
  local p left i
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  for i in $(seq 1 50); do
    left=()
    for p in "$@"; do pid_alive "$p" && left+=("$p"); done
    [ ${#left[@]} -eq 0 ] && return 0
    sleep 0.2
  done
  log "still running after 10 s, killing: ${left[*]}"
  kill -KILL "${left[@]}" 2>/dev/null || true
}

stop() {
  local ctld slurmd pids=()
  ctld=$(pid_of slurmctld)
  slurmd=$(pid_of slurmd)
  # Jobs first, so the step daemons end their tasks while slurmd is still there to hear of it.
  if [ -f "$conf" ] && pid_alive "$ctld" && command -v scancel >/dev/null; then
    SLURM_CONF="$conf" timeout 10 scancel --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 1 25); do
      [ -z "$(SLURM_CONF="$conf" timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  for p in "$slurmd" "$ctld"; do pid_alive "$p" && pids+=("$p"); done
  stop_pids "${pids[@]}"
  mapfile -t pids < <(folder_pids)
  [ ${#pids[@]} -gt 0 ] && log "stopping what the daemons left: ${pids[*]}"
  stop_pids "${pids[@]}"
  rm -f "$dir/slurmctld.pid" "$dir/slurmd.pid"
  log "stopped (logs in $dir)"
}

write_conf() {  # <controller port> <node daemon port>
  local user cpus
  user=$(id -un)
  cpus=$(nproc)
  mkdir -p "$dir/state" "$dir/spool"
  cat > "$conf" <<EOF
# Written by scripts/slurm_local.sh: a single-node SLURM on localhost.
ClusterName=mlfdlocal
SlurmctldHost=localhost
SlurmctldPort=$1
SlurmdPort=$2
SlurmUser=$user
SlurmdUser=$user
# No munge: requests between the commands and the daemons are not authenticated (localhost only).
AuthType=auth/none
CredType=cred/none
MpiDefault=none
# No cgroups: processes tracked through /proc, tasks not bound to cores.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SwitchType=switch/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ReturnToService=2
MinJobAge=600
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  local ctld_port slurmd_port p state deadline
  for c in slurmctld slurmd sinfo srun; do
    command -v "$c" >/dev/null || PATH="$PATH:/usr/sbin:/sbin" command -v "$c" >/dev/null ||
      { log "$c not found (scripts/install_deps.sh installs slurmctld, slurmd and slurm-client)"; exit 1; }
  done
  export PATH="$PATH:/usr/sbin:/sbin"
  if pid_alive "$(pid_of slurmctld)" || pid_alive "$(pid_of slurmd)"; then
    log "daemons of $dir are running already (scripts/slurm_local.sh stop $dir first)"; exit 1
  fi
  if ! port_busy 6817 && ! port_busy 6818; then
    ctld_port=6817
  else
    ctld_port=""
    for ((p = 6901; p < 7900; p += 2)); do
      port_busy "$p" || port_busy $((p + 1)) || { ctld_port=$p; break; }
    done
    [ -n "$ctld_port" ] || { log "no two free ports between 6901 and 7900"; exit 1; }
  fi
  slurmd_port=$((ctld_port + 1))
  write_conf "$ctld_port" "$slurmd_port"
  log "starting slurmctld (port $ctld_port) and slurmd (port $slurmd_port) in $dir"
  # In the foreground of their own (-D), in the background of ours, so the pid is known at once;
  # their standard streams go to files, so a caller's $(...) does not wait for them.
  env SLURM_CONF="$conf" slurmctld -D -i -f "$conf" < /dev/null >> "$dir/slurmctld.out" 2>&1 &
  echo $! > "$dir/slurmctld.pid"
  env SLURM_CONF="$conf" slurmd -D -N localhost -f "$conf" < /dev/null >> "$dir/slurmd.out" 2>&1 &
  echo $! > "$dir/slurmd.pid"
  deadline=$((SECONDS + timeout))
  state=""
  while [ $SECONDS -lt $deadline ]; do
    state=$(SLURM_CONF="$conf" timeout 5 sinfo -h -n localhost -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    for d in slurmctld slurmd; do
      pid_alive "$(pid_of $d)" || { log "$d exited while starting; the end of its log:"; tail -n 20 "$dir/$d.log" "$dir/$d.out" >&2 2>/dev/null; stop; exit 1; }
    done
    sleep 0.5
  done
  if [ "$state" != idle ]; then
    log "the node is not idle after $timeout s (sinfo says '${state:-nothing}'); the end of the logs:"
    tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 2>/dev/null || true
    stop
    exit 1
  fi
  log "node localhost idle ($(nproc) CPUs, partition debug)"
  print_env
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  env) print_env ;;
  *) usage ;;
esac
