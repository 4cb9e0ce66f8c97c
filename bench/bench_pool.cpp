// `ferry-bench pool`: ferry::Pool on each local transport (pipe, shm, zmq) against Python's
// multiprocessing.Pool and concurrent.futures.ProcessPoolExecutor on the same workload and
// worker count, measured in the same run (bench/python_pools.py, when python3 is on PATH).
//
//   submit_tasks_per_s   one future per task (square), all submitted, then all got
//   map_items_per_s      map(square) over 1 million ints, automatic chunking
//   apply_rtt_p50_us     synchronous apply(square) round trip, median
//   cpu_us_per_task      CPU time (user + system) of the coordinator process and its workers
//                        over the submit run, per task; coordinator_cpu_us_per_task: its share.
//                        CPU, unlike rates, barely moves with other load on the machine (shm
//                        workers' brief spin before sleeping is counted)
//   startup_ms.4         Pool of 4 workers: construction (spawn) -> wait_ready (all registered)
//   shm.large_arg_gb_per_s  a 256 MiB argument to a task on a local shm worker that touches
//                        every page of it: bytes / (submit -> result), median (the bytes go
//                        as a shared-memory object: PoolOptions::object_threshold)
//   shm.object_read_gb_per_s  one array put into the object store (1 GiB; 128 MiB with
//                        --quick), then 100 tasks on 2 shm workers each summing its slice
//                        of it: 100 x size / (put -> last result), median. Beside it, the
//                        copies made: segments written (object_read_segments, 1) and
//                        decodes in the workers (object_read_decodes, at most one each)
//   shm.graph_64mib_ms   a task graph's 64 MiB intermediate, producer's submit -> dependant's
//                        result (kept in the store, passed by handle: graph_64mib_kept);
//                        graph_64mib_by_value_ms: the same read in by the caller and submitted
//                        again (decode, encode, a new argument object)
//   count_primes_*       the same CPU-bound tasks on 1 and 2 workers; speedup = t(1) / t(2);
//                        baseline.raw-procs.* is the same work in plain processes (the
//                        machine's ceiling for that speedup at the time of the run)
//
// Workers are this executable (self-exec): main() calls ferry::init first.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <ranges>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "ferry/ferry.hpp"
#include "ferry/shared/proc_usage.hpp"
#include "harness.hpp"
#include "pool_workload.hpp"

namespace {

// Touches every page of its argument (a sum of every 4096th byte) and returns its size with
// that sum, so the argument must really have arrived.
std::uint64_t touch_pages(std::vector<std::uint8_t> v) {
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < v.size(); i += 4096)
    sum += v[i];
  return (static_cast<std::uint64_t>(v.size()) << 16) + sum;
}

using Words = std::vector<std::uint64_t>;
// Its slice of the array (which the process decodes once, on first use), with who read it and
// how many objects that process has decoded so far.
std::tuple<std::int32_t, std::uint64_t, std::uint64_t> sum_object_slice(ferry::ObjectRef<Words> ref,
                                                                        std::int64_t slice,
                                                                        std::int64_t slices) {
  const Words& a = ref.get();
  const auto n = static_cast<std::int64_t>(a.size());
  std::uint64_t sum = 0;
  for (auto i = n * slice / slices; i < n * (slice + 1) / slices; ++i)
    sum += a[static_cast<std::size_t>(i)];
  return {static_cast<std::int32_t>(::getpid()), ferry::object_decodes(), sum};
}

// A task graph's 64 MiB intermediate: made by one task, summed by its dependant.
Words make_words(std::int64_t n) {
  Words w(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < w.size(); ++i)
    w[i] = i * 2654435761u;
  return w;
}
std::uint64_t sum_words(const Words& w) {
  std::uint64_t sum = 0;
  for (auto x : w)
    sum += x;
  return sum;
}

}  // namespace

FERRY_TASK(touch_pages);
FERRY_TASK(sum_object_slice);
FERRY_TASK(make_words);
FERRY_TASK(sum_words);

namespace ferry::bench {

namespace {

using namespace std::chrono_literals;

constexpr unsigned kWorkers = 2;         // the machine's cores; Python gets the same
constexpr unsigned kStartupWorkers = 4;  // as in the start-up target

struct Sizes {
  std::int64_t submit_tasks;
  std::int64_t map_items;
  int apply_iters;
  int reps;  // medians of this many runs (submit, apply)
  int map_reps;
  int startup_reps;
  std::int64_t primes_n;  // count_primes(n): tens of ms per task in C++
  int primes_tasks;
  int primes_reps;
  // Python is 30-100x slower per task: fewer tasks keep its side to seconds. Rates are per
  // second, so the counts need not match; the task and the worker count do.
  std::int64_t py_tasks;
  std::int64_t py_futures_tasks;
  int py_apply_iters;
  std::int64_t py_primes_n;
};

Sizes sizes(bool quick) {
  if (quick)
    return {30'000, 1'000'000, 5'000, 3, 3, 5, 200'000, 8, 1, 10'000, 5'000, 1'000, 20'000};
  return {200'000, 1'000'000, 10'000, 5, 5, 11, 400'000, 8, 3, 50'000, 20'000, 5'000, 60'000};
}

Pool make_pool(Transport t, unsigned workers) {
  PoolOptions o;
  o.workers = workers;
  o.transport = t;
  return Pool(std::move(o));
}

void require_ready(Pool& pool, Transport t) {
  if (!pool.wait_ready(30s)) {
    throw std::runtime_error("pool on " + std::string(transport_name(t)) + " did not become ready");
  }
}

double self_cpu_s() {
  const auto u = read_proc_usage();
  return u ? u->cpu_s : 0.0;
}

// CPU seconds of this process (the coordinator) and the pool's live local workers.
double pool_cpu_s(const Pool& pool) {
  double s = self_cpu_s();
  for (const auto& w : pool.stats().workers) {
    if (!w.alive || w.remote || w.pid <= 0) continue;
    if (const auto u = read_proc_usage(w.pid)) s += u->cpu_s;
  }
  return s;
}

double map_rate(Pool& pool, std::int64_t n) {
  const auto t0 = Clock::now();
  auto v = pool.map(builtin::square, std::views::iota(std::int64_t{0}, n));
  const double secs = seconds_since(t0);
  if (static_cast<std::int64_t>(v.size()) != n || v.back() != (n - 1) * (n - 1)) {
    throw std::runtime_error("map: wrong results");
  }
  return static_cast<double>(n) / secs;
}

double apply_p50_us(Pool& pool, int iters) {
  return median(apply_rtt_us(pool, iters, "apply"));
}

double startup_ms(Transport t) {
  const auto t0 = Clock::now();
  auto pool = make_pool(t, kStartupWorkers);
  require_ready(pool, t);
  return seconds_since(t0) * 1e3;  // the shutdown (destructor) is not part of start-up
}

double primes_secs(Transport t, unsigned workers, const Sizes& s) {
  auto pool = make_pool(t, workers);
  require_ready(pool, t);
  const std::vector<std::int64_t> ns(static_cast<std::size_t>(s.primes_tasks), s.primes_n);
  std::vector<double> secs;
  for (int rep = 0; rep < s.primes_reps; ++rep) {
    const auto t0 = Clock::now();
    (void)pool.map(builtin::count_primes, ns, 1);  // one task each: the workers share them
    secs.push_back(seconds_since(t0));
  }
  return median(std::move(secs));
}

// The machine's own ceiling for the scaling figure: the same count_primes tasks in plain
// processes, no ferry (one process runs them all; then two run half each, at once). On a
// shared machine the two may not get two cores, and no pool can beat this.
double raw_primes_secs(const Config& cfg, int procs, const Sizes& s) {
  std::vector<double> secs;
  for (int rep = 0; rep < s.primes_reps; ++rep) {
    const auto t0 = Clock::now();
    std::vector<Peer> peers;
    for (int p = 0; p < procs; ++p) {
      peers.push_back(spawn_peer(
          cfg, {"primes", std::to_string(s.primes_n), std::to_string(s.primes_tasks / procs)}));
    }
    for (auto& p : peers) {
      if (p.wait() != 0) throw std::runtime_error("count_primes peer failed");
    }
    secs.push_back(seconds_since(t0));
  }
  return median(std::move(secs));
}

void bench_raw_processes(const Config& cfg, Report& report, const Sizes& s) {
  const double t1 = raw_primes_secs(cfg, 1, s);
  const double t2 = raw_primes_secs(cfg, static_cast<int>(kWorkers), s);
  report.add("baseline.raw-procs.count_primes_ms_1w", t1 * 1e3, "ms");
  report.add("baseline.raw-procs.count_primes_ms_2w", t2 * 1e3, "ms");
  report.add("baseline.raw-procs.count_primes_speedup_2w", t1 / t2, "x");
}

void bench_transport(Report& report, Transport t, const Sizes& s) {
  const std::string p = "pool." + std::string(transport_name(t)) + ".";
  {
    auto pool = make_pool(t, kWorkers);
    require_ready(pool, t);
    (void)pool.map(builtin::square, std::views::iota(std::int64_t{0}, std::int64_t{10'000}));
    std::vector<double> submit, map, apply;
    std::vector<double> cpu, coordinator_cpu;
    for (int rep = 0; rep < s.reps; ++rep) {
      const double all0 = pool_cpu_s(pool), self0 = self_cpu_s();
      submit.push_back(submit_rate(pool, s.submit_tasks, "submit"));
      const double per_task = 1e6 / static_cast<double>(s.submit_tasks);
      coordinator_cpu.push_back((self_cpu_s() - self0) * per_task);
      cpu.push_back((pool_cpu_s(pool) - all0) * per_task);
    }
    report.add(p + "submit_tasks_per_s", median(submit), "tasks/s");
    report.add(p + "cpu_us_per_task", median(cpu), "us");
    report.add(p + "coordinator_cpu_us_per_task", median(coordinator_cpu), "us");
    for (int rep = 0; rep < s.map_reps; ++rep)
      map.push_back(map_rate(pool, s.map_items));
    report.add(p + "map_items_per_s", median(map), "items/s");
    for (int rep = 0; rep < s.reps; ++rep)
      apply.push_back(apply_p50_us(pool, s.apply_iters));
    report.add(p + "apply_rtt_p50_us", median(apply), "us");
  }
  std::vector<double> up;
  for (int rep = 0; rep < s.startup_reps; ++rep)
    up.push_back(startup_ms(t));
  const double up_ms = median(up);
  report.add(p + "startup_ms." + std::to_string(kStartupWorkers), up_ms, "ms");
  // The design's transport-free name is the default transport's figure.
  if (t == Transport::shm) {
    report.add("pool.startup_ms." + std::to_string(kStartupWorkers), up_ms, "ms");
  }
  const double t1 = primes_secs(t, 1, s);
  const double t2 = primes_secs(t, kWorkers, s);
  report.add(p + "count_primes_ms_1w", t1 * 1e3, "ms");
  report.add(p + "count_primes_ms_2w", t2 * 1e3, "ms");
  report.add(p + "count_primes_speedup_2w", t1 / t2, "x");
}

// A 256 MiB argument to a task on a local worker: the caller's copy into the task and its
// encoding, the write into a shared-memory object, the worker's mapping and decoding, the
// task touching every page, the small result back.
void bench_large_argument(Report& report, const Sizes& s) {
  constexpr std::size_t kBytes = std::size_t{256} << 20;
  auto pool = make_pool(Transport::shm, 1);
  require_ready(pool, Transport::shm);
  std::vector<std::uint8_t> data(kBytes);
  for (std::size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<std::uint8_t>(i * 131 + (i >> 12));
  const std::uint64_t expected = touch_pages(data);
  std::vector<double> rates;
  for (int rep = 0; rep < s.reps; ++rep) {
    auto arg = data;  // moved into the task: the copy is not part of the round trip
    const auto t0 = Clock::now();
    const auto got = pool.apply(touch_pages, std::move(arg));
    const double secs = seconds_since(t0);
    if (got != expected) throw std::runtime_error("large argument: wrong result");
    rates.push_back(static_cast<double>(kBytes) / secs / 1e9);
  }
  report.add("pool.shm.large_arg_gb_per_s", median(rates), "GB/s");
}

// One array put into the object store, read by 100 tasks: what the store saves is the 100
// copies (and decodes) a plain argument would cost. Timed from the put (encode + one write
// into /dev/shm) to the last result; each rep has a fresh pool, started before the clock.
void bench_object_read(Report& report, const Sizes& s, bool quick) {
  const std::size_t bytes = quick ? std::size_t{128} << 20 : std::size_t{1} << 30;
  constexpr int kTasks = 100;
  Words data(bytes / sizeof(std::uint64_t));
  for (std::size_t i = 0; i < data.size(); ++i)
    data[i] = i * 2654435761u;
  std::uint64_t expected = 0;
  for (auto x : data)
    expected += x;
  std::vector<double> rates;
  double segments = 0, decodes = 0, written = 0;
  for (int rep = 0; rep < s.reps; ++rep) {
    auto pool = make_pool(Transport::shm, kWorkers);
    require_ready(pool, Transport::shm);
    const auto t0 = Clock::now();
    auto ref = pool.put(data);
    std::vector<Future<std::tuple<std::int32_t, std::uint64_t, std::uint64_t>>> fs;
    fs.reserve(kTasks);
    for (int i = 0; i < kTasks; ++i)
      fs.push_back(pool.submit(sum_object_slice, ref, std::int64_t{i}, std::int64_t{kTasks}));
    std::uint64_t sum = 0;
    std::map<std::int32_t, std::uint64_t> decodes_by_pid;
    for (auto& f : fs) {
      const auto [pid, n, part] = f.get();
      sum += part;
      decodes_by_pid[pid] = std::max(decodes_by_pid[pid], n);
    }
    const double secs = seconds_since(t0);
    if (sum != expected) throw std::runtime_error("object read: wrong result");
    rates.push_back(static_cast<double>(kTasks) * static_cast<double>(bytes) / secs / 1e9);
    const auto st = pool.stats();
    segments = static_cast<double>(st.objects_put + st.arg_objects);
    written = static_cast<double>(st.object_bytes_put);
    decodes = 0;
    for (const auto& [pid, n] : decodes_by_pid)
      decodes += static_cast<double>(n);
  }
  report.add("pool.shm.object_read_gb_per_s", median(rates), "GB/s");
  report.add("pool.shm.object_read_segments", segments, "segments");
  report.add("pool.shm.object_read_bytes_written_gib", written / (1u << 30), "GiB");
  report.add("pool.shm.object_read_decodes", decodes, "decodes");
}

// A 64 MiB intermediate of a task graph, from the producing task's submit to its dependant's
// result: handed on by handle (pool.submit(sum_words, future): the result object stays in the
// store), against the caller reading it in and submitting it again (get, decode, encode, a
// new argument object: what the graph itself did before results were kept).
void bench_graph_intermediate(Report& report, const Sizes& s) {
  constexpr std::int64_t kWords = std::int64_t{8} << 20;  // 64 MiB
  auto pool = make_pool(Transport::shm, kWorkers);
  require_ready(pool, Transport::shm);
  std::vector<double> by_handle, by_value;
  double kept = 0;
  std::uint64_t expected = 0;
  for (int rep = 0; rep < s.reps; ++rep) {
    const auto before = pool.stats().results_kept;
    auto t0 = Clock::now();
    auto f = pool.submit(sum_words, pool.submit(make_words, kWords));
    const std::uint64_t a = f.get();
    by_handle.push_back(seconds_since(t0) * 1e3);
    kept = static_cast<double>(pool.stats().results_kept - before);
    t0 = Clock::now();
    const std::uint64_t b = pool.apply(sum_words, pool.submit(make_words, kWords).get());
    by_value.push_back(seconds_since(t0) * 1e3);
    if (a != b || (expected != 0 && a != expected)) throw std::runtime_error("graph: wrong sum");
    expected = a;
  }
  report.add("pool.shm.graph_64mib_ms", median(by_handle), "ms");
  report.add("pool.shm.graph_64mib_by_value_ms", median(by_value), "ms");
  report.add("pool.shm.graph_64mib_kept", kept, "objects");
}

// ---- Python's pools (bench/python_pools.py) ------------------------------------------------

void bench_python(const Config& cfg, Report& report, const Sizes& s) {
  const std::string python = find_on_path("python3");
  if (python.empty()) {
    std::fprintf(stderr,
                 "ferry-bench: python3 is not on PATH: Python's pools (peer.python_mp.*, "
                 "peer.python_futures.*) are not measured\n");
    return;
  }
  const std::string script = find_bench_script(cfg, "python_pools.py");
  if (script.empty()) {
    std::fprintf(stderr, "ferry-bench: python_pools.py not found: Python's pools skipped\n");
    return;
  }
  std::vector<std::string> args{"--workers",         std::to_string(kWorkers),
                                "--startup-workers", std::to_string(kStartupWorkers),
                                "--tasks",           std::to_string(s.py_tasks),
                                "--futures-tasks",   std::to_string(s.py_futures_tasks),
                                "--items",           std::to_string(s.map_items),
                                "--apply-iters",     std::to_string(s.py_apply_iters),
                                "--primes-n",        std::to_string(s.py_primes_n),
                                "--primes-tasks",    std::to_string(s.primes_tasks)};
  if (cfg.quick) args.emplace_back("--quick");
  run_python_figures(python, script, args, cfg.quick ? 120s : 1200s, report);
}

}  // namespace

void run_pool(const Config& cfg, Report& report) {
  const auto s = sizes(cfg.quick);
  for (auto t : {Transport::pipe, Transport::shm, Transport::zmq})
    bench_transport(report, t, s);
  bench_large_argument(report, s);
  bench_object_read(report, s, cfg.quick);
  bench_graph_intermediate(report, s);
  bench_raw_processes(cfg, report, s);
  bench_python(cfg, report, s);
}

int primes_peer(const std::vector<std::string>& args) {
  const std::int64_t n = std::stoll(args.at(1));
  const int tasks = std::stoi(args.at(2));
  std::int64_t sum = 0;
  for (int i = 0; i < tasks; ++i)
    sum += builtin::count_primes(n);
  return sum > 0 ? 0 : 1;
}

void print_pool_targets(const Report& r) {
  if (std::isnan(r.get("pool.shm.submit_tasks_per_s"))) return;
  const auto py = [&](const char* m) { return r.get(std::string("peer.python_mp.") + m); };
  print_targets(
      "pool target (issue)",
      {
          {"shm submit >= 1,000,000 tasks/s", r.get("pool.shm.submit_tasks_per_s"), 1e6, true,
           "tasks/s"},
          {"shm submit >= 35x Pool.apply_async",
           r.get("pool.shm.submit_tasks_per_s") / py("submit_tasks_per_s"), 35, true, "x"},
          // Issue 14: map and start-up no worse than when it was filed (8.8x, 5.9 ms).
          {"shm map >= 8.8x Pool.map", r.get("pool.shm.map_items_per_s") / py("map_items_per_s"),
           8.8, true, "x"},
          {"shm apply p50 <= 5 us", r.get("pool.shm.apply_rtt_p50_us"), 5, false, "us"},
          {"4 workers ready <= 5.9 ms", r.get("pool.startup_ms.4"), 5.9, false, "ms"},
          {"shm 256 MiB argument >= 5 GB/s", r.get("pool.shm.large_arg_gb_per_s"), 5, true, "GB/s"},
          // Issue 16: an object put once is not copied per task (one segment, a decode per
          // worker at most).
          {"object read by 100 tasks: segments <= 1", r.get("pool.shm.object_read_segments"), 1,
           false, ""},
          {"object read by 100 tasks: decodes <= 2", r.get("pool.shm.object_read_decodes"),
           kWorkers, false, ""},
          {"count_primes 2w >= 1.9x 1w", r.get("pool.shm.count_primes_speedup_2w"), 1.9, true, "x"},
          {"  (plain processes, same work)", r.get("baseline.raw-procs.count_primes_speedup_2w"),
           1.9, true, "x"},
      });
}

}  // namespace ferry::bench
