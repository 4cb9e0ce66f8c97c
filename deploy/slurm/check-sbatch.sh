#!/usr/bin/env bash
# Runs ferry.sbatch on a real Slurm cluster made on this machine: slurmctld and N slurmd
# "nodes", each in a network namespace (own address and hostname) on a bridge in a namespace
# of its own, like deploy/local-cluster.sh. Everything is removed on exit.
#
#   sudo deploy/slurm/check-sbatch.sh                    # stand-ins for the ferry executables
#   sudo deploy/slurm/check-sbatch.sh --bin build-dir/bin -- map square --range 0:100
#   sudo deploy/slurm/check-sbatch.sh --bin DIR --tasks LIB.so -- map mytask --range 0:100
#   sudo deploy/slurm/check-sbatch.sh --bin DIR --program PROG -- map mytask --range 0:100
#
# Without --bin, ferry-coordinator, ferry-worker and a user's program are small stand-ins
# that record where and with which arguments they ran and whether the workers got SIGTERM at
# the end, and four jobs run: the stock executables; FERRY_TASKS set (--tasks FOLDER before
# the coordinator's other options and on every worker); FERRY_PROGRAM set (the program as the
# coordinator, `PROGRAM --ferry-worker --connect ...` on the other nodes); both set (refused,
# exit 2). That checks the script's Slurm side (placement, arguments, stopping the workers,
# exit status). With --bin DIR, the real executables in DIR run (remote workers needed), with
# --tasks PATH as FERRY_TASKS, or --program PATH (a program that calls ferry::init and
# ferry::coordinator::run_cli) as FERRY_PROGRAM; paths must be readable by every node, and
# they are here, where all nodes share this machine's file system.
# Needs root and Debian's slurmd, slurmctld, slurm-client and munge packages.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
nodes=3
bin=""
tasks=""
program=""
while [ $# -gt 0 ]; do
  case "$1" in
    -N) nodes=${2:?}; shift 2 ;;
    --bin) bin=${2:?}; shift 2 ;;
    --tasks) tasks=$(realpath "${2:?}"); shift 2 ;;
    --program) program=$(realpath "${2:?}"); shift 2 ;;
    --) shift; break ;;
    *)
      echo "usage: $0 [-N NODES] [--bin DIR [--tasks PATH | --program PATH]] [-- COMMAND]" >&2
      exit 2
      ;;
  esac
done
if [ -z "$bin" ] && [ -n "$tasks$program" ]; then
  echo "check-sbatch: --tasks and --program go with --bin (stand-ins try both anyway)" >&2
  exit 2
fi
[ "$(id -u)" -eq 0 ] || { echo "check-sbatch: needs root" >&2; exit 2; }
for t in slurmctld slurmd sbatch munged ip nsenter unshare; do
  command -v "$t" >/dev/null || { echo "check-sbatch: $t not found" >&2; exit 2; }
done

stat=$(cat /proc/$$/stat)
read -ra f <<<"${stat##*) }"
prefix="ferry-$$-${f[19]}-slurm-"
work=$(mktemp -d /tmp/ferry-check-sbatch.XXXXXX)
subnet="10.$((128 + ($$ >> 8) % 96)).$(($$ & 255))"
names=(ctl)
for ((i = 1; i <= nodes; i++)); do names+=("node$i"); done
started_munged=0

# shellcheck disable=SC2317 # reached through the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for n in "${names[@]}" br; do
    [ -e "/run/netns/$prefix$n" ] || continue
    pids=$(ip netns pids "$prefix$n" || true)
    # shellcheck disable=SC2086 # one pid per word
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    ip netns del "$prefix$n" || true
  done
  # shellcheck disable=SC2046 # one pid per word
  [ $started_munged -eq 0 ] || kill $(cat "$work/munged.pid") 2>/dev/null || true
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! munge -n >/dev/null 2>&1; then
  install -d -o munge -g munge /run/munge
  runuser -u munge -- munged
  started_munged=1
  # munged forks into the background: ask for the daemon's pid once it answers.
  for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
  pgrep -u munge -x munged >"$work/munged.pid"
fi

ip netns add "${prefix}br"
ip -n "${prefix}br" link add br0 type bridge
ip -n "${prefix}br" link set br0 up
echo "127.0.0.1 localhost" >"$work/hosts"
for i in "${!names[@]}"; do
  ns="$prefix${names[$i]}"
  echo "$subnet.$((i + 1)) ${names[$i]}" >>"$work/hosts"
  ip netns add "$ns"
  ip -n "${prefix}br" link add "port$i" type veth peer name eth0 netns "$ns"
  ip -n "${prefix}br" link set "port$i" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$subnet.$((i + 1))/24" dev eth0
  ip -n "$ns" link set eth0 up
done

mkdir -p "$work/state" "$work/spool" "$work/out" "$work/bin"
if [ -n "$bin" ]; then
  "$bin/ferry-coordinator" keygen "$work/keys" >/dev/null
else
  mkdir -p "$work/keys"
fi
conf="$work/slurm.conf"
cat >"$conf" <<EOF
ClusterName=ferrycheck
SlurmctldHost=ctl($subnet.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool/%n
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd-%n.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
PartitionName=main Nodes=node[1-$nodes] Default=YES MaxTime=INFINITE State=UP
EOF
cpus=$(nproc)
for ((i = 1; i <= nodes; i++)); do
  echo "NodeName=node$i NodeAddr=$subnet.$((i + 1)) CPUs=$cpus State=UNKNOWN" >>"$conf"
done
export SLURM_CONF="$conf"

# Each daemon: the node's network namespace (nsenter, so /sys and its cgroups stay visible),
# its own hostname (a UTS namespace) and the cluster's hosts file (a mount namespace).
in_node() {
  local name=$1
  shift
  # shellcheck disable=SC2016 # $0, $1 and $@ are the inner shell's
  nsenter --net="/run/netns/$prefix$name" unshare --uts --mount sh -c \
    'mount --bind "$0" /etc/hosts && hostname "$1" && shift && exec "$@"' \
    "$work/hosts" "$name" "$@"
}
in_node ctl slurmctld -f "$conf"
for ((i = 1; i <= nodes; i++)); do in_node "node$i" slurmd -f "$conf"; done
for _ in $(seq 100); do
  idle=$(in_node ctl sinfo -h -t idle -o %D 2>/dev/null || true)
  [ "${idle:-0}" = "$nodes" ] && break
  sleep 0.2
done
[ "${idle:-0}" = "$nodes" ] || { echo "check-sbatch: nodes did not come up" >&2; tail -n 5 "$work"/*.log; exit 1; }
echo "check-sbatch: $nodes slurmd nodes up on $subnet.0/24"

# run_job NAME ENV...: submits ferry.sbatch with the command line's arguments and the given
# settings, waits for it to end, prints what ran where and its output; sets $state.
run_job() {
  local name=$1 job f
  shift
  : >"$work/calls.log"
  rm -f "$work"/out/*
  job=$(cd "$work/out" && in_node ctl env FERRY_BIN="$bin" FERRY_KEYS="$work/keys" "$@" \
    sbatch --parsable -N "$nodes" "$here/ferry.sbatch" "${command[@]}")
  for _ in $(seq 600); do
    state=$(in_node ctl scontrol show job "$job" | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
    case "$state" in PENDING | RUNNING | CONFIGURING | COMPLETING | "") sleep 0.5 ;; *) break ;; esac
  done
  echo "check-sbatch: $name: job $job $state"
  sed 's/^/  /' "$work/calls.log"
  for f in "$work"/out/*; do
    echo "--- $(basename "$f")"
    cat "$f"
  done
}
command=("$@")

if [ -n "$bin" ]; then
  settings=()
  [ -z "$tasks" ] || settings+=("FERRY_TASKS=$tasks")
  [ -z "$program" ] || settings+=("FERRY_PROGRAM=$program")
  run_job "${settings[*]:-ferry-coordinator, ferry-worker}" "${settings[@]}"
  [ "$state" = COMPLETED ]
  exit
fi

# Stand-ins: each records "NAME on HOST: ARGS"; workers wait for SIGTERM, coordinators answer.
bin="$work/bin"
stand_in() {  # stand_in FILE NAME: a coordinator, or a worker when its arguments say so
  cat >"$1" <<EOF
#!/bin/bash
echo "$2 on \$(hostname): \$*" >>"$work/calls.log"
case " \$* " in
  *" --connect "*)
    trap 'echo "$2 on \$(hostname): SIGTERM" >>"$work/calls.log"; exit 0' TERM
    sleep 300 & wait ;;
  *) sleep 2; echo "(stand-in result)" ;;
esac
EOF
  chmod +x "$1"
}
stand_in "$bin/ferry-coordinator" ferry-coordinator
stand_in "$bin/ferry-worker" ferry-worker
stand_in "$work/myprog" myprog
mkdir -p "$work/tasks"
failed=0
expect() {  # expect WHAT REGEX: a line of calls.log matches
  grep -qE -- "$2" "$work/calls.log" || { echo "check-sbatch: FAILED: $1"; failed=1; }
}
expect_not() {  # expect_not WHAT REGEX: no line of calls.log matches
  ! grep -qE -- "$2" "$work/calls.log" || { echo "check-sbatch: FAILED: $1"; failed=1; }
}
workers=$((nodes - 1))
workers_with() {  # workers_with NAME REGEX: every other node ran NAME with these arguments
  local n
  n=$(grep -cE -- "^$1 on node([2-9]|[1-9][0-9]+): $2" "$work/calls.log" || true)
  [ "$n" = "$workers" ] || { echo "check-sbatch: FAILED: $n of $workers nodes ran $1 $2"; failed=1; }
}

run_job "stock executables"
[ "$state" = COMPLETED ] || { echo "check-sbatch: FAILED: the job ended $state"; failed=1; }
expect "the coordinator runs on node1" "^ferry-coordinator on node1: --workers [0-9]+ --listen "
workers_with ferry-worker "--connect tcp://node1:5555 --slots"
expect_not "no --tasks without FERRY_TASKS" "--tasks"
[ "$workers" -eq 0 ] || expect "the workers are stopped with SIGTERM" "^ferry-worker on .*: SIGTERM"

run_job "FERRY_TASKS" FERRY_TASKS="$work/tasks"
[ "$state" = COMPLETED ] || { echo "check-sbatch: FAILED: the job ended $state"; failed=1; }
expect "the coordinator's --tasks comes first" \
  "^ferry-coordinator on node1: --tasks $work/tasks --workers [0-9]+ --listen "
workers_with ferry-worker "--tasks $work/tasks --connect tcp://node1:5555 "

run_job "FERRY_PROGRAM" FERRY_PROGRAM="$work/myprog"
[ "$state" = COMPLETED ] || { echo "check-sbatch: FAILED: the job ended $state"; failed=1; }
expect "the program is the coordinator" "^myprog on node1: --workers [0-9]+ --listen "
workers_with myprog "--ferry-worker --connect tcp://node1:5555 "
expect_not "no stock executable with FERRY_PROGRAM" "^ferry-"

run_job "FERRY_PROGRAM and FERRY_TASKS" FERRY_PROGRAM="$work/myprog" FERRY_TASKS="$work/tasks"
[ "$state" = FAILED ] || { echo "check-sbatch: FAILED: the job ended $state, not FAILED"; failed=1; }
grep -q "unset FERRY_TASKS" "$work"/out/* ||
  { echo "check-sbatch: FAILED: no message about FERRY_PROGRAM with FERRY_TASKS"; failed=1; }
expect_not "nothing runs" "."

[ $failed -eq 0 ] && echo "check-sbatch: all as expected"
