// Child processes behind an interface, so supervision logic can be tested with a fake.
//
// A Process owns one child: its pid and a pidfd (pollable: readable once the child exited).
// The duty to reap is kept by the type: the destructor of a Process whose child has not been
// reaped SIGKILLs it and waits for it, so no zombie and no orphan outlives its handle.
//
// Threading: a Process is used by one thread at a time. Launcher::spawn may be called from any
// thread, but note PR_SET_PDEATHSIG (used by workers) fires when the *thread* that spawned the
// child exits: spawn from a thread that lives as long as the children should.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ferry/shared/error.hpp"

namespace ferry::coordinator {

struct ExitInfo {
  int code = -1;   // exit code if it exited, else -1
  int signal = 0;  // the signal that killed it, else 0
  bool exited() const noexcept { return signal == 0; }
  std::string describe() const;  // "exit code 3" / "signal 9 (SIGKILL)"
};

struct SpawnSpec {
  std::string exe;                       // path (no PATH search)
  std::vector<std::string> args;         // argv[1..]
  std::vector<std::string> env;          // NAME=VALUE added to (or replacing in) environ
  std::vector<std::pair<int, int>> fds;  // (fd here, fd number in the child)
  int stdout_fd = -1;                    // child's stdout (-1: inherit)
  int stderr_fd = -1;                    // child's stderr (-1: inherit)
  bool new_process_group = false;        // setpgid(0, 0): Ctrl-C stays with the parent
};

class Process {
 public:
  virtual ~Process() = default;
  virtual pid_t pid() const noexcept = 0;
  virtual int pidfd() const noexcept = 0;  // -1 if the implementation has none (fakes)
  // Sends sig unless already reaped. Errors only for a reason other than "already gone".
  virtual Status kill(int sig) noexcept = 0;
  // Reaps if it has exited (never blocks); the status once known.
  virtual std::optional<ExitInfo> try_reap() noexcept = 0;
};

class Launcher {
 public:
  virtual ~Launcher() = default;
  virtual Result<std::unique_ptr<Process>> spawn(const SpawnSpec& spec) = 0;
};

// posix_spawn + pidfd_open.
class PosixLauncher final : public Launcher {
 public:
  Result<std::unique_ptr<Process>> spawn(const SpawnSpec& spec) override;
};

// This executable's path (/proc/self/exe), for self-exec workers.
std::string self_executable();

}  // namespace ferry::coordinator
