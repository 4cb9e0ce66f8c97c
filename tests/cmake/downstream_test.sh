#!/usr/bin/env bash
# Installs the build into a fresh prefix, builds examples/downstream against it with
# find_package(ferry) and runs what its README promises:
#   a) wordcount local LIB: a pool whose local workers load the task library;
#   a2) wordcount count N: map_reduce folding on the coordinator and in the workers agree;
#   a3) wordcount compose: a task graph, then, wait_any/wait_all, ferry::with, pool.put and
#       an actor;
#   b) wordcount coordinate LIB KEYS with two remote workers over loopback TCP with CURVE
#      keys: stock ferry-worker --tasks LIB, and wordcount --ferry-worker --tasks LIB;
#   c) wordcount cli ...: the command line embedded in the program (run_cli);
#   d) ferry-coordinator --tasks LIB map word_stats --stdin --input json --json: a struct
#      argument and a struct result through the command line.
# Usage: downstream_test.sh BUILD_DIR SOURCE_DIR WORK_DIR
set -euo pipefail
build=$1 src=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
fail() {
  echo "downstream example FAILED: $*" >&2
  exit 1
}

cmake --install "$build" --prefix "$prefix" >/dev/null
for f in include/ferry/shared/task_library.hpp lib/cmake/ferry/ferryConfig.cmake \
         lib/cmake/ferry/FerryTaskLibrary.cmake bin/ferry-coordinator bin/ferry-worker; do
  [ -e "$prefix/$f" ] || fail "install is missing $f"
done
cmake -S "$src/examples/downstream" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$work/build" >"$work/build.log" 2>&1 || { cat "$work/build.log"; fail "build"; }
# A user's -Wall -Wextra build sees no warning from ferry's headers (or the example's own).
if grep -n "warning:" "$work/build.log"; then fail "warnings in a -Wall -Wextra build"; fi
lib=$work/build/libwordstats.so
prog=$work/build/wordcount
[ -f "$lib" ] || fail "no libwordstats.so"

# a) local pool
out=$(timeout 60 "$prog" local "$lib") || fail "wordcount local: $out"
[[ $out == *"local ok"* ]] || fail "wordcount local said: $out"
echo "a) local pool over the task library: ok"
out=$(timeout 120 "$prog" count 2000) || fail "wordcount count: $out"
[[ $out == *"count ok"* ]] || fail "wordcount count said: $out"
[[ $out == *"folded in the workers:"*" 32 results shipped back"* ]] ||
  fail "wordcount count did not fold in the workers: $out"
echo "a2) map_reduce folding in the workers (FERRY_COMBINE) agrees with the coordinator's: ok"
out=$(timeout 120 "$prog" compose) || fail "wordcount compose: $out"
[[ $out == *"compose ok"* ]] || fail "wordcount compose said: $out"
[[ $out == *"large intermediate: kept in the store"* ]] ||
  fail "wordcount compose did not keep its large intermediate in the store: $out"
echo "a3) futures that compose, a task graph, the object store and an actor: ok"

# b) remote workers with CURVE keys
keys=$work/keys
"$prefix/bin/ferry-coordinator" keygen "$keys" >/dev/null
mkfifo "$work/coordinator.out"
timeout 90 "$prog" coordinate "$lib" "$keys" >"$work/coordinator.out" 2>"$work/coordinator.err" &
coordinator=$!
pids+=("$coordinator")
exec 3<"$work/coordinator.out"
read -r -t 30 first <&3 || fail "the coordinator did not say where it listens"
endpoint=${first#listening on }
[[ $endpoint == tcp://127.0.0.1:* ]] || fail "unexpected first line: $first"
timeout 90 "$prefix/bin/ferry-worker" --tasks "$lib" --connect "$endpoint" --keys "$keys" \
  --name stock 2>"$work/stock.err" &
stock=$!
pids+=("$stock")
timeout 90 "$prog" --ferry-worker --tasks "$lib" --connect "$endpoint" --keys "$keys" \
  --name self 2>"$work/self.err" &
self=$!
pids+=("$self")
rest=$(cat <&3)
exec 3<&-
wait "$coordinator" || fail "wordcount coordinate: $(cat "$work/coordinator.err") $rest"
echo "$rest"
[[ $rest == *"remote ok"* ]] || fail "no 'remote ok'"
self_tasks=$(sed -n 's/^worker self: \([0-9]*\) tasks$/\1/p' <<<"$rest")
stock_tasks=$(sed -n 's/^worker stock: \([0-9]*\) tasks$/\1/p' <<<"$rest")
# shout (40 tasks) runs only on the copy of the program; word_stats (40) on either.
[ "${self_tasks:-0}" -ge 40 ] || fail "the program's worker ran ${self_tasks:-0} tasks (< 40)"
[ $((self_tasks + stock_tasks)) -eq 80 ] || fail "tasks: self $self_tasks + stock $stock_tasks != 80"
wait "$stock" || fail "ferry-worker did not exit 0: $(cat "$work/stock.err")"
wait "$self" || fail "wordcount --ferry-worker did not exit 0: $(cat "$work/self.err")"
echo "b) remote workers with CURVE keys (stock ferry-worker --tasks, wordcount --ferry-worker): ok"

# c) the command line embedded in the program: its own task, and the library's
cli=$(timeout 60 "$prog" cli -w 2 --no-progress --tasks "$lib" map shout --items hi,there) ||
  fail "wordcount cli map shout: $cli"
[ "$cli" = $'HI\nTHERE' ] || fail "wordcount cli map shout printed: $cli"
tasks=$(timeout 60 "$prog" cli --tasks "$lib" tasks) || fail "wordcount cli tasks: $tasks"
[[ $tasks == *"shout"*"(std::string) -> std::string"* ]] || fail "tasks lacks shout: $tasks"
[[ $tasks == *"word_stats"*"(wordstats::Text) -> wordstats::Stats"* ]] ||
  fail "tasks lacks word_stats: $tasks"
echo "c) the embedded command line (run_cli) over the program's and the library's tasks: ok"

# d) the command line, JSON in and out
json=$(printf '%s\n' '{"title": "one", "body": "a bb ccc"}' '{"title": "two", "body": "dddd"}' |
  timeout 60 "$prefix/bin/ferry-coordinator" -w 2 --no-progress --tasks "$lib" --json \
    map word_stats --stdin --input json) || fail "ferry-coordinator map --input json: $json"
echo "$json"
python3 - "$json" <<'PY' || fail "unexpected JSON results"
import json, sys
rows = [json.loads(l) for l in sys.argv[1].splitlines() if l.strip()]
values = [r["value"] for r in rows if "value" in r]
assert values == [{"title": "one", "words": 3, "longest": "ccc"},
                  {"title": "two", "words": 1, "longest": "dddd"}], values
PY
echo "d) ferry-coordinator --tasks LIB map word_stats --stdin --input json --json: ok"

rm -rf "$work"
echo "downstream example: ok"
