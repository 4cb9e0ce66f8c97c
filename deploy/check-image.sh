#!/usr/bin/env bash
# Builds deploy/Containerfile with buildah and runs the image, on a machine that has no
# container engine and cannot pull base images: debian:12 and debian:12-slim are made locally
# with debootstrap from Debian's own archive (as the official images are), then
#
#   1. buildah bud (chroot isolation, vfs storage: no daemon, no overlay or user namespaces),
#      with --layers, so the build stage tagged ferry-build:0.1.0 (--target build) reuses it
#   2. in the image: the user is 10001:10001 (ferry), every shared library resolves, and
#      `ferry-coordinator -w 2 map square --range 0:10` through the image's entrypoint works
#   3. SIGTERM to dumb-init reaches the coordinator alone, which cancels and exits 130
#   4. the task library folder /usr/local/lib/ferry/tasks is there, root's, read-only to the
#      ferry user; deploy/Containerfile.tasks builds a small task project (made here) on top:
#      its library lands in that folder and resolves its shared libraries, and where this
#      ferry has task libraries (ferry-worker --help names --tasks), `ferry-coordinator
#      --tasks /usr/local/lib/ferry/tasks map cube --items 2,3` prints 8 and 27
#
#   sudo deploy/check-image.sh           # about 15 minutes on 2 cores; JOBS=2 by default
#   sudo deploy/check-image.sh --no-build   # only the checks, on the images built before
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
tctr=""
# shellcheck disable=SC2317 # reached through the EXIT trap
cleanup() {
  [ -z "$ctr" ] || "${b[@]}" rm "$ctr" >/dev/null 2>&1 || true
  [ -z "$tctr" ] || "${b[@]}" rm "$tctr" >/dev/null 2>&1 || true
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

bud() {  # bud LOG ARGS...: one buildah build, its log shown only when it fails
  local log=$scratch/$1
  shift
  "${b[@]}" bud --pull=never --isolation chroot --layers --build-arg "JOBS=$jobs" "$@" \
    >"$log" 2>&1 || {
    tail -n 30 "$log"
    echo "check-image: build FAILED ($*)"
    exit 1
  }
}
if [ $build -eq 1 ]; then
  echo "check-image: building (JOBS=$jobs)"
  bud build.log -f "$top/deploy/Containerfile" -t localhost/ferry:0.1.0 "$top"
  # The build stage, for task libraries; --layers makes this a lookup of the layers above.
  bud build-stage.log --target build -f "$top/deploy/Containerfile" \
    -t localhost/ferry-build:0.1.0 "$top"
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

# 4. The task library folder, and an image built FROM this one with a task library in it.
folder=$(run stat -c '%U:%G %a' /usr/local/lib/ferry/tasks || echo missing)
writable=$(run sh -c 'test -w /usr/local/lib/ferry/tasks && echo yes || echo no')
echo "task folder: $folder, writable by the ferry user: $writable"
mkdir -p "$scratch/tasks"
# A task project as a user writes one; before ferry_add_task_library exists, a plain shared
# library of the same source stands in (it checks the image plumbing, not the loading).
cat >"$scratch/tasks/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.25)
project(check_tasks LANGUAGES CXX)
set(CMAKE_CXX_STANDARD 20)
find_package(ferry REQUIRED)
if(COMMAND ferry_add_task_library)
  ferry_add_task_library(check_tasks SOURCES tasks.cpp)
else()
  add_library(check_tasks SHARED tasks.cpp)
  target_link_libraries(check_tasks PRIVATE ferry::ferry)
endif()
EOF
cat >"$scratch/tasks/tasks.cpp" <<'EOF'
#include <ferry/ferry.hpp>
#include <cstdint>
std::int64_t cube(std::int64_t x) { return x * x * x; }
FERRY_TASK(cube);
EOF
if [ $build -eq 1 ]; then
  bud tasks-build.log --build-arg FERRY_BUILD=localhost/ferry-build:0.1.0 \
    --build-arg FERRY_IMAGE=localhost/ferry:0.1.0 -f "$top/deploy/Containerfile.tasks" \
    -t localhost/ferry-check-tasks:0.1.0 "$scratch/tasks"
fi
tctr=$("${b[@]}" from --pull=never localhost/ferry-check-tasks:0.1.0)
trun() { "${b[@]}" run --isolation chroot "$tctr" -- "$@"; }
libs=$(trun sh -c 'ls /usr/local/lib/ferry/tasks')
lib_missing=$(trun sh -c 'ldd /usr/local/lib/ferry/tasks/*.so | grep -c "not found" || true')
echo "tasks image: in the folder: ${libs:-nothing}; shared libraries not found: $lib_missing"
cube=skipped
if trun ferry-worker --help 2>&1 | grep -q -- --tasks; then
  # shellcheck disable=SC2086 # the entrypoint's words
  cube=$(trun $entrypoint ferry-coordinator --tasks /usr/local/lib/ferry/tasks -w 1 \
    map cube --items 2,3 | tr '\n' ' ')
  echo "map cube --items 2,3 with --tasks: $cube"
else
  echo "this ferry has no task libraries (no --tasks): the library is not loaded here"
fi
"${b[@]}" rm "$tctr" >/dev/null
tctr=""

[ "$missing" = 0 ] && [ "$rc" = 130 ] && [ -z "$left" ] &&
  [ "$folder" = "root:root 755" ] && [ "$writable" = no ] &&
  [[ "$libs" == *check_tasks*.so ]] && [ "$lib_missing" = 0 ] &&
  { [ "$cube" = skipped ] || [ "$cube" = "8 27 " ]; }
