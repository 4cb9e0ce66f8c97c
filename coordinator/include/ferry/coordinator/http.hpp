// The coordinator's HTTP endpoint (--http HOST:PORT): GET / (a self-contained status page),
// GET /api/status (JSON), GET /metrics (Prometheus text). Opt-in; a non-loopback address
// needs a token, checked on every request (Authorization: Bearer TOKEN, or ?token=TOKEN).
//
// Threading: the server answers on its own threads; each request takes a snapshot of the
// pool's counters (Pool::stats(), one short hold of the pool's lock) and of the job's
// progress (atomics), so it never blocks the scheduler for longer than a copy. The Pool and
// JobProgress given to StatusServer must outlive it; the destructor stops and joins it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ferry/coordinator/pool.hpp"
#include "ferry/shared/error.hpp"

namespace ferry::coordinator {

// A running job's progress, written by the command that runs it, read by the server.
struct JobProgress {
  std::string task;                     // set before the server starts
  std::atomic<std::int64_t> total{-1};  // items; < 0 while unknown (--stdin)
  std::atomic<std::uint64_t> done{0}, failed{0};
  std::atomic<bool> finished{false};
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();

  // A failed item (a map chunk's items fail one by one, inside a task that succeeded): its
  // input and the error text (with the stack trace the worker sent, if any). The last 50 kept.
  void note_failure(std::string text);
  std::vector<PoolNote> failures() const;

 private:
  mutable std::mutex m_;
  std::deque<PoolNote> failures_;
};

// Who serves the page (the "coordinator" object of /api/status).
struct CoordinatorInfo {
  std::string transport;  // local workers' transport
  std::string listen;     // remote workers' address, "" if none
};

struct HttpOptions {
  std::string address;  // HOST:PORT (port 0: any free port)
  std::string token;    // required on every request when not empty
};

// HOST and PORT of "HOST:PORT" ("[::1]:80" for IPv6); an error naming what is wrong.
Result<std::pair<std::string, int>> parse_http_address(std::string_view address);
bool is_loopback_host(std::string_view host);
// The token rule: a non-loopback address without a token is refused (as --listen without keys).
Status check_http_options(const HttpOptions& o);

// Items done over time (seconds since the coordinator started, items done), for the page's
// throughput chart: the server samples once a second, so a page opened late has the history.
using ThroughputHistory = std::vector<std::pair<double, std::uint64_t>>;

// The documents the server serves, built from snapshots (also used by the tests).
std::string status_json(const Pool& pool, const JobProgress* job, const CoordinatorInfo& who,
                        const ThroughputHistory& history = {});
std::string metrics_text(const Pool& pool, const JobProgress* job);
std::string_view status_page();  // the HTML of GET /

class StatusServer {
 public:
  // Binds and starts serving; an error naming the address if it cannot bind.
  static Result<std::unique_ptr<StatusServer>> start(const HttpOptions& opt, const Pool& pool,
                                                     const JobProgress* job, CoordinatorInfo who);
  ~StatusServer();
  StatusServer(const StatusServer&) = delete;
  StatusServer& operator=(const StatusServer&) = delete;
  // "http://HOST:PORT" with the port actually bound.
  std::string url() const;

  struct Impl;

 private:
  explicit StatusServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// `ferry-coordinator status URL`: prints the status as a table (or JSON), once or every
// `interval` until interrupted. Returns the exit status (0; 1 if the endpoint cannot be read).
struct StatusArgs {
  std::string url;
  std::string token;
  bool json = false;
  bool watch = false;
  double interval_s = 1.0;
  unsigned count = 0;  // --watch: stop after this many refreshes (0: until interrupted)
};
int status_command(const StatusArgs& args);

}  // namespace ferry::coordinator
