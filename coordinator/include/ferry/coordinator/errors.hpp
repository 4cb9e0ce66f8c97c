// How a task can fail, as the caller of Future::get() sees it. Each type carries the context
// needed to act on it without reading logs (task id, worker pid, host, attempt k of n).
//
//   TaskFailure                 base: what() is a complete sentence, info() the details
//   ├─ RemoteError              the task threw (type, message, worker's stack trace)
//   ├─ WorkerDied               the worker running it died on every attempt (signal / exit code)
//   ├─ TaskTimeout              it ran longer than the task timeout on every attempt
//   ├─ Cancelled                cancelled by the caller or by pool shutdown
//   ├─ Rejected                 it could not be sent (arguments too large, no workers, ...)
//   ├─ ContinuationError        a Future::then continuation threw (in this process)
//   ├─ DependencyFailed         a Future it was given as an argument failed (task graphs)
//   └─ ActorDied                an actor's process died with the call in it, or is gone for
//                               good (its restarts used up); never retried: methods have effects
//
//   TimeoutError                not a task's failure: a wait (as_completed) ran out of time
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace ferry {

enum class FailureKind : std::uint8_t {
  remote_error,
  worker_died,
  timeout,
  cancelled,
  rejected,
  continuation_error,
  dependency_failed,
  actor_died,
};

struct FailureInfo {
  FailureKind kind = FailureKind::remote_error;
  std::uint64_t task_id = 0;
  std::string task;      // task name
  std::string type;      // remote exception type (RemoteError)
  std::string message;   // remote what() or our explanation
  std::int32_t pid = 0;  // worker pid (0 if none ran it)
  std::string host;
  std::string stack;               // remote stack trace, best effort
  int signal = 0;                  // WorkerDied, ActorDied: terminating signal, else 0
  int exit_code = -1;              // WorkerDied, ActorDied: exit code if it exited
  std::uint32_t attempt = 0;       // the attempt that failed (1-based)
  std::uint32_t max_attempts = 0;  // 1 + max_retries
  std::int64_t item = -1;          // map/starmap: the input's index, else -1
};

// Builds the one-line explanation of a failure (what() of the exception types below).
std::string describe(const FailureInfo& f);

class TaskFailure : public std::runtime_error {
 public:
  explicit TaskFailure(FailureInfo info)
      : std::runtime_error(describe(info)), info_(std::move(info)) {}
  const FailureInfo& info() const noexcept { return info_; }

 private:
  FailureInfo info_;
};

class RemoteError : public TaskFailure {
  using TaskFailure::TaskFailure;
};
class WorkerDied : public TaskFailure {
  using TaskFailure::TaskFailure;
};
class TaskTimeout : public TaskFailure {
  using TaskFailure::TaskFailure;
};
class Cancelled : public TaskFailure {
  using TaskFailure::TaskFailure;
};
class Rejected : public TaskFailure {
  using TaskFailure::TaskFailure;
};
class ContinuationError : public TaskFailure {
  using TaskFailure::TaskFailure;
};
class DependencyFailed : public TaskFailure {
  using TaskFailure::TaskFailure;
};
class ActorDied : public TaskFailure {
  using TaskFailure::TaskFailure;
};

// A wait with a timeout that ran out (as_completed with a timeout), as Python's TimeoutError.
class TimeoutError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws the exception type that matches info.kind.
[[noreturn]] void throw_failure(const FailureInfo& info);

}  // namespace ferry
