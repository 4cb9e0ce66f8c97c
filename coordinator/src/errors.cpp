#include <cstring>
#include <string>

#include "ferry/coordinator/errors.hpp"

namespace ferry {

std::string describe(const FailureInfo& f) {
  std::string s = "task " + std::to_string(f.task_id);
  if (!f.task.empty()) s += " (" + f.task + ")";
  if (f.item >= 0) s += " item " + std::to_string(f.item);
  auto where = [&] {
    std::string w;
    if (f.pid) w += " on worker pid " + std::to_string(f.pid);
    if (!f.host.empty()) w += " at " + f.host;
    return w;
  };
  auto attempts = [&] {
    if (f.max_attempts == 0) return std::string();
    return "; attempt " + std::to_string(f.attempt) + "/" + std::to_string(f.max_attempts) +
           " (retry " + std::to_string(f.attempt > 0 ? f.attempt - 1 : 0) + "/" +
           std::to_string(f.max_attempts - 1) + ")";
  };
  switch (f.kind) {
    case FailureKind::remote_error:
      return "RemoteError: " + s + " raised " + f.type + ": " + f.message + where();
    case FailureKind::worker_died: {
      std::string how;
      if (f.signal) {
        const char* a = sigabbrev_np(f.signal);
        how = "killed by signal " + std::to_string(f.signal) +
              (a ? std::string(" (SIG") + a + ")" : "");
      } else {
        how = "exited with code " + std::to_string(f.exit_code);
      }
      return "WorkerDied: " + s + ": worker" + (f.pid ? " pid " + std::to_string(f.pid) : "") +
             (f.host.empty() ? "" : " at " + f.host) + " " + how + attempts() +
             (f.message.empty() ? "" : "; " + f.message);
    }
    case FailureKind::timeout:
      return "TaskTimeout: " + s + " " + f.message + where() + attempts();
    case FailureKind::cancelled:
      return "Cancelled: " + s + (f.message.empty() ? "" : ": " + f.message);
    case FailureKind::rejected:
      return "Rejected: " + s + ": " + f.message;
    case FailureKind::continuation_error:
      return "ContinuationError: the continuation of " + s + " raised " + f.type + ": " + f.message;
    case FailureKind::dependency_failed:
      return "DependencyFailed: " + s + " did not run: " + f.message;
    case FailureKind::actor_died:
      return "ActorDied: " + s + ": " + f.message;
  }
  return s;
}

void throw_failure(const FailureInfo& info) {
  switch (info.kind) {
    case FailureKind::remote_error:
      throw RemoteError(info);
    case FailureKind::worker_died:
      throw WorkerDied(info);
    case FailureKind::timeout:
      throw TaskTimeout(info);
    case FailureKind::cancelled:
      throw Cancelled(info);
    case FailureKind::rejected:
      throw Rejected(info);
    case FailureKind::continuation_error:
      throw ContinuationError(info);
    case FailureKind::dependency_failed:
      throw DependencyFailed(info);
    case FailureKind::actor_died:
      throw ActorDied(info);
  }
  throw TaskFailure(info);
}

}  // namespace ferry
