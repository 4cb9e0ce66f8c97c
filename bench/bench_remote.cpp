// `ferry-bench remote`: a Pool with no local workers listening on tcp://127.0.0.1:0 and two
// ferry-worker processes joined with --connect (1 slot each), with and without CURVE; raw
// libzmq REQ/REP over the same loopback and Dask's LocalCluster (bench/python_dask.py, when
// `import distributed` works) on the same workload, measured in the same run.
//
//   submit_tasks_per_s      one future per task (square), all submitted, then all got
//   apply_rtt_p50_us, _p99  synchronous apply(square) round trip
//   detect_ms               SIGSTOP one of the two workers while tasks run: the time until the
//                           pool declares it lost and re-queues its tasks (heartbeat timeout
//                           500 ms); detect_timeout_ratio is that over the timeout
//   object_served_per_host  a 64 MiB ObjectRef (16 MiB with --quick) read by both workers
//                           (copies of this program started with --ferry-worker): the objects
//                           the coordinator sent (PoolStats::objects_served), and
//   object_read_ms          the time from put to the last worker's read; the same with
//                           FERRY_HOST_OBJECTS=0 as object_served_private, object_read_private_ms
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ferry/ferry.hpp"
#include "ferry/ipc/curve.hpp"
#include "ferry/shared/session.hpp"
#include "harness.hpp"
#include "pool_workload.hpp"

namespace {
// Which process read the object (ferry-bench's own task: its remote workers are copies of it).
std::int32_t read_object(ferry::ObjectRef<std::vector<std::uint64_t>> ref) {
  (void)ref.get();
  return static_cast<std::int32_t>(::getpid());
}
}  // namespace

FERRY_TASK(read_object);

namespace ferry::bench {

namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr unsigned kWorkers = 2;       // the machine's cores; Dask gets the same
constexpr std::size_t kRawBytes = 64;  // about an apply(square) frame's size on the wire
constexpr auto kHeartbeatInterval = 100ms;
constexpr auto kHeartbeatTimeout = 500ms;

struct Sizes {
  std::int64_t submit_tasks;
  int apply_iters;
  int reps;  // medians of this many runs
  int detect_reps;
  // Dask runs ~1,000 tasks/s: fewer tasks keep its side to seconds (rates are per second).
  std::int64_t dask_tasks;
  int dask_apply_iters;
  int dask_reps;
};

Sizes sizes(bool quick) {
  if (quick) return {20'000, 2'000, 3, 1, 500, 100, 1};
  return {200'000, 10'000, 5, 3, 5'000, 1'000, 3};
}

// Installed: ferry-worker sits beside ferry-bench in bin/. Build tree: the path CMake compiled
// in. Else whatever PATH has.
std::string find_worker(const Config& cfg) {
  std::vector<std::string> candidates{(fs::path(cfg.self).parent_path() / "ferry-worker").string()};
#ifdef FERRY_BENCH_WORKER_EXE
  candidates.emplace_back(FERRY_BENCH_WORKER_EXE);
#endif
  candidates.push_back(find_on_path("ferry-worker"));
  for (const auto& c : candidates) {
    if (!c.empty() && ::access(c.c_str(), X_OK) == 0) return c;
  }
  throw std::runtime_error(
      "ferry-worker not found beside ferry-bench, in the build tree or on PATH");
}

// A CURVE key directory for one measurement, removed afterwards.
class TempKeys {
 public:
  TempKeys() {
    std::string tmpl = (fs::temp_directory_path() / "ferry-bench-keys-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    if (auto st = ipc::write_key_directory(dir_); !st) {
      remove();
      throw std::runtime_error("keys: " + st.error().message());
    }
  }
  ~TempKeys() { remove(); }
  TempKeys(const TempKeys&) = delete;
  TempKeys& operator=(const TempKeys&) = delete;
  const std::string& dir() const noexcept { return dir_; }

 private:
  void remove() noexcept {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string dir_;
};

// Membership news from the pool; the first "lost" line's arrival time is the detection time.
class Events {
 public:
  std::function<void(std::string_view)> sink() {
    return [this](std::string_view line) {
      std::lock_guard lk(m_);
      if (!lost_ && line.find(" lost: ") != std::string_view::npos) {
        lost_ = Clock::now();
        lost_line_ = line;
        cv_.notify_all();
      } else if (line.find("joined") == std::string_view::npos) {
        std::fprintf(stderr, "ferry-bench: pool: %.*s\n", static_cast<int>(line.size()),
                     line.data());
      }
    };
  }
  std::optional<Clock::time_point> wait_lost(std::chrono::milliseconds timeout) {
    std::unique_lock lk(m_);
    cv_.wait_for(lk, timeout, [&] { return lost_.has_value(); });
    return lost_;
  }
  std::string lost_line() {
    std::lock_guard lk(m_);
    return lost_line_;
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  std::optional<Clock::time_point> lost_;
  std::string lost_line_;
};

// A remote-only pool on loopback with kWorkers ferry-worker processes joined.
class RemotePool {
 public:
  RemotePool(const std::string& worker, const std::string& keys, Events& ev)
      : pool_(options(keys, ev)) {
    std::vector<std::string> args{"--connect", pool_.listen_endpoint()};
    if (!keys.empty()) args.insert(args.end(), {"--keys", keys});
    for (unsigned i = 0; i < kWorkers; ++i) {
      // Worker stdout goes to our stderr: with --json our stdout carries only figures.
      workers_.push_back(spawn_program(worker, args, {{2, 1}}));
    }
    if (!pool_.wait_workers(kWorkers, 30s)) {
      throw std::runtime_error("remote workers did not join within 30 s" +
                               std::string(keys.empty() ? "" : " (with CURVE keys)"));
    }
  }
  ~RemotePool() {
    // Told to shut down, the workers exit by themselves; ~Peer kills any that does not.
    pool_.shutdown();
    for (auto& w : workers_)
      (void)w.wait_for(5s);
  }
  RemotePool(const RemotePool&) = delete;
  RemotePool& operator=(const RemotePool&) = delete;
  Pool& pool() noexcept { return pool_; }
  Peer& worker(std::size_t i) { return workers_.at(i); }

 private:
  static PoolOptions options(const std::string& keys, Events& ev) {
    PoolOptions o;
    o.workers = 0;
    o.listen = "tcp://127.0.0.1:0";
    o.keys = keys;
    o.heartbeat_interval = kHeartbeatInterval;
    o.heartbeat_timeout = kHeartbeatTimeout;
    o.on_event = ev.sink();
    return o;
  }
  Pool pool_;  // declared first: the workers are stopped (or killed) before it is destroyed
  std::vector<Peer> workers_;
};

void bench_tcp(Report& report, const std::string& worker, const std::string& keys,
               const std::string& prefix, const Sizes& s) {
  Events ev;
  RemotePool rp(worker, keys, ev);
  auto& pool = rp.pool();
  (void)submit_rate(pool, 2'000, "remote submit");  // warm up: connections, allocations
  std::vector<double> rate, p50, p99;
  for (int rep = 0; rep < s.reps; ++rep)
    rate.push_back(submit_rate(pool, s.submit_tasks, "remote submit"));
  report.add(prefix + "submit_tasks_per_s", median(rate), "tasks/s");
  for (int rep = 0; rep < s.reps; ++rep) {
    auto us = apply_rtt_us(pool, s.apply_iters, "remote apply");
    p50.push_back(percentile(us, 50));
    p99.push_back(percentile(std::move(us), 99));
  }
  report.add(prefix + "apply_rtt_p50_us", median(p50), "us");
  report.add(prefix + "apply_rtt_p99_us", median(p99), "us");
}

void bench_raw(const Config& cfg, Report& report, const Sizes& s) {
  std::vector<double> p50, p99;
  for (int rep = 0; rep < s.reps; ++rep) {
    auto us = raw_zmq_reqrep_us(cfg, "tcp://127.0.0.1:*", kRawBytes, s.apply_iters);
    p50.push_back(percentile(us, 50));
    p99.push_back(percentile(std::move(us), 99));
  }
  report.add("baseline.raw-zmq-tcp-reqrep.rtt_p50_us", median(p50), "us");
  report.add("baseline.raw-zmq-tcp-reqrep.rtt_p99_us", median(p99), "us");
}

// Freezes one of two busy workers; returns ms from SIGSTOP to the pool's "lost" event (which
// it sends after re-queueing the worker's tasks).
double detect_once(const std::string& worker) {
  Events ev;
  RemotePool rp(worker, "", ev);
  auto& pool = rp.pool();
  // Enough 10 ms tasks to keep both workers busy well past detection.
  constexpr int kTasks = 300;
  std::vector<Future<std::int64_t>> fs;
  for (int i = 0; i < kTasks; ++i)
    fs.push_back(pool.submit(builtin::sleep_ms, 10));
  const auto busy_by = Clock::now() + 10s;
  while (pool.stats().succeeded < 2 * kWorkers) {
    if (Clock::now() > busy_by) throw std::runtime_error("detect: the workers ran no task");
    std::this_thread::sleep_for(1ms);
  }
  const auto retries_before = pool.stats().retries;
  const auto t0 = Clock::now();
  ::kill(rp.worker(0).pid(), SIGSTOP);
  const auto lost = ev.wait_lost(20 * kHeartbeatTimeout);
  // A stopped process still dies of SIGKILL; the pool no longer counts on it.
  ::kill(rp.worker(0).pid(), SIGKILL);
  (void)rp.worker(0).wait();
  if (!lost) throw std::runtime_error("a frozen remote worker was never declared lost");
  for (auto& f : fs) {
    if (f.get() != 10) throw std::runtime_error("detect: wrong result");
  }
  if (pool.stats().retries == retries_before) {
    std::fprintf(stderr, "ferry-bench: the frozen worker had no task to re-queue: %s\n",
                 ev.lost_line().c_str());
  }
  return std::chrono::duration<double, std::milli>(*lost - t0).count();
}

void bench_detect(Report& report, const std::string& worker, const Sizes& s) {
  std::vector<double> ms;
  for (int rep = 0; rep < s.detect_reps; ++rep)
    ms.push_back(detect_once(worker));
  const double timeout_ms = std::chrono::duration<double, std::milli>(kHeartbeatTimeout).count();
  report.add("remote.tcp.heartbeat_timeout_ms", timeout_ms, "ms");
  report.add("remote.tcp.detect_ms", median(ms), "ms");
  report.add("remote.tcp.detect_timeout_ratio", median(ms) / timeout_ms, "x");
}

// ---- Dask (bench/python_dask.py) ------------------------------------------------------------

bool imports_distributed(const std::string& python) {
  // Quiet: an interpreter without Dask is expected, its traceback is not news.
  const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (null < 0) return false;
  try {
    auto p = spawn_program(python, {"-c", "import distributed"}, {{null, 1}, {null, 2}});
    ::close(null);
    return p.wait_for(60s) == 0;  // ~Peer kills one still importing
  } catch (const std::exception&) {
    ::close(null);
    return false;
  }
}

// The python3 on PATH, else Debian's own (python3-distributed installs for that one; a PATH
// may lead to another interpreter first, e.g. a version manager's).
std::string python_with_distributed() {
  for (const auto& py : {find_on_path("python3"), std::string("/usr/bin/python3")}) {
    if (!py.empty() && ::access(py.c_str(), X_OK) == 0 && imports_distributed(py)) return py;
  }
  return {};
}

void bench_dask(const Config& cfg, Report& report, const Sizes& s) {
  const std::string python = python_with_distributed();
  if (python.empty()) {
    std::fprintf(stderr,
                 "ferry-bench: Dask not measured (peer.dask.*): no python3 can `import "
                 "distributed` (Debian: apt-get install python3-distributed)\n");
    return;
  }
  const std::string script = find_bench_script(cfg, "python_dask.py");
  if (script.empty()) {
    std::fprintf(stderr, "ferry-bench: python_dask.py not found: Dask skipped\n");
    return;
  }
  run_python_figures(
      python, script,
      {"--workers", std::to_string(kWorkers), "--tasks", std::to_string(s.dask_tasks),
       "--apply-iters", std::to_string(s.dask_apply_iters), "--reps", std::to_string(s.dask_reps)},
      cfg.quick ? 120s : 900s, report);
}

}  // namespace

using Words = std::vector<std::uint64_t>;

// kWorkers remote workers on this host read one object: (objects served, ms to the last read).
std::pair<double, double> object_reads(const std::string& self, std::size_t words, bool shared) {
  PoolOptions o;
  o.workers = 0;
  o.listen = "tcp://127.0.0.1:0";
  Pool pool(o);
  std::vector<Peer> workers;
  for (unsigned i = 0; i < kWorkers; ++i) {
    // Sessions of their own, as on another host: they fetch rather than open our segment.
    std::vector<std::string> args{"-u",        kSessionEnv,           self, "--ferry-worker",
                                  "--connect", pool.listen_endpoint()};
    if (!shared) args.insert(args.begin() + 2, "FERRY_HOST_OBJECTS=0");
    workers.push_back(spawn_program("/usr/bin/env", args, {{2, 1}}));
  }
  if (!pool.wait_workers(kWorkers, 30s)) throw std::runtime_error("object read: no workers");
  const Words data(words, 7);
  const auto t0 = Clock::now();
  auto ref = pool.put(data);
  std::set<std::int32_t> readers;
  for (int round = 0; round < 50 && readers.size() < kWorkers; ++round) {
    std::vector<Future<std::int32_t>> fs;
    for (unsigned i = 0; i < 2 * kWorkers; ++i)
      fs.push_back(pool.submit(read_object, ref));
    for (auto& f : fs)
      readers.insert(f.get());
  }
  const double ms = seconds_since(t0) * 1e3;
  if (readers.size() < kWorkers) throw std::runtime_error("object read: a worker read nothing");
  const double served = static_cast<double>(pool.stats().objects_served);
  pool.shutdown();
  for (auto& w : workers)
    (void)w.wait_for(5s);
  return {served, ms};
}

void bench_object_fetch(const Config& cfg, Report& report) {
  const std::size_t words = (cfg.quick ? 16u : 64u) << 17;  // MiB of 8-byte words
  const auto [served, ms] = object_reads(cfg.self, words, true);
  const auto [served_private, ms_private] = object_reads(cfg.self, words, false);
  report.add("remote.tcp.object_served_per_host", served, "objects");
  report.add("remote.tcp.object_read_ms", ms, "ms");
  report.add("remote.tcp.object_served_private", served_private, "objects");
  report.add("remote.tcp.object_read_private_ms", ms_private, "ms");
}

void run_remote(const Config& cfg, Report& report) {
  const auto s = sizes(cfg.quick);
  const std::string worker = find_worker(cfg);
  bench_tcp(report, worker, "", "remote.tcp.", s);
  {
    TempKeys keys;
    bench_tcp(report, worker, keys.dir(), "remote.tcp_curve.", s);
  }
  bench_raw(cfg, report, s);
  bench_detect(report, worker, s);
  bench_object_fetch(cfg, report);
  bench_dask(cfg, report, s);
}

void print_remote_targets(const Report& r) {
  if (std::isnan(r.get("remote.tcp.submit_tasks_per_s"))) return;
  const double nan = std::nan("");
  const auto tcp = [&](const char* m) { return r.get(std::string("remote.tcp.") + m); };
  const auto curve = [&](const char* m) { return r.get(std::string("remote.tcp_curve.") + m); };
  const auto dask = [&](const char* m) { return r.get(std::string("peer.dask.") + m); };
  print_targets(
      "remote target (issue)",
      {
          {"tcp submit >= 300,000 tasks/s", tcp("submit_tasks_per_s"), 3e5, true, "tasks/s"},
          {"tcp submit >= 400x Dask", tcp("submit_tasks_per_s") / dask("submit_tasks_per_s"), 400,
           true, "x"},
          {"CURVE cost, submit <= 2x", tcp("submit_tasks_per_s") / curve("submit_tasks_per_s"), 2,
           false, "x"},
          {"CURVE cost, apply p50 <= 2x", curve("apply_rtt_p50_us") / tcp("apply_rtt_p50_us"), 2,
           false, "x"},
          {"apply p50 <= 1.2x raw REQ/REP",
           tcp("apply_rtt_p50_us") / r.get("baseline.raw-zmq-tcp-reqrep.rtt_p50_us"), 1.2, false,
           "x"},
          {"lost + re-queued <= 2x heartbeat timeout", tcp("detect_timeout_ratio"), 2, false, "x"},
          {"object fetched once per host (2 workers)", tcp("object_served_per_host"), 1, false,
           "objects"},
          {"  ferry vs Dask, apply p50", dask("apply_rtt_p50_us") / tcp("apply_rtt_p50_us"), nan,
           true, "x"},
      });
}

}  // namespace ferry::bench
