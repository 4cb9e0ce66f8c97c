#!/usr/bin/env bash
# Checks the systemd units against a build of ferry, without touching this machine's systemd:
#
#   deploy/systemd/check-units.sh [BUILD_DIR]           # verify + offline security score
#   sudo deploy/systemd/check-units.sh --boot [BUILD_DIR]
#
# 1. `systemd-analyze verify` on the units (the executables installed into a scratch root
#    under /usr/local/bin, as the units expect); any message is a failure.
# 2. `systemd-analyze security --offline`: the exposure score of each unit's sandboxing.
# 3. --boot (root, systemd-container): boots this machine's own OS in a container
#    (systemd-nspawn on a throw-away overlay of /, private network) with the units and the
#    executables bound in, then runs ferry-coordinator.service for real: a job to completion
#    with shared-memory local workers under the sandbox, a long job stopped with
#    `systemctl stop` (expect exit 130, fast, no process left), the unit's /dev/shm being the
#    machine's; starts ferry-worker@127.0.0.1.service; and, where the build has remote workers
#    (keygen), runs a job with no local workers that ferry-worker@127.0.0.1 does, with keys.
#    The container's log is printed.
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
: 3. a worker instance
systemctl start ferry-worker@127.0.0.1.service
sleep 3
systemctl status ferry-worker@127.0.0.1.service --no-pager | sed -n '1,8p'
journalctl -u ferry-worker@127.0.0.1.service -o cat | tail -n 4
systemctl stop ferry-worker@127.0.0.1.service
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
  --bind="$scratch/out:/out" \
  -b systemd.wants=ferry-selftest.service >"$scratch/boot.log" 2>&1 || true
if ! grep -q SELFTEST-DONE "$scratch/out/selftest.log" 2>/dev/null; then
  tail -n 30 "$scratch/boot.log"
  echo "check-units: the booted self-test did not finish"
  exit 1
fi
grep -v '^+' "$scratch/out/selftest.log"
! grep -q CHECK-FAILED "$scratch/out/selftest.log"
