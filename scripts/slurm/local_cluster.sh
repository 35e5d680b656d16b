#!/usr/bin/env bash
# local_cluster.sh start|stop|status|env: a one-node Slurm cluster on this machine, for trying
# scripts/slurm/search.sbatch and for tests/test_slurm.py. Debian 12's slurm-wlm and munge
# (scripts/setup.sh installs them); run as root: munged, slurmctld and slurmd run as root.
#
#   start   writes BUILD/slurm/etc/slurm.conf (one node: this host's `hostname -s`, its CPUs, one
#           partition `local`; no cgroup plugins: proctrack/linuxproc, task/none), makes a munge key
#           once, starts munged, slurmctld and slurmd in the background (each only if it is not
#           already running: a second start changes nothing) and waits until `sinfo` shows the node
#           idle (at most CCQ_SLURM_WAIT seconds, default 60; otherwise it says why and exits 1).
#   stop    stops exactly the daemons of this cluster (by their pid files, checking the process
#           name), slurmd first; removes nothing (key, configuration, state and logs stay).
#           Jobs still running are left to their slurmstepd: scancel them first.
#   status  which daemons run, and sinfo.
#   env     prints `export SLURM_CONF=...`: eval "$(scripts/slurm/local_cluster.sh env)" before
#           using sbatch, squeue, scontrol, sinfo with this cluster.
#
# Everything lives under CCQ_SLURM_DIR (default build/slurm of this tree): etc/ (slurm.conf),
# munge/ (key, socket, log), state/ (slurmctld's StateSaveLocation), spool/ (slurmd's), log/, run/
# (pid files). Only loopback addresses: the controller and the node are 127.0.0.1; munged has its
# own socket, so a system munged (if any) is not touched. Ports: CCQ_SLURM_PORT (slurmctld, default
# 6817) and the next one (slurmd).
#
# Settings chosen for short test jobs: JobRequeue=1 (batch jobs may be requeued), MinJobAge=60
# (a finished job's record is kept a minute), AuthInfo cred_expire=10 (a requeued job waits about
# that long before it may start again; the default 120 s), SchedulerParameters sched_interval=2
# (pending jobs are looked at every 2 s, so a requeued job starts as soon as it may), OverTimeLimit=0
# (the time limit is hard), KillWait=30 (SIGTERM, then SIGKILL 30 s later, at the time limit).
# slurmctld itself looks at time limits (and sends --signal warnings) every 30 s, a fixed period.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
dir=${CCQ_SLURM_DIR:-$here/build/slurm}
node=$(hostname -s)
cpus=${CCQ_SLURM_CPUS:-$(nproc)}
port=${CCQ_SLURM_PORT:-6817}
wait_s=${CCQ_SLURM_WAIT:-60}
conf=$dir/etc/slurm.conf
sock=$dir/munge/munge.socket.2
export SLURM_CONF=$conf

say() { echo "local_cluster: $*" >&2; }
started=() # the daemons this start started: stopped again if it fails
die() {
  say "$*"
  local i d
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do
    d=${started[i]}
    case $d in munged) stop_one munged "$dir/munge/munged.pid" ;; *) stop_one "$d" "$dir/run/$d.pid" ;; esac
  done
  exit 1
}

# pid of a running daemon of ours: its pid file names a live process of that name, else nothing
running() { # NAME PIDFILE
  local pid
  [ -s "$2" ] || return 1
  pid=$(tr -dc 0-9 < "$2")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 1
  echo "$pid"
}

write_conf() {
  mkdir -p "$dir/etc" "$dir/state" "$dir/spool" "$dir/log" "$dir/run"
  local tmp=$conf.tmp.$$
  cat > "$tmp" <<EOF
# slurm.conf of the local one-node cluster: written by scripts/slurm/local_cluster.sh (rewritten on
# every start; edit the script, not this file).
ClusterName=ccqlocal
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
ReturnToService=2
JobRequeue=1
MinJobAge=60
KillWait=30
OverTimeLimit=0
InactiveLimit=0
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$node CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  mv -f "$tmp" "$conf"
}

start_munged() {
  local pid
  if pid=$(running munged "$dir/munge/munged.pid"); then say "munged already running (pid $pid)"; return; fi
  mkdir -p "$dir/munge"
  chmod 0755 "$dir/munge" # munged: the socket's folder searchable by all, writable by root only
  if [ ! -s "$dir/munge/munge.key" ]; then # made once, kept
    mungekey --create --keyfile="$dir/munge/munge.key" 2>/dev/null ||
      dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 0400 "$dir/munge/munge.key"
  fi
  rm -f "$sock" "$sock.lock"
  munged --socket="$sock" --key-file="$dir/munge/munge.key" --pid-file="$dir/munge/munged.pid" \
         --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" --origin=127.0.0.1 \
    </dev/null >>"$dir/munge/munged.out" 2>&1 ||
    die "munged did not start: $(tail -n 3 "$dir/munge/munged.out" "$dir/munge/munged.log" 2>/dev/null)"
  started+=(munged)
  for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
  [ -S "$sock" ] || die "munged started but its socket $sock did not appear"
  say "munged started (pid $(cat "$dir/munge/munged.pid"))"
}

start_daemon() { # NAME: slurmctld or slurmd (both daemonize and write their pid file)
  local name=$1 pid
  if pid=$(running "$name" "$dir/run/$name.pid"); then say "$name already running (pid $pid)"; return; fi
  rm -f "$dir/run/$name.pid"
  if [ "$name" = slurmd ]; then
    mkdir -p "$dir/spool/$node"
    slurmd -f "$conf" -N "$node" </dev/null >>"$dir/log/slurmd.out" 2>&1 ||
      die "slurmd did not start: $(tail -n 5 "$dir/log/slurmd.log" "$dir/log/slurmd.out" 2>/dev/null)"
  else
    slurmctld -f "$conf" </dev/null >>"$dir/log/slurmctld.out" 2>&1 ||
      die "slurmctld did not start: $(tail -n 5 "$dir/log/slurmctld.log" "$dir/log/slurmctld.out" 2>/dev/null)"
  fi
  for _ in $(seq 100); do pid=$(running "$name" "$dir/run/$name.pid") && break; sleep 0.1; done
  [ -n "$pid" ] || die "$name exited at start: $(tail -n 5 "$dir/log/$name.log" 2>/dev/null)"
  started+=("$name")
  say "$name started (pid $pid)"
}

node_state() { sinfo -h -N -n "$node" -o %T 2>/dev/null | head -n 1 || true; }

start() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (munged, slurmctld and slurmd run as root)"
  for b in munged mungekey slurmctld slurmd sinfo scontrol; do
    command -v "$b" >/dev/null || die "$b not found: install slurm-wlm and munge (scripts/setup.sh)"
  done
  write_conf
  start_munged
  start_daemon slurmctld
  start_daemon slurmd
  local st="" t0=$SECONDS resumed=0
  while [ $((SECONDS - t0)) -lt "$wait_s" ]; do
    for d in slurmctld slurmd; do # one that died after its start (a port in use, a bad setting)
      running "$d" "$dir/run/$d.pid" >/dev/null ||
        die "$d has exited: $(tail -n 5 "$dir/log/$d.log" 2>/dev/null)"
    done
    st=$(node_state)
    case $st in
      idle|mixed|allocated) say "node $node is $st; export SLURM_CONF=$conf"; return 0 ;;
      drain*|down*)  # left so by an earlier run (e.g. a daemon stopped under a job): put it back once
        if [ "$resumed" = 0 ]; then
          scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
          resumed=1
        fi ;;
    esac
    sleep 0.5
  done
  die "node $node not idle after $wait_s s (sinfo says '${st:-nothing}'); see $dir/log/slurmctld.log and slurmd.log:
$(tail -n 5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" 2>/dev/null)"
}

stop_one() { # NAME PIDFILE
  local pid
  pid=$(running "$1" "$2") || { say "$1 not running"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
  if [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]; then
    say "$1 (pid $pid) still there after 10 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$2"
  say "$1 stopped (pid $pid)"
}

stop() {
  stop_one slurmd "$dir/run/slurmd.pid"
  stop_one slurmctld "$dir/run/slurmctld.pid"
  stop_one munged "$dir/munge/munged.pid"
}

status() {
  local d pid rc=0
  for d in munged:"$dir/munge/munged.pid" slurmctld:"$dir/run/slurmctld.pid" slurmd:"$dir/run/slurmd.pid"; do
    if pid=$(running "${d%%:*}" "${d#*:}"); then
      echo "${d%%:*}: running (pid $pid)"
    else
      echo "${d%%:*}: not running"
      rc=1
    fi
  done
  [ "$rc" = 0 ] && sinfo
  return "$rc"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$conf" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
