#!/usr/bin/env bash
# Checks the systemd units against a build of ferry, without touching this machine's systemd:
#
#   deploy/systemd/check-units.sh [BUILD_DIR]           # verify + offline security score
#   sudo deploy/systemd/check-units.sh --boot [BUILD_DIR]
#
# 1. `systemd-analyze verify` on the units (the executables installed into a scratch root
#    under /usr/local/bin, as the units expect); any message is a failure.
# 2. `systemd-analyze security --offline`: the exposure score of each unit's sandboxing.
# 3. The command lines the units' ExecStart shells build, for FERRY_TASKS unset, empty, a
#    folder and a path with a space (and a job with a `*` in it): each ExecStart is read as
#    systemd reads these (continuations joined, $$ a literal $, %i and %H filled in, one
#    '...' script), run with the unit's Environment= defaults and a stand-in executable that
#    prints its arguments, and compared with the expected argv. --boot runs the real thing.
# 4. --boot (root, systemd-container): boots this machine's own OS in a container
#    (systemd-nspawn on a throw-away overlay of /, private network) with the units and the
#    executables bound in, then runs ferry-coordinator.service for real: a job to completion
#    with shared-memory local workers under the sandbox, a long job stopped with
#    `systemctl stop` (expect exit 130, fast, no process left), the unit's /dev/shm being the
#    machine's; starts ferry-worker@127.0.0.1.service (no --tasks on its command line), then
#    both units with FERRY_TASKS set to a folder: a build with task libraries runs with
#    `--tasks FOLDER`, a build without them refuses the option with exit 2 (which the worker
#    unit does not restart); where the build has remote workers (keygen), runs a job
#    with no local workers that ferry-worker@127.0.0.1 does, with keys; and, where a C
#    compiler is at hand, dlopen()s a small library under the worker unit's sandbox (it must
#    load despite MemoryDenyWriteExecute=) and one that asks for an executable stack (it
#    must be refused, as the unit says). The container's log is printed.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
boot=0
if [ "${1:-}" = "--boot" ]; then
  boot=1
  shift
fi
build=${1:-$here/../../build}
scratch=$(mktemp -d /tmp/ferry-check-units.XXXXXX)
mounted=()
cleanup() {
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[$i]}" || true; done
  rm -rf "$scratch"
}
trap cleanup EXIT

root="$scratch/root"
cmake --install "$build" --prefix "$root/usr/local" >/dev/null
mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd"
# verify resolves dependencies (sysinit.target, ...) inside the root: give it the real ones.
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
# The units' ExecStart is a /bin/sh script (it leaves out --tasks when FERRY_TASKS is empty).
install -D "$(readlink -f /bin/sh)" "$root/bin/sh"
cp "$here/ferry-coordinator.service" "$here/ferry-worker@.service" "$root/etc/systemd/system/"

units=(ferry-coordinator.service ferry-worker@head.example.org.service)
out=$(systemd-analyze verify --man=no --root="$root" "${units[@]}" 2>&1) || true
if [ -n "$out" ]; then
  echo "$out"
  echo "check-units: systemd-analyze verify: FAILED"
  exit 1
fi
echo "check-units: systemd-analyze verify: no messages"
for u in "${units[@]}"; do
  systemd-analyze security --offline=yes --root="$root" "$u" | tail -n 1
done

# 3. The argv each unit's shell hands to ferry-*, one argument per line.
mkdir -p "$scratch/argv"
for exe in ferry-coordinator ferry-worker; do
  printf '#!/bin/sh\nprintf "%%s\\n" "$@"\n' >"$scratch/argv/$exe"
  chmod +x "$scratch/argv/$exe"
done
argv_of() {  # argv_of UNIT [VAR=VALUE | -VAR (unset)]...
  local unit=$here/$1 line e
  shift
  line=$(sed -e ':a' -e '/\\$/{N;s/\\\n/ /;ba}' "$unit" | sed -n 's/^ExecStart=//p')
  line=${line//'$$'/'$'}
  line=${line//%i/head.example.org}
  line=${line//%H/this-host}
  line=${line//\/usr\/local\/bin\//$scratch\/argv\/}
  local -A env=()
  while IFS= read -r e; do
    eval "e=$e"  # Environment="A=b c" or Environment=A=b
    env[${e%%=*}]=${e#*=}
  done < <(sed -n 's/^Environment=//p' "$unit")
  for e in "$@"; do
    case "$e" in
      -*) unset "env[${e#-}]" ;;
      *) env[${e%%=*}]=${e#*=} ;;
    esac
  done
  local assign=()
  for e in "${!env[@]}"; do assign+=("$e=${env[$e]}"); done
  local cmd
  eval "cmd=($line)"
  # Run in a folder with files in it, so a * that the shell expanded would show.
  (cd "$scratch" && env -i PATH=/usr/bin:/bin "${assign[@]}" "${cmd[@]}")
}
argv_case() {  # argv_case NAME EXPECTED UNIT ENV...
  local name=$1 expected=$2 unit=$3 got
  shift 3
  got=$(argv_of "$unit" "$@" | tr '\n' ' ')
  got=${got% }
  if [ "$got" != "$expected" ]; then
    echo "check-units: $name: argv is '$got', expected '$expected'"
    argv_failed=1
  fi
  argv_cases=$((argv_cases + 1))
}
argv_failed=0
argv_cases=0
w="--connect tcp://head.example.org:5555 --slots 1 --keys /etc/ferry/keys --name this-host"
argv_case "worker, FERRY_TASKS empty (the default)" "$w" ferry-worker@.service
argv_case "worker, FERRY_TASKS unset" "$w" ferry-worker@.service -FERRY_TASKS
argv_case "worker, FERRY_TASKS a folder" "$w --tasks /usr/local/lib/ferry/tasks" \
  ferry-worker@.service FERRY_TASKS=/usr/local/lib/ferry/tasks
argv_case "worker, FERRY_TASKS with a space" "$w --tasks /srv/my tasks/lib.so" \
  ferry-worker@.service "FERRY_TASKS=/srv/my tasks/lib.so"
c="--listen tcp://0.0.0.0:5555 --keys /etc/ferry/keys --no-progress --http 127.0.0.1:9464 --http-linger 30 map square --range 0:1000"
argv_case "coordinator, defaults" "$c" ferry-coordinator.service
argv_case "coordinator, FERRY_TASKS unset" "$c" ferry-coordinator.service -FERRY_TASKS
argv_case "coordinator, FERRY_TASKS and a job with a *" \
  "--tasks /usr/local/lib/ferry/tasks ${c%% --no-progress*} -w 0 --json map mine --items *" \
  ferry-coordinator.service FERRY_TASKS=/usr/local/lib/ferry/tasks "FERRY_OPTIONS=-w 0 --json" \
  "FERRY_JOB=map mine --items *"
# One argument per line: a space inside FERRY_TASKS must not split it.
last=$(argv_of ferry-worker@.service "FERRY_TASKS=/srv/my tasks/lib.so" | tail -n 1)
[ "$last" = "/srv/my tasks/lib.so" ] || {
  echo "check-units: a FERRY_TASKS with a space was split"
  argv_failed=1
}
if [ $argv_failed -ne 0 ]; then
  echo "check-units: command lines: FAILED"
  exit 1
fi
echo "check-units: command lines: $argv_cases cases as expected"
[ $boot -eq 1 ] || exit 0

[ "$(id -u)" -eq 0 ] || { echo "check-units: --boot needs root" >&2; exit 2; }
command -v systemd-nspawn >/dev/null || {
  echo "check-units: --boot needs systemd-nspawn (apt-get install systemd-container)" >&2
  exit 2
}
# An overlay of / with a tmpfs on top: the container boots this OS and writes nowhere.
mkdir -p "$scratch/tmpfs" "$scratch/os" "$scratch/out"
mount -t tmpfs tmpfs "$scratch/tmpfs" && mounted+=("$scratch/tmpfs")
mkdir -p "$scratch/tmpfs/upper" "$scratch/tmpfs/work"
mount -t overlay overlay \
  -o "lowerdir=/,upperdir=$scratch/tmpfs/upper,workdir=$scratch/tmpfs/work" "$scratch/os" &&
  mounted+=("$scratch/os")
# Its own machine id, or nspawn refuses to share the journal setup with the host's.
tr -d '-' </proc/sys/kernel/random/uuid >"$scratch/os/etc/machine-id"
# A dlopen() probe and two libraries for it, as task libraries are loaded.
mkdir -p "$scratch/probe"
if command -v cc >/dev/null; then
  cat >"$scratch/probe/probe.c" <<'EOF'
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    void* h = dlopen(argv[i], RTLD_NOW | RTLD_LOCAL);
    if (h) printf("dlopen %s: ok\n", argv[i]), dlclose(h);
    else printf("dlopen %s: refused: %s\n", argv[i], dlerror());
  }
  return 0;
}
EOF
  echo 'int answer(void) { return 42; }' >"$scratch/probe/lib.c"
  cc -o "$scratch/probe/dlopen-probe" "$scratch/probe/probe.c" -ldl
  cc -shared -fPIC -o "$scratch/probe/libplain.so" "$scratch/probe/lib.c"
  cc -shared -fPIC -Wl,-z,execstack -o "$scratch/probe/libexecstack.so" "$scratch/probe/lib.c"
fi

cat >"$scratch/selftest.service" <<'EOF'
[Unit]
Description=ferry units self-test
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/selftest.sh
EOF
cat >"$scratch/selftest.sh" <<'EOF'
#!/bin/bash
exec >/out/selftest.log 2>&1
set -x
systemd-sysusers /etc/sysusers.d/ferry.conf
# Keys where the build can make them (remote workers); an empty folder before that.
remote=0
mkdir -p /etc/ferry
ferry-coordinator keygen /etc/ferry/keys && remote=1 || install -d -m 0700 /etc/ferry/keys
chown -R ferry:ferry /etc/ferry/keys
cat >/etc/ferry/coordinator.env <<'ENV'
FERRY_LISTEN=tcp://127.0.0.1:5555
FERRY_OPTIONS="-w 2 -t shm --no-progress"
FERRY_JOB="map square --range 0:100 --chunksize 10"
ENV
systemctl daemon-reload
wait_inactive() { for _ in $(seq 300); do systemctl is-active -q "$1" || return 0; sleep 0.1; done; return 1; }
expect() {  # expect WHAT VALUE WANTED
  [ "$2" = "$3" ] || echo "CHECK-FAILED: $1 is '$2', expected '$3'"
}
status() { systemctl show -p "$1" --value ferry-coordinator.service; }
# Result lines logged after a journal position (taken with mark before a start).
mark() { journalctl -n 0 --show-cursor -q | sed -n 's/^-- cursor: //p'; }
results() { journalctl -u ferry-coordinator.service --after-cursor="$1" -o cat | grep -cE '^[0-9]+$'; }
: 1. a job to completion, shared-memory local workers inside the sandbox
since=$(mark)
systemctl start ferry-coordinator.service
wait_inactive ferry-coordinator.service
systemctl show -p Result -p ExecMainStatus ferry-coordinator.service
echo "result lines: $(results "$since")"
expect "local job result" "$(status Result)" success
expect "local job result lines" "$(results "$since")" 100
: 2. a long job stopped by systemctl stop
sed -i 's/^FERRY_JOB=.*/FERRY_JOB="map sleep_ms --items 5000,5000,5000,5000"/' /etc/ferry/coordinator.env
systemctl start ferry-coordinator.service
sleep 1.5
pid=$(systemctl show -p MainPID --value ferry-coordinator.service)
echo "/dev/shm here $(stat -L -c %d:%i /dev/shm), in the unit $(nsenter -t "$pid" -m stat -L -c %d:%i /dev/shm)"
t0=$(date +%s%N)
systemctl stop ferry-coordinator.service
echo "stop took $((($(date +%s%N) - t0) / 1000000)) ms"
systemctl show -p Result -p ExecMainStatus ferry-coordinator.service
expect "stopped job exit status" "$(status ExecMainStatus)" 130
journalctl -u ferry-coordinator.service -o cat | tail -n 5
pgrep -u ferry -a && echo "CHECK-FAILED: processes left" || echo "no ferry process left"
: 3. a worker instance, FERRY_TASKS unset: ferry-worker itself is the main process, no --tasks
argv_of() { tr '\0' ' ' <"/proc/$(systemctl show -p MainPID --value "$1")/cmdline"; }
systemctl start ferry-worker@127.0.0.1.service
sleep 3
systemctl status ferry-worker@127.0.0.1.service --no-pager | sed -n '1,8p'
journalctl -u ferry-worker@127.0.0.1.service -o cat | tail -n 4
argv=$(argv_of ferry-worker@127.0.0.1.service)
echo "worker argv: $argv"
case "$argv" in
  /usr/local/bin/ferry-worker\ *) ;;
  *) echo "CHECK-FAILED: the unit's main process is not ferry-worker" ;;
esac
case "$argv" in *--tasks*) echo "CHECK-FAILED: --tasks given while FERRY_TASKS is unset" ;; esac
systemctl stop ferry-worker@127.0.0.1.service
: 3b. FERRY_TASKS set to a folder, in both units
# Until a unit is out of activating/active (deactivating), then its ActiveState.
settled() {
  local s
  for _ in $(seq 100); do
    s=$(systemctl show -p ActiveState --value "$1")
    case "$s" in activating | deactivating) sleep 0.1 ;; *) break ;; esac
  done
  echo "$s"
}
install -d /usr/local/lib/ferry/tasks
echo FERRY_TASKS=/usr/local/lib/ferry/tasks >/etc/ferry/worker.env
cp /etc/ferry/coordinator.env /etc/ferry/coordinator.env.saved
sed -i 's/^FERRY_JOB=.*/FERRY_JOB="map square --range 0:100"/' /etc/ferry/coordinator.env
echo FERRY_TASKS=/usr/local/lib/ferry/tasks >>/etc/ferry/coordinator.env
systemctl reset-failed
since=$(mark)
if ferry-worker --help 2>&1 | grep -q -- --tasks; then
  echo "this build has task libraries: both units run with --tasks on an (empty) folder"
  systemctl start ferry-worker@127.0.0.1.service
  sleep 3
  argv=$(argv_of ferry-worker@127.0.0.1.service)
  echo "worker argv: $argv"
  expect "worker with FERRY_TASKS" "$(settled ferry-worker@127.0.0.1.service)" active
  case "$argv" in
    *"--tasks /usr/local/lib/ferry/tasks"*) ;;
    *) echo "CHECK-FAILED: the worker has no --tasks FOLDER" ;;
  esac
  systemctl stop ferry-worker@127.0.0.1.service
  systemctl start ferry-coordinator.service
  wait_inactive ferry-coordinator.service
  expect "coordinator with FERRY_TASKS" "$(status Result)" success
  expect "coordinator with FERRY_TASKS, result lines" "$(results "$since")" 100
else
  echo "this build has no task libraries: both units must pass --tasks and be refused (exit 2)"
  systemctl start ferry-worker@127.0.0.1.service
  expect "worker refusing --tasks" "$(settled ferry-worker@127.0.0.1.service)" failed
  expect "worker refusing --tasks, exit status" \
    "$(systemctl show -p ExecMainStatus --value ferry-worker@127.0.0.1.service)" 2
  expect "worker refusing --tasks, restarts" \
    "$(systemctl show -p NRestarts --value ferry-worker@127.0.0.1.service)" 0
  journalctl -u ferry-worker@127.0.0.1.service --after-cursor="$since" -o cat | grep -- --tasks ||
    echo "CHECK-FAILED: the worker's usage error does not name --tasks"
  systemctl start ferry-coordinator.service
  wait_inactive ferry-coordinator.service
  expect "coordinator refusing --tasks, exit status" "$(status ExecMainStatus)" 2
  journalctl -u ferry-coordinator.service --after-cursor="$since" -o cat | grep -- --tasks ||
    echo "CHECK-FAILED: the coordinator's usage error does not name --tasks"
fi
systemctl reset-failed
rm /etc/ferry/worker.env
mv /etc/ferry/coordinator.env.saved /etc/ferry/coordinator.env
: 4. a job done by a remote worker through both units, where this build has remote workers
if [ $remote -eq 1 ]; then
  cat >/etc/ferry/coordinator.env <<'ENV'
FERRY_LISTEN=tcp://127.0.0.1:5555
FERRY_OPTIONS="-w 0 --wait-workers 1 --wait-timeout 30 --no-progress"
FERRY_JOB="map square --range 0:100"
ENV
  systemctl start ferry-worker@127.0.0.1.service
  since=$(mark)
  systemctl start ferry-coordinator.service
  wait_inactive ferry-coordinator.service
  systemctl show -p Result -p ExecMainStatus ferry-coordinator.service
  echo "result lines: $(results "$since")"
  expect "remote job result" "$(status Result)" success
  expect "remote job result lines" "$(results "$since")" 100
  journalctl -u ferry-coordinator.service -o cat | grep -E '^ferry: map' | tail -n 1
  systemctl is-active ferry-worker@127.0.0.1.service
  systemctl stop ferry-worker@127.0.0.1.service
else
  echo "no keygen in this build: remote part skipped"
fi
: 5. dlopen under the sandbox of the worker unit, the probe as its ExecStart
if [ -x /probe/dlopen-probe ]; then
  mkdir -p /etc/systemd/system/ferry-worker@probe.service.d
  printf '%s\n' '[Service]' 'ExecStart=' 'Restart=no' \
    'ExecStart=/probe/dlopen-probe /probe/libplain.so /probe/libexecstack.so' \
    >/etc/systemd/system/ferry-worker@probe.service.d/probe.conf
  systemctl daemon-reload
  since=$(mark)
  systemctl start ferry-worker@probe.service
  wait_inactive ferry-worker@probe.service
  probe=$(journalctl -u ferry-worker@probe.service --after-cursor="$since" -o cat | grep '^dlopen')
  echo "$probe"
  grep -q 'libplain.so: ok' <<<"$probe" ||
    echo "CHECK-FAILED: a plain library does not load under the worker's sandbox"
  grep -q 'libexecstack.so: refused' <<<"$probe" ||
    echo "CHECK-FAILED: a library asking for an executable stack was not refused"
else
  echo "no C compiler here: dlopen part skipped"
fi
echo SELFTEST-DONE
systemctl poweroff
EOF
chmod +x "$scratch/selftest.sh"
timeout 300 systemd-nspawn -q -D "$scratch/os" --register=no --keep-unit --link-journal=no \
  --private-network \
  --bind-ro="$root/usr/local/bin:/usr/local/bin" \
  --bind-ro="$here/ferry-coordinator.service:/etc/systemd/system/ferry-coordinator.service" \
  --bind-ro="$here/ferry-worker@.service:/etc/systemd/system/ferry-worker@.service" \
  --bind-ro="$here/ferry.sysusers.conf:/etc/sysusers.d/ferry.conf" \
  --bind-ro="$scratch/selftest.service:/etc/systemd/system/ferry-selftest.service" \
  --bind-ro="$scratch/selftest.sh:/selftest.sh" \
  --bind-ro="$scratch/probe:/probe" \
  --bind="$scratch/out:/out" \
  -b systemd.wants=ferry-selftest.service >"$scratch/boot.log" 2>&1 || true
if ! grep -q SELFTEST-DONE "$scratch/out/selftest.log" 2>/dev/null; then
  tail -n 30 "$scratch/boot.log"
  echo "check-units: the booted self-test did not finish"
  exit 1
fi
grep -v '^+' "$scratch/out/selftest.log"
! grep -q CHECK-FAILED "$scratch/out/selftest.log"
