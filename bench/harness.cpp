#include "harness.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace ferry::bench {

void Report::add(std::string name, double value, std::string unit) {
  metrics_.push_back({std::move(name), value, std::move(unit), value, value, 1});
}

Report Report::combine(const std::vector<Report>& runs) {
  std::vector<std::string> order;
  std::map<std::string, std::pair<std::string, std::vector<double>>> by_name;  // unit, values
  for (const auto& run : runs) {
    for (const auto& m : run.metrics()) {
      auto [it, fresh] = by_name.try_emplace(m.name);
      if (fresh) {
        order.push_back(m.name);
        it->second.first = m.unit;
      }
      it->second.second.push_back(m.value);
    }
  }
  Report out;
  for (const auto& name : order) {
    const auto& [unit, values] = by_name.at(name);
    const auto [lo, hi] = std::minmax_element(values.begin(), values.end());
    out.metrics_.push_back({name, median(values), unit, *lo, *hi, static_cast<int>(values.size())});
  }
  return out;
}

void Report::print_json(std::FILE* out) const {
  for (const auto& m : metrics_) {
    const nlohmann::ordered_json j{{"name", m.name}, {"value", m.value}, {"unit", m.unit},
                                   {"min", m.min},   {"max", m.max},     {"runs", m.runs}};
    std::fprintf(out, "%s\n", j.dump().c_str());
  }
  std::fflush(out);
}

double Report::get(const std::string& name) const {
  for (const auto& m : metrics_) {
    if (m.name == name) return m.value;
  }
  return std::nan("");
}

void Report::print_table() const {
  const bool spread =
      std::any_of(metrics_.begin(), metrics_.end(), [](const Metric& m) { return m.runs > 1; });
  // channel.<t>.<metric>.<bytes> is shown with the baseline for the same workload.
  static const std::map<std::string, std::string> baseline_of{
      {"pipe", "raw-pipe"}, {"zmq-ipc", "raw-zmq-ipc"}, {"zmq-tcp", "raw-zmq-tcp"}};
  // pool.<t>.<metric> (and pool.startup_ms.<n>) is shown with Python's multiprocessing.Pool on
  // the same workload, and concurrent.futures' ratio after it. count_primes_ms_* is not
  // compared: Python runs a smaller n (its speed-up is).
  const auto pool_metric = [](const std::string& name) -> std::string {
    if (name.rfind("pool.", 0) != 0) return {};
    if (name.rfind("pool.startup_ms.", 0) == 0) return name.substr(5);
    const auto dot = name.find('.', 5);
    if (dot == std::string::npos) return {};
    auto rest = name.substr(dot + 1);
    return rest.rfind("count_primes_ms", 0) == 0 ? std::string() : rest;
  };
  const auto ratio_of = [](const Metric& m, double base) {
    // Oriented so that > 1 means ferry is better.
    const bool lower_is_better = m.unit == "us" || m.unit == "ms";
    return lower_is_better ? base / m.value : m.value / base;
  };
  std::printf("\n%-44s %14s %-8s", "figure", spread ? "median" : "value", "unit");
  if (spread) std::printf(" %-31s", "[min..max] (runs)");
  std::printf(" %14s %8s\n", "baseline", "ratio");
  for (const auto& m : metrics_) {
    std::string base_name;
    std::vector<std::pair<std::string, std::string>> extras;  // (label, figure) after the ratio
    if (const auto pm = pool_metric(m.name); !pm.empty()) {
      base_name = "peer.python_mp." + pm;
      extras.emplace_back("futures", "peer.python_futures." + pm);
    } else if (m.name.rfind("remote.tcp.", 0) == 0) {
      // Remote figures beside Dask's on the same workload; apply also beside raw REQ/REP.
      const auto rest = m.name.substr(11);
      base_name = "peer.dask." + rest;
      if (rest.rfind("apply_rtt_", 0) == 0) {
        extras.emplace_back("raw REQ/REP",
                            "baseline.raw-zmq-tcp-reqrep.rtt_" + rest.substr(10, 3) + "_us");
      }
    } else if (m.name.rfind("remote.tcp_curve.", 0) == 0) {
      base_name = "remote.tcp." + m.name.substr(17);  // < 1: what CURVE costs
    } else if (m.name.rfind("sync.lock.", 0) == 0) {
      base_name = "baseline.boost-ipc-mutex." + m.name.substr(10);
    } else if (m.name.rfind("channel.", 0) == 0) {
      const auto dot = m.name.find('.', 8);
      const auto transport = m.name.substr(8, dot - 8);
      const auto rest = m.name.substr(dot);
      auto it = baseline_of.find(transport);
      base_name = "baseline." + (it != baseline_of.end() ? it->second : "boost-mq") + rest;
      extras.emplace_back("Open MPI", "peer.mpi.sm" + rest);  // the anchor for every transport
    }
    const double base = base_name.empty() ? std::nan("") : get(base_name);
    std::printf("%-44s %14.3f %-8s", m.name.c_str(), m.value, m.unit.c_str());
    if (spread) {
      char range[64];
      std::snprintf(range, sizeof range, "[%.3f..%.3f] (%d)", m.min, m.max, m.runs);
      std::printf(" %-31s", range);
    }
    if (std::isnan(base)) {
      if (!extras.empty()) std::printf(" %14s %8s", "", "");
    } else {
      std::printf(" %14.3f %7.2fx", base, ratio_of(m, base));
    }
    for (const auto& [label, name] : extras) {
      const double v = get(name);
      if (!std::isnan(v)) std::printf("  (%s %.3f: %.2fx)", label.c_str(), v, ratio_of(m, v));
    }
    std::printf("\n");
  }
}

void print_targets(const std::string& title, const std::vector<Target>& rows) {
  std::printf("\n%-44s %14s %10s\n", title.c_str(), "measured", "bound");
  for (const auto& row : rows) {
    if (std::isnan(row.bound)) {  // information: no bound, no verdict
      std::printf("%-44s %14.2f %10s  %s\n", row.what.c_str(), row.value, "", row.unit.c_str());
      continue;
    }
    const char* verdict = std::isnan(row.value) ? "n/a (not measured)"
                          : (row.at_least ? row.value >= row.bound : row.value <= row.bound)
                              ? "met"
                              : "MISSED";
    std::printf("%-44s %14.2f %10.2f  %s %s\n", row.what.c_str(), row.value, row.bound,
                row.unit.c_str(), verdict);
  }
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const double idx = p / 100.0 * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(idx));
  const auto hi = static_cast<std::size_t>(std::ceil(idx));
  const double frac = idx - static_cast<double>(lo);
  return v[lo] + (v[hi] - v[lo]) * frac;
}

double median(std::vector<double> v) {
  return percentile(std::move(v), 50);
}

Peer& Peer::operator=(Peer&& o) noexcept {
  if (this != &o) {
    this->~Peer();
    pid_ = std::exchange(o.pid_, -1);
  }
  return *this;
}

Peer::~Peer() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    wait();
  }
}

namespace {
int decode_status(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  return 128 + WTERMSIG(st);
}
}  // namespace

int Peer::wait() {
  if (pid_ <= 0) return -1;
  int st = 0;
  while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  return decode_status(st);
}

int Peer::wait_for(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  // Polled: this is a bench's tear-down, not a hot path, and a pidfd adds nothing here.
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return decode_status(st);
    }
    if (r < 0 && errno != EINTR) return -1;
    if (Clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Peer spawn_program(const std::string& exe, const std::vector<std::string>& args,
                   const std::vector<std::pair<int, int>>& fds, bool new_group) {
  std::vector<std::string> a{exe};
  a.insert(a.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : a)
    argv.push_back(s.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  for (auto [from, to] : fds)
    posix_spawn_file_actions_adddup2(&fa, from, to);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  if (new_group) {
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
  }
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, exe.c_str(), &fa, &attr, argv.data(), environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("cannot start " + exe + ": " + std::strerror(rc));
  return Peer(pid);
}

Peer spawn_peer(const Config& cfg, const std::vector<std::string>& args,
                const std::vector<std::pair<int, int>>& fds) {
  std::vector<std::string> a{"--bench-peer"};
  a.insert(a.end(), args.begin(), args.end());
  return spawn_program(cfg.self, a, fds);
}

std::string find_on_path(const std::string& prog) {
  const char* path = std::getenv("PATH");
  std::string rest = path ? path : "";
  while (!rest.empty()) {
    const auto colon = rest.find(':');
    const std::string dir = rest.substr(0, colon);
    rest = colon == std::string::npos ? "" : rest.substr(colon + 1);
    const std::string cand = (dir.empty() ? "." : dir) + "/" + prog;
    if (::access(cand.c_str(), X_OK) == 0) return cand;
  }
  return {};
}

std::string find_bench_script(const Config& cfg, const std::string& name) {
  namespace fs = std::filesystem;
  std::vector<fs::path> candidates{fs::path(cfg.self).parent_path().parent_path() / "share/ferry" /
                                   name};
#ifdef FERRY_BENCH_SOURCE_DIR
  candidates.emplace_back(fs::path(FERRY_BENCH_SOURCE_DIR) / name);
#endif
  for (const auto& c : candidates) {
    std::error_code ec;
    if (fs::is_regular_file(c, ec)) return c.string();
  }
  return {};
}

namespace {
// Reaps what is left of process group pgid once its leader is gone. We are a child subreaper,
// so its orphans are our children; a group still alive after grace is killed.
void reap_group(pid_t pgid, std::chrono::milliseconds grace) {
  const auto deadline = Clock::now() + grace;
  bool killed = false;
  for (;;) {
    int st = 0;
    const pid_t r = ::waitpid(-pgid, &st, WNOHANG);
    if (r > 0) continue;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return;  // ECHILD: none left
    if (!killed && Clock::now() >= deadline) {
      ::kill(-pgid, SIGKILL);
      killed = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}
}  // namespace

void run_python_figures(const std::string& python, const std::string& script,
                        const std::vector<std::string>& args, std::chrono::seconds timeout,
                        Report& report) {
  std::vector<std::string> a{script};
  a.insert(a.end(), args.begin(), args.end());
  run_peer_figures(python, a, timeout, report);
}

void run_peer_figures(const std::string& exe, const std::vector<std::string>& a,
                      std::chrono::seconds timeout, Report& report) {
  using namespace std::chrono_literals;
  // Named after its script for an interpreter, else after the program.
  const std::string base =
      std::filesystem::path(!a.empty() && exe.find("python") != std::string::npos ? a[0] : exe)
          .filename()
          .string();
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
  Peer proc;  // killed and reaped if we leave early
  try {
    // Its descendants (worker processes, trackers) are reparented to us when it exits, and
    // reaped by reap_group below instead of being left to whoever adopts them.
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    proc = spawn_program(exe, a, {{out[1], 1}}, true);
  } catch (const std::exception& e) {
    ::close(out[0]);
    ::close(out[1]);
    std::fprintf(stderr, "ferry-bench: %s\n", e.what());
    return;
  }
  ::close(out[1]);
  const pid_t group = proc.pid();

  // Bounded: a wedged interpreter must not hang the bench.
  const auto deadline = Clock::now() + timeout;
  std::string buf;
  bool timed_out = false;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd pfd{out[0], POLLIN, 0};
    const int n = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    char tmp[4096];
    const auto got = ::read(out[0], tmp, sizeof tmp);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    buf.append(tmp, static_cast<std::size_t>(got));
    for (auto nl = buf.find('\n'); nl != std::string::npos; nl = buf.find('\n')) {
      const std::string line = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.contains("name") || !j.contains("value")) {
        std::fprintf(stderr, "ferry-bench: %s: unexpected line: %s\n", base.c_str(), line.c_str());
        continue;
      }
      report.add(j["name"].get<std::string>(), j["value"].get<double>(),
                 j.value("unit", std::string{}));
    }
  }
  ::close(out[0]);
  if (timed_out) {
    std::fprintf(stderr, "ferry-bench: %s ran too long and was stopped\n", base.c_str());
    ::kill(-group, SIGKILL);
    (void)proc.wait();
  } else if (const int code = proc.wait(); code != 0) {
    std::fprintf(stderr, "ferry-bench: %s exited with %d; its figures may be partial\n",
                 base.c_str(), code);
  }
  reap_group(group, std::chrono::seconds(5));
}

}  // namespace ferry::bench
