#!/usr/bin/env bash
# A ferry "cluster" on one machine: a coordinator host and N worker hosts, each a Linux network
# namespace with its own address on a private /24, joined by veth pairs to a bridge that lives
# in a namespace of its own. The machine's own networking is not touched, and the hosts have no
# route beyond their /24. Runs one ferry-coordinator command on the coordinator host (listening
# for remote workers, with no local ones), a ferry-worker on each worker host, and removes every
# namespace, interface and process it made when it exits, also on Ctrl-C or an error.
#
#   sudo deploy/local-cluster.sh                              # 3 workers: map square --range 0:1000
#   sudo deploy/local-cluster.sh -n 5 -s 2 -- map count_primes --range 0:100000 --chunksize 100
#   sudo deploy/local-cluster.sh --keys /etc/ferry/keys -- --json map square --items 1,2,3
#   sudo deploy/local-cluster.sh --check                      # the network only (no ferry)
#   sudo deploy/local-cluster.sh --http 9464 -- --http-linger 600 map sleep_ms --range 0:300
#                                                             # open the printed URL to watch
#
# Options (the words after `--` are ferry-coordinator's options and command):
#   -n N         worker hosts (default 3)
#   -s SLOTS     slots per worker (default 1)
#   -b DIR       build folder holding coordinator/ferry-coordinator and worker/ferry-worker
#                (default: build/ at the top of the repository)
#   --bin DIR    folder holding both executables instead (e.g. /usr/local/bin)
#   --keys DIR   CURVE keys (ferry-coordinator keygen) for both sides; without it, --insecure
#   --tasks PATH a task library (or folder of them) for every worker and the coordinator
#                (repeatable); `demo` adds the demos' own library (libferry_demos.so) by itself
#   --port P     coordinator port (default 5555)
#   --wait S     seconds the coordinator waits for all N workers to join (default 60)
#   --check      no ferry: check that every worker host reaches the coordinator host over TCP
#                (python3's http.server there, bash's /dev/tcp here), then tear down
#   --http PORT  the coordinator serves its status page, /api/status and /metrics (its --http)
#                on its own address with a random --http-token, and this machine's
#                127.0.0.1:PORT is forwarded to it (deploy/netns-forward.py, python3): the
#                printed URL, token included, opens the page in a browser here, and
#                `ferry-coordinator status URL --watch` reads it. PORT 0: any free port. Add
#                `--http-linger S` to the coordinator's options to read the final numbers
#                after the job (Ctrl-C ends the wait)
#   --hold       keep the cluster up after the command until Ctrl-C (for poking around with
#                `ip netns exec NAME ...`)
#
# Exit status: the coordinator's (0 all tasks succeeded, 1 some failed, 2 usage, 130
# interrupted); with --check, 0 if every worker host got an answer. Workers' output goes to
# log files whose folder is printed (kept if something failed).
#
# Namespaces are named ferry-<pid>-<start ticks>-lc-*, like the C++ test bed's: the owner's
# session id, so leftovers of a run that was SIGKILLed (no trap runs then) are removed by the
# next run, or by the next test bed, once that pid is gone.
set -euo pipefail

die() {
  echo "local-cluster: $*" >&2
  exit 2
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
workers=3
slots=1
build="$here/../build"
bin=""
keys=""
port=5555
wait_s=60
check=0
hold=0
http=""
tasks=()
worker_tasks=()
while [ $# -gt 0 ]; do
  case "$1" in
    -n) workers=${2:?}; shift 2 ;;
    -s) slots=${2:?}; shift 2 ;;
    -b) build=${2:?}; shift 2 ;;
    --bin) bin=${2:?}; shift 2 ;;
    --keys) keys=${2:?}; shift 2 ;;
    --tasks) tasks+=(--tasks "${2:?}"); shift 2 ;;
    --port) port=${2:?}; shift 2 ;;
    --wait) wait_s=${2:?}; shift 2 ;;
    --check) check=1; shift ;;
    --hold) hold=1; shift ;;
    --http) http=${2:?}; shift 2 ;;
    --) shift; break ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ $# -gt 0 ] || set -- map square --range 0:1000
if ! [[ "$workers" =~ ^[0-9]+$ ]] || [ "$workers" -lt 1 ] || [ "$workers" -gt 200 ]; then
  die "-n: 1 to 200 workers"
fi
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, veth pairs, a bridge)"
command -v ip >/dev/null || die "iproute2's ip not found (apt-get install iproute2)"
command -v unshare >/dev/null || die "util-linux's unshare not found (apt-get install util-linux)"
if [ -n "$http" ]; then
  if ! [[ "$http" =~ ^[0-9]+$ ]] || [ "$http" -gt 65535 ]; then
    die "--http: a port on this machine's loopback, 0 to 65535 (0: any free one)"
  fi
  [ $check -eq 0 ] || die "--http serves the coordinator's page: not with --check"
  command -v python3 >/dev/null || die "--http needs python3 (deploy/netns-forward.py)"
fi

if [ $check -eq 0 ]; then
  if [ -n "$bin" ]; then
    coordinator_exe="$bin/ferry-coordinator"
    worker_exe="$bin/ferry-worker"
  else
    coordinator_exe="$build/coordinator/ferry-coordinator"
    worker_exe="$build/worker/ferry-worker"
  fi
  [ -x "$coordinator_exe" ] || die "$coordinator_exe not found (build first, or give -b/--bin)"
  [ -x "$worker_exe" ] || die "$worker_exe not found (build first, or give -b/--bin)"
  # The demos' tasks live in their task library: stock workers load it to serve a demo.
  if [ "${1:-}" = demo ] || [[ " $* " == *" demo "* ]]; then
    for lib in "$build/demos/libferry_demos.so" "${bin:+$bin/../lib/libferry_demos.so}"; do
      if [ -n "$lib" ] && [ -f "$lib" ]; then
        worker_tasks=(--tasks "$lib")
        break
      fi
    done
  fi
  if [ -n "$keys" ]; then
    security=(--keys "$keys")
    worker_security=(--keys "$keys")
  else
    security=(--insecure)
    worker_security=()
  fi
fi

# The fields of /proc/PID/stat from the third (state) on: the name before them may hold
# spaces and ')'. Fails if PID does not exist.
proc_fields() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  echo "${stat##*) }"
}

# Start time of PID in clock ticks (field 22), as in a session id "<pid>-<start ticks>".
start_ticks() {
  local fields
  read -ra fields <<<"$(proc_fields "$1")" || return 1
  [ ${#fields[@]} -gt 19 ] || return 1
  echo "${fields[19]}"
}
session="$$-$(start_ticks $$)"
prefix="ferry-$session-lc-"
bridge_ns="${prefix}br"
hosts=("${prefix}coordinator")
for ((i = 1; i <= workers; i++)); do hosts+=("${prefix}worker$i"); done
# 10.X.Y.0/24 from the pid: isolated anyway, distinct only to keep logs unambiguous.
subnet="10.$((128 + ($$ >> 8) % 96)).$(($$ & 255))"
coordinator_addr="$subnet.1"
logs=$(mktemp -d /tmp/ferry-local-cluster.XXXXXX)
started=()
worker_pids=()
coordinator_pid=""
failed=0

# SIGKILLs whatever runs inside a namespace, then deletes it (its interfaces go with it).
remove_ns() {
  local ns=$1 pids
  [ -e "/run/netns/$ns" ] || return 0
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  # shellcheck disable=SC2086 # one pid per word
  [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
  ip netns del "$ns" || echo "local-cluster: could not delete namespace $ns" >&2
}

# Whether process PID is running (exited and not yet reaped does not count).
# shellcheck disable=SC2317 # reached from cleanup, through the EXIT trap
running() {
  local fields
  fields=$(proc_fields "$1") || return 1
  [ "${fields%% *}" != Z ]
}

# shellcheck disable=SC2317 # reached through the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # Ask nicely first, the coordinator before its workers (it cancels the job and says so;
  # workers leaving first would only have their tasks re-queued), then everyone else.
  if [ -n "$coordinator_pid" ]; then
    kill -TERM "$coordinator_pid" 2>/dev/null || true
    wait "$coordinator_pid" 2>/dev/null || true
  fi
  # The coordinator tells its workers to stop as it ends; they exit by themselves, which may
  # take a moment (a sanitizer build checks for leaks at exit, in a helper process that a
  # signal would orphan). Give them up to 5 s before asking.
  local pid any
  for _ in $(seq 50); do
    any=0
    for pid in "${worker_pids[@]}"; do
      if running "$pid"; then any=1; fi
    done
    [ "$any" -eq 1 ] || break
    sleep 0.1
  done
  [ ${#started[@]} -eq 0 ] || kill -TERM "${started[@]}" 2>/dev/null || true
  for pid in "${started[@]}"; do wait "$pid" 2>/dev/null || true; done
  for ns in "${hosts[@]}" "$bridge_ns"; do remove_ns "$ns"; done
  if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
    echo "local-cluster: logs kept in $logs" >&2
  else
    rm -rf "$logs"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Leftovers of runs (or test beds) whose owner is gone: same pid with other start ticks, or none.
for ns in $(ip netns list | awk '{print $1}'); do
  if [[ "$ns" =~ ^ferry-([0-9]+)-([0-9]+)- ]]; then
    owner=${BASH_REMATCH[1]}
    ticks=${BASH_REMATCH[2]}
    if [ "$(start_ticks "$owner" || true)" != "$ticks" ]; then
      echo "local-cluster: removing stale namespace $ns" >&2
      remove_ns "$ns"
    fi
  fi
done

echo "local-cluster: $workers worker hosts + 1 coordinator host on $subnet.0/24" >&2
ip netns add "$bridge_ns"
ip -n "$bridge_ns" link add br0 type bridge
ip -n "$bridge_ns" link set br0 up
for i in "${!hosts[@]}"; do
  ns=${hosts[$i]}
  ip netns add "$ns"
  # Both ends are made in the bridge's namespace, the host's end moved straight into its host:
  # no interface ever appears in the machine's own namespace.
  ip -n "$bridge_ns" link add "port$i" type veth peer name eth0 netns "$ns"
  ip -n "$bridge_ns" link set "port$i" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$subnet.$((i + 1))/24" dev eth0
  ip -n "$ns" link set eth0 up
done
for i in "${!hosts[@]}"; do
  echo "  ${hosts[$i]}  $subnet.$((i + 1))" >&2
done

# Runs the rest of the arguments inside namespace NS as host NAME: in a UTS namespace of its
# own whose host name is NAME, so workers report (and the coordinator shows) which host they
# are on. Call it in the background (`in_host ... &`): every step execs the next, from the
# subshell on, so $! is the command's own pid and signals sent to it reach the command.
in_host() {
  local ns=$1 name=$2
  shift 2
  # shellcheck disable=SC2016 # $0 and $@ belong to the inner shell
  exec ip netns exec "$ns" unshare --uts sh -c 'echo "$0" >/proc/sys/kernel/hostname && exec "$@"' \
    "$name" "$@"
}

# Runs in the background inside a host, as that host; remembers the pid for the cleanup.
start_in() {
  local ns=$1 log=$2 name=$3
  shift 3
  in_host "$ns" "$name" "$@" >"$log" 2>&1 &
  started+=($!)
}

rc=0
if [ $check -eq 1 ]; then
  command -v python3 >/dev/null || die "--check needs python3 (its http.server) on this machine"
  ip netns exec "${hosts[0]}" python3 -m http.server "$port" --bind "$coordinator_addr" \
    --directory "$logs" >"$logs/check-server.log" 2>&1 &
  started+=($!)
  probe() {  # probe NS: one HTTP request from host NS to the coordinator host
    # shellcheck disable=SC2016 # $0 and $1 are the inner shell's arguments
    ip netns exec "$1" timeout 5 bash -c \
      'exec 3<>"/dev/tcp/$0/$1" && printf "GET / HTTP/1.0\r\n\r\n" >&3 && head -n 1 <&3' \
      "$coordinator_addr" "$port" 2>/dev/null | tr -d '\r'
  }
  # The server needs a moment to start listening: poll, bounded (10 s).
  for _ in $(seq 100); do
    [ -n "$(probe "${hosts[1]}")" ] && break
    sleep 0.1
  done
  for ((i = 1; i <= workers; i++)); do
    answer=$(probe "${hosts[$i]}")
    if [[ "$answer" == HTTP/*" 200 "* ]]; then
      echo "local-cluster: ${hosts[$i]} -> $coordinator_addr:$port: $answer"
    else
      echo "local-cluster: ${hosts[$i]} -> $coordinator_addr:$port: no answer" >&2
      failed=1
    fi
  done
  # What a host can reach: its /24 only.
  echo "local-cluster: routes of ${hosts[1]}: $(ip -n "${hosts[1]}" route | tr '\n' ';')"
  rc=$failed
else
  # Workers first: they keep trying to connect until the coordinator listens.
  for ((i = 1; i <= workers; i++)); do
    start_in "${hosts[$i]}" "$logs/worker$i.log" "host$i" "$worker_exe" \
      --connect "tcp://$coordinator_addr:$port" --slots "$slots" --name "worker$i" \
      "${worker_security[@]}" "${tasks[@]}" "${worker_tasks[@]}"
    worker_pids+=("${started[-1]}")
  done
  http_opts=()
  if [ -n "$http" ]; then
    # The page is served on the coordinator host's address, which is not loopback, so it
    # needs a token (the coordinator refuses to start otherwise); this machine reaches it
    # through a forward from its own loopback, started first so that its port is known.
    token=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    mkfifo "$logs/forward.port"
    python3 "$here/netns-forward.py" "$http" "${hosts[0]}" "$coordinator_addr" 0 \
      >"$logs/forward.port" 2>"$logs/forward.log" &
    started+=($!)
    read -r -t 10 http_port <"$logs/forward.port" ||
      die "--http: no forward to the coordinator host (see $logs/forward.log)"
    [ "$http_port" != "$port" ] || die "--http $http_port is also the coordinator's --port"
    http_opts=(--http "$coordinator_addr:$http_port" --http-token "$token")
  fi
  # The coordinator, with no local workers so every task crosses the network; results on this
  # script's stdout, summary on its stderr, and this script's stdin for `map --stdin`. It runs
  # in the background so that a signal to this script is handled at once: the cleanup sends it
  # SIGTERM, which it treats as Ctrl-C.
  in_host "${hosts[0]}" coordinator "$coordinator_exe" "${tasks[@]}" --listen "tcp://$coordinator_addr:$port" \
    "${security[@]}" "${http_opts[@]}" --workers 0 --wait-workers "$workers" --wait-timeout "$wait_s" "$@" <&0 &
  coordinator_pid=$!
  started+=("$coordinator_pid")
  if [ -n "$http" ]; then
    url="http://127.0.0.1:$http_port/?token=$token"
    echo "local-cluster: status page for this machine: $url" >&2
    echo "local-cluster:   ferry-coordinator status '$url' --watch" >&2
  fi
  wait "$coordinator_pid" || rc=$?
  [ $rc -eq 0 ] || failed=1
fi

if [ $hold -eq 1 ]; then
  echo "local-cluster: up; Ctrl-C tears it down" >&2
  # `wait` (unlike a foreground command) returns as soon as a trapped signal arrives.
  # Inside the coordinator host, so that even a SIGKILLed run leaves nothing that the next
  # run's sweep does not remove.
  ip netns exec "${hosts[0]}" sleep infinity &
  started+=($!)
  wait "${started[-1]}" || true
fi
exit $rc
