#!/usr/bin/env bash
# Runs ferry.sbatch on a real Slurm cluster made on this machine: slurmctld and N slurmd
# "nodes", each in a network namespace (own address and hostname) on a bridge in a namespace
# of its own, like deploy/local-cluster.sh. Everything is removed on exit.
#
#   sudo deploy/slurm/check-sbatch.sh                    # stand-ins for the ferry executables
#   sudo deploy/slurm/check-sbatch.sh --bin build-dir/bin -- map square --range 0:100
#
# Without --bin, ferry-coordinator and ferry-worker are small stand-ins that record where and
# with which arguments they ran and whether the workers got SIGTERM at the end: that checks
# the script's Slurm side (placement, arguments, stopping the workers, exit status). With
# --bin DIR, the real executables in DIR run (remote workers needed).
# Needs root and Debian's slurmd, slurmctld, slurm-client and munge packages.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
nodes=3
bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    -N) nodes=${2:?}; shift 2 ;;
    --bin) bin=${2:?}; shift 2 ;;
    --) shift; break ;;
    *) echo "usage: $0 [-N NODES] [--bin DIR] [-- ferry-coordinator command]" >&2; exit 2 ;;
  esac
done
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

if [ -z "$bin" ]; then
  bin="$work/bin"
  cat >"$bin/ferry-worker" <<EOF
#!/bin/bash
echo "ferry-worker on \$(hostname): \$*" >>"$work/calls.log"
trap 'echo "ferry-worker on \$(hostname): SIGTERM" >>"$work/calls.log"; exit 0' TERM
sleep 300 & wait
EOF
  cat >"$bin/ferry-coordinator" <<EOF
#!/bin/bash
echo "ferry-coordinator on \$(hostname): \$*" >>"$work/calls.log"
sleep 2
echo "(stand-in result)"
EOF
  chmod +x "$bin/ferry-coordinator" "$bin/ferry-worker"
fi

job=$(cd "$work/out" && in_node ctl env FERRY_BIN="$bin" FERRY_KEYS="$work/keys" \
  sbatch --parsable -N "$nodes" "$here/ferry.sbatch" "$@")
for _ in $(seq 600); do
  state=$(in_node ctl scontrol show job "$job" | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
  case "$state" in PENDING | RUNNING | CONFIGURING | COMPLETING | "") sleep 0.5 ;; *) break ;; esac
done
echo "check-sbatch: job $job $state"
[ -f "$work/calls.log" ] && sed 's/^/  /' "$work/calls.log"
for f in "$work"/out/*; do
  echo "--- $(basename "$f")"
  cat "$f"
done
[ "$state" = COMPLETED ]
