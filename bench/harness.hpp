// ferry-bench's harness: figures, medians/percentiles, self-exec peer processes, output.
// Peers are this executable re-run as `ferry-bench --bench-peer SUITE ARGS...`.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace ferry::bench {

// One figure. With --repeat N, value is the median of the runs, min/max their spread and runs
// how many runs produced it; a single run has min = max = value and runs = 1.
struct Metric {
  std::string name;
  double value = 0;
  std::string unit;
  double min = 0;
  double max = 0;
  int runs = 1;
};

// The figures of one run (or, combined, of several). Not thread-safe: the suites add from the
// main thread.
class Report {
 public:
  void add(std::string name, double value, std::string unit);
  const std::vector<Metric>& metrics() const noexcept { return metrics_; }
  // Runs of the same suites combined, name by name in first-seen order: median, min, max and
  // the number of runs that produced it (a peer skipped in one run has fewer).
  static Report combine(const std::vector<Report>& runs);
  // One JSON object per line: {name, value, unit, min, max, runs}.
  void print_json(std::FILE* out = stdout) const;
  // Human table: each ferry figure beside its baseline and their ratio; with the spread
  // [min..max] when any figure comes from more than one run.
  void print_table() const;
  double get(const std::string& name) const;

 private:
  std::vector<Metric> metrics_;
};

// One of an issue's targets: value against bound (at least / at most). A NaN bound is a
// comparison shown for information, without a verdict.
struct Target {
  std::string what;
  double value = 0;
  double bound = 0;
  bool at_least = true;
  std::string unit;
};
// A titled table of targets with "met" / "MISSED" / "n/a (not measured)".
void print_targets(const std::string& title, const std::vector<Target>& rows);

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
  // As wait, but gives up after timeout (-1; the process is still this Peer's).
  int wait_for(std::chrono::milliseconds timeout);
  pid_t pid() const noexcept { return pid_; }

 private:
  pid_t pid_ = -1;
};

// Runs `self --bench-peer args...` with fds[i].first dup'ed to fds[i].second in the child.
Peer spawn_peer(const Config& cfg, const std::vector<std::string>& args,
                const std::vector<std::pair<int, int>>& fds = {});
// Runs exe with args (argv[0] = exe), fds dup'ed as for spawn_peer; new_group: as the leader
// of a new process group (its pid is the group id), so its descendants can be found.
Peer spawn_program(const std::string& exe, const std::vector<std::string>& args,
                   const std::vector<std::pair<int, int>>& fds = {}, bool new_group = false);

// The first executable `prog` on PATH, or "".
std::string find_on_path(const std::string& prog);
// A script shipped with the bench: <prefix>/share/ferry/NAME when installed, else bench/NAME
// in the source tree this executable was built from; "" if neither exists.
std::string find_bench_script(const Config& cfg, const std::string& name);
// Runs `exe args...` (a peer that prints JSON lines {name, value, unit}), adding each line to
// report; bounded by timeout (then killed). Problems are said on stderr, never thrown: a
// peer's failure leaves ferry's own figures standing. Returns once the program and every
// process it started (e.g. multiprocessing's resource tracker, which outlives it by a few ms,
// or mpirun's ranks) are gone: ferry-bench leaves nothing running.
void run_peer_figures(const std::string& exe, const std::vector<std::string>& args,
                      std::chrono::seconds timeout, Report& report);
// run_peer_figures of `python script args...`.
void run_python_figures(const std::string& python, const std::string& script,
                        const std::vector<std::string>& args, std::chrono::seconds timeout,
                        Report& report);

// Suites.
void run_channels(const Config& cfg, Report& report);
// The channel targets (against raw peers and Open MPI), under the table.
void print_channel_targets(const Report& report);
int channel_peer(const std::vector<std::string>& args);
// Round trips (us) of `bytes`-byte messages over raw libzmq REQ/REP between this process,
// bound at endpoint (e.g. "tcp://127.0.0.1:*"), and a peer process; iters/10 warm-ups first.
std::vector<double> raw_zmq_reqrep_us(const Config& cfg, const std::string& endpoint,
                                      std::size_t bytes, int iters);
// Remote workers (ferry-worker --connect) over TCP, with and without CURVE, against raw
// libzmq and Dask (bench/python_dask.py) in the same run; then heartbeat failure detection.
void run_remote(const Config& cfg, Report& report);
// The remote targets, met or missed, under the table (nothing without remote figures).
void print_remote_targets(const Report& report);
// Pool figures per transport and Python's pools (bench/python_pools.py) in the same run.
void run_pool(const Config& cfg, Report& report);
int primes_peer(const std::vector<std::string>& args);  // `--bench-peer primes N TASKS`
// `ferry-bench plot RUN.json OUTDIR`: SVG charts of a --json run (bench/plot.cpp).
int plot_main(int argc, char** argv);
// The pool targets, met or missed, under the table (nothing without pool figures).
void print_pool_targets(const Report& report);

}  // namespace ferry::bench
