// ferry-bench's harness: figures, medians/percentiles, self-exec peer processes, output.
// Peers are this executable re-run as `ferry-bench --bench-peer SUITE ARGS...`.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace ferry::bench {

struct Metric {
  std::string name;
  double value = 0;
  std::string unit;
};

class Report {
 public:
  explicit Report(bool json) : json_(json) {}
  void add(std::string name, double value, std::string unit);
  const std::vector<Metric>& metrics() const noexcept { return metrics_; }
  // Human table: each ferry figure beside its baseline and their ratio.
  void print_table() const;
  double get(const std::string& name) const;

 private:
  bool json_;
  std::vector<Metric> metrics_;
};

struct Config {
  bool quick = false;
  std::string self;  // path of this executable
};

// p in [0, 100]; sorts a copy.
double percentile(std::vector<double> v, double p);
double median(std::vector<double> v);

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// A started peer; the destructor kills (SIGKILL) and reaps one still running.
class Peer {
 public:
  Peer() = default;
  explicit Peer(pid_t pid) : pid_(pid) {}
  Peer(Peer&& o) noexcept : pid_(std::exchange(o.pid_, -1)) {}
  Peer& operator=(Peer&& o) noexcept;
  ~Peer();
  // Waits for exit; returns the exit code (or 128 + signal).
  int wait();

 private:
  pid_t pid_ = -1;
};

// Runs `self --bench-peer args...` with fds[i].first dup'ed to fds[i].second in the child.
Peer spawn_peer(const Config& cfg, const std::vector<std::string>& args,
                const std::vector<std::pair<int, int>>& fds = {});

// Suites.
void run_channels(const Config& cfg, Report& report);
int channel_peer(const std::vector<std::string>& args);
// Pool figures per transport and Python's pools (bench/python_pools.py) in the same run.
void run_pool(const Config& cfg, Report& report);
int primes_peer(const std::vector<std::string>& args);  // `--bench-peer primes N TASKS`
// The pool targets, met or missed, under the table (nothing without pool figures).
void print_pool_targets(const Report& report);

}  // namespace ferry::bench
