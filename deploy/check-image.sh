#!/usr/bin/env bash
# Builds deploy/Containerfile with buildah and runs the image, on a machine that has no
# container engine and cannot pull base images: debian:12 and debian:12-slim are made locally
# with debootstrap from Debian's own archive (as the official images are), then
#
#   1. buildah bud (chroot isolation, vfs storage: no daemon, no overlay or user namespaces)
#   2. in the image: the user is 10001:10001 (ferry), every shared library resolves, and
#      `ferry-coordinator -w 2 map square --range 0:10` through the image's entrypoint works
#   3. SIGTERM to dumb-init reaches the coordinator alone, which cancels and exits 130
#
#   sudo deploy/check-image.sh           # about 10 minutes on 2 cores; JOBS=2 by default
#   sudo deploy/check-image.sh --no-build   # only the checks, on the image built before
#
# Needs root and Debian's buildah and debootstrap packages. Leaves the images in buildah's
# vfs storage (buildah --storage-driver vfs images); removes its containers and scratch files.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
jobs=${JOBS:-2}
build=1
[ "${1:-}" != "--no-build" ] || build=0
b=(buildah --storage-driver vfs)
[ "$(id -u)" -eq 0 ] || { echo "check-image: needs root" >&2; exit 2; }
for t in buildah debootstrap; do
  command -v $t >/dev/null || { echo "check-image: $t not found (apt-get install $t)" >&2; exit 2; }
done
scratch=$(mktemp -d /tmp/ferry-check-image.XXXXXX)
ctr=""
# shellcheck disable=SC2317 # reached through the EXIT trap
cleanup() {
  [ -z "$ctr" ] || "${b[@]}" rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$scratch"
}
trap cleanup EXIT

if [ $build -eq 1 ] && ! "${b[@]}" inspect --type image docker.io/library/debian:12 >/dev/null 2>&1; then
  echo "check-image: making debian:12 with debootstrap"
  debootstrap --variant=minbase bookworm "$scratch/rootfs" http://deb.debian.org/debian \
    >"$scratch/debootstrap.log"
  chroot "$scratch/rootfs" apt-get clean
  rm -rf "$scratch/rootfs/var/lib/apt/lists/"*
  printf '%s\n' "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main" \
    >"$scratch/rootfs/etc/apt/sources.list"
  base=$("${b[@]}" from scratch)
  cp -a "$scratch/rootfs/." "$("${b[@]}" mount "$base")/"
  "${b[@]}" config --cmd /bin/bash "$base"
  "${b[@]}" commit -q "$base" docker.io/library/debian:12 >/dev/null
  "${b[@]}" tag docker.io/library/debian:12 docker.io/library/debian:12-slim
  "${b[@]}" rm "$base" >/dev/null
fi

if [ $build -eq 1 ]; then
  echo "check-image: building (JOBS=$jobs)"
  "${b[@]}" bud --pull=never --isolation chroot --build-arg "JOBS=$jobs" \
    -f "$top/deploy/Containerfile" -t localhost/ferry:0.1.0 "$top" >"$scratch/build.log" 2>&1 || {
    tail -n 30 "$scratch/build.log"
    echo "check-image: build FAILED"
    exit 1
  }
fi
"${b[@]}" images localhost/ferry:0.1.0

ctr=$("${b[@]}" from --pull=never localhost/ferry:0.1.0)
run() { "${b[@]}" run --isolation chroot "$ctr" -- "$@"; }
entrypoint=$("${b[@]}" inspect --format '{{.OCIv1.Config.Entrypoint}}' "$ctr" | tr -d '[]')
echo "entrypoint: $entrypoint; user: $(run id)"
missing=$(run sh -c 'ldd /usr/local/bin/ferry-* | grep -c "not found" || true')
echo "shared libraries not found: $missing"
# shellcheck disable=SC2086 # the entrypoint's words
run $entrypoint ferry-coordinator -w 2 map square --range 0:10 | tr '\n' ' '
echo

# shellcheck disable=SC2086
run $entrypoint ferry-coordinator -w 2 map sleep_ms --items 4000,4000,4000,4000 \
  >"$scratch/term.out" 2>&1 &
runner=$!
init=""
for _ in $(seq 100); do
  init=$(pgrep -f "^/usr/bin/dumb-init --single-child -- ferry-coordinator" || true)
  [ -n "$init" ] && pgrep -P "$init" >/dev/null && break
  sleep 0.1
done
sleep 1  # the job is under way
kill -TERM "$init"
rc=0
wait "$runner" || rc=$?
grep -h "interrupted" "$scratch/term.out" || true
left=$(pgrep -f "ferry-coordinator -w 2 map sleep_ms" || true)
echo "SIGTERM to dumb-init: exit status $rc (130 expected), processes left: ${left:-none}"
[ "$missing" = 0 ] && [ "$rc" = 130 ] && [ -z "$left" ]
