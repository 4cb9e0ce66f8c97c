// Local worker processes (internal): spawns them (on its own thread, which lives as long as
// the pool, since a worker's PR_SET_PDEATHSIG follows the thread that spawned it), watches
// their pidfds and output pipes, reaps every one, forwards their output lines, and reports
// each start, failure to start and end to the PoolCore. Deciding how many to run, what to kill
// and when is the Scheduler's; carrying it out is this type's.
//
// Threading: request_spawns() and stop() may be called from any thread; everything else runs
// on the supervisor thread. Ownership: it owns its LocalWorkers' processes (shared with the
// pool's endpoint table); every child is reaped before stop() returns.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ferry/coordinator/pool.hpp"
#include "worker_endpoint.hpp"

namespace ferry::detail {

class PoolCore;

class Supervisor {
 public:
  Supervisor(PoolCore& core, const PoolOptions& opt,
             std::shared_ptr<coordinator::Launcher> launcher);  // throws if no eventfd
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  void start();  // throws std::system_error if the thread cannot be made
  void request_spawns(unsigned n);
  void wake() noexcept;  // e.g. a new deadline
  // Stops every worker (graceful: a shutdown frame first; else SIGTERM), SIGTERM then SIGKILL
  // after the grace period, reaps them all, joins the thread.
  void stop(bool graceful);

 private:
  struct Launched;
  void run();
  // Spawns n workers, then finishes their channels and starts them; each ends in the core's
  // worker_started() or spawn_failed().
  void spawn(unsigned n);
  void launch(std::vector<Launched>& out);  // spawned: appended; else reported failed
  void start(Launched& l);
  void reap(const std::shared_ptr<LocalWorker>& w);
  void read_output(LocalWorker& w, int stream, bool eof);
  void emit_line(const LocalWorker& w, int stream, std::string_view line) const;
  // Polls pidfds (and output) until every worker is reaped or `until`; true if all were.
  bool wait_all(TimePoint until);
  void terminate_all();

  PoolCore& core_;
  const PoolOptions& opt_;
  std::shared_ptr<coordinator::Launcher> launcher_;
  std::string exe_;
  std::uint32_t serial_ = 0;  // tells this pool's channel names from other pools' here
  int wake_fd_ = -1;
  std::thread thread_;
  std::vector<std::shared_ptr<LocalWorker>> workers_;  // supervisor thread only

  std::mutex mu_;  // guards the three below
  unsigned want_spawn_ = 0;
  bool stopping_ = false;
  bool graceful_ = true;
};

}  // namespace ferry::detail
