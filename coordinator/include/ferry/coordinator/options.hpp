// Options of ferry-coordinator that every command sees (the DESIGN.md command-line contract).
#pragma once

#include "ferry/coordinator/pool.hpp"

#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace ferry::coordinator {

struct Options {
  unsigned workers = std::thread::hardware_concurrency();
  std::string transport = "shm";  // pipe | shm | zmq
  std::string listen;             // also accept remote workers here
  std::string keys;               // CURVE key directory
  bool insecure = false;
  unsigned max_retries = 3;
  double task_timeout_s = 0;     // 0 = none
  std::optional<bool> progress;  // unset: on when stderr is a terminal
  bool json = false;
  std::string log_level = "info";   // trace | debug | info | warn | error (ferry/shared/log.hpp)
  std::string log_format = "text";  // text | json
  unsigned wait_workers = 0;        // before starting: wait for this many workers (local+remote)
  double wait_timeout_s = 60;       // ... at most this long
  unsigned heartbeat_interval_ms = 500;
  unsigned heartbeat_timeout_ms = 3000;
  std::vector<std::string> task_libraries;  // --tasks: loaded before the command runs
  std::string http;                         // --http HOST:PORT: serve status and metrics
  std::string http_token;                   // required by --http on a non-loopback address
  double http_linger_s = 0;                 // keep serving this long after the job ends
};

// The pool options these command-line options ask for (workers, transport, retries, timeout,
// which events are reported).
PoolOptions pool_options(const Options& opt);
// The least level of the pool's "ferry: ..." event lines --log-level asks for: error, warn, or
// info (all of them, for info and below).
EventLevel event_level(const Options& opt) noexcept;
// Sets this process's log level and format from --log-level and --log-format, and passes the
// level to the workers it starts (their lines are relayed, and formatted, by this process).
void configure_logging(const Options& opt);

// How many workers (local and remote) a command waits for before it starts: --wait-workers,
// else 1 when --workers 0 leaves the work to remote workers alone, else none.
unsigned workers_to_await(const Options& opt) noexcept;
// Waits (up to --wait-timeout) until that many workers have registered, saying on stderr where
// it listens and, on failure, that nothing was run. True when they joined (or none is awaited).
// `interrupted` is asked every 50 ms; once it says true the wait ends (false, nothing said).
bool await_joined_workers(Pool& pool, const Options& opt,
                          const std::function<bool()>& interrupted = {});

}  // namespace ferry::coordinator
