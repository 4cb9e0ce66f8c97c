#include "harness.hpp"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>

extern char** environ;

namespace ferry::bench {

void Report::add(std::string name, double value, std::string unit) {
  if (json_) {
    nlohmann::json j{{"name", name}, {"value", value}, {"unit", unit}};
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
  }
  metrics_.push_back({std::move(name), value, std::move(unit)});
}

double Report::get(const std::string& name) const {
  for (const auto& m : metrics_) {
    if (m.name == name) return m.value;
  }
  return std::nan("");
}

void Report::print_table() const {
  if (json_) return;
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
  std::printf("\n%-44s %14s %-8s %14s %8s\n", "figure", "value", "unit", "baseline", "ratio");
  for (const auto& m : metrics_) {
    std::string base_name;
    std::string futures_name;
    if (const auto pm = pool_metric(m.name); !pm.empty()) {
      base_name = "peer.python_mp." + pm;
      futures_name = "peer.python_futures." + pm;
    } else if (m.name.rfind("sync.lock.", 0) == 0) {
      base_name = "baseline.boost-ipc-mutex." + m.name.substr(10);
    } else if (m.name.rfind("channel.", 0) == 0) {
      const auto dot = m.name.find('.', 8);
      const auto transport = m.name.substr(8, dot - 8);
      const auto rest = m.name.substr(dot);
      auto it = baseline_of.find(transport);
      base_name = "baseline." + (it != baseline_of.end() ? it->second : "boost-mq") + rest;
    }
    const double base = base_name.empty() ? std::nan("") : get(base_name);
    if (std::isnan(base)) {
      std::printf("%-44s %14.3f %-8s\n", m.name.c_str(), m.value, m.unit.c_str());
    } else {
      std::printf("%-44s %14.3f %-8s %14.3f %7.2fx", m.name.c_str(), m.value, m.unit.c_str(), base,
                  ratio_of(m, base));
      const double fut = futures_name.empty() ? std::nan("") : get(futures_name);
      if (!std::isnan(fut)) std::printf("  (futures %.3f: %.2fx)", fut, ratio_of(m, fut));
      std::printf("\n");
    }
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

int Peer::wait() {
  if (pid_ <= 0) return -1;
  int st = 0;
  while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  return 128 + WTERMSIG(st);
}

Peer spawn_peer(const Config& cfg, const std::vector<std::string>& args,
                const std::vector<std::pair<int, int>>& fds) {
  std::vector<std::string> a{cfg.self, "--bench-peer"};
  a.insert(a.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : a)
    argv.push_back(s.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  for (auto [from, to] : fds)
    posix_spawn_file_actions_adddup2(&fa, from, to);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, cfg.self.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error(std::string("posix_spawn: ") + std::strerror(rc));
  return Peer(pid);
}

}  // namespace ferry::bench
