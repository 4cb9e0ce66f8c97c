#include "ferry/coordinator/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>

extern char** environ;

namespace ferry::coordinator {

std::string ExitInfo::describe() const {
  if (signal == 0) return "exit code " + std::to_string(code);
  const char* abbrev = sigabbrev_np(signal);
  return "signal " + std::to_string(signal) + (abbrev ? std::string(" (SIG") + abbrev + ")" : "");
}

namespace {

class PosixProcess final : public Process {
 public:
  PosixProcess(pid_t pid, int pidfd) noexcept : pid_(pid), pidfd_(pidfd) {}
  ~PosixProcess() override {
    if (!status_) {
      ::kill(pid_, SIGKILL);
      int ws = 0;
      while (::waitpid(pid_, &ws, 0) < 0 && errno == EINTR) {
      }
    }
    if (pidfd_ >= 0) ::close(pidfd_);
  }
  pid_t pid() const noexcept override { return pid_; }
  int pidfd() const noexcept override { return pidfd_; }
  Status kill(int sig) noexcept override {
    // kill() (e.g. a cancel, under the pool's lock) races with the supervisor's try_reap():
    // read the atomic flag, not status_. A signal after the reap is harmless anyway (ESRCH).
    if (reaped_.load(std::memory_order_acquire)) return {};
    // A pidfd signal cannot hit a recycled pid.
    if (::syscall(SYS_pidfd_send_signal, pidfd_, sig, nullptr, 0) == 0 || errno == ESRCH) return {};
    return Error{Errc::system_error, "kill(" + std::to_string(pid_) + ")", errno};
  }
  std::optional<ExitInfo> try_reap() noexcept override {
    if (status_) return status_;
    int ws = 0;
    pid_t r;
    do {
      r = ::waitpid(pid_, &ws, WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r != pid_) return std::nullopt;
    ExitInfo info;
    if (WIFEXITED(ws)) info.code = WEXITSTATUS(ws);
    if (WIFSIGNALED(ws)) info.signal = WTERMSIG(ws);
    status_ = info;
    reaped_.store(true, std::memory_order_release);
    return status_;
  }

 private:
  pid_t pid_;
  int pidfd_;
  std::optional<ExitInfo> status_;
  std::atomic<bool> reaped_{false};  // status_ is set (readable from any thread)
};

std::vector<std::string> merged_environment(const std::vector<std::string>& extra) {
  std::map<std::string, std::string> env;
  std::vector<std::string> order;
  auto put = [&](const std::string& kv) {
    auto eq = kv.find('=');
    std::string key = kv.substr(0, eq);
    if (!env.count(key)) order.push_back(key);
    env[key] = kv;
  };
  for (char** e = environ; e && *e; ++e)
    put(*e);
  for (const auto& kv : extra)
    put(kv);
  std::vector<std::string> out;
  out.reserve(order.size());
  for (const auto& k : order)
    out.push_back(env[k]);
  return out;
}

}  // namespace

Result<std::unique_ptr<Process>> PosixLauncher::spawn(const SpawnSpec& spec) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  sigset_t empty, defaults;
  sigemptyset(&empty);
  sigemptyset(&defaults);
  for (int s : {SIGINT, SIGTERM, SIGPIPE, SIGCHLD, SIGHUP})
    sigaddset(&defaults, s);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  if (spec.new_process_group) {
    flags |= POSIX_SPAWN_SETPGROUP;
    posix_spawnattr_setpgroup(&attr, 0);
  }
  posix_spawnattr_setflags(&attr, flags);
  if (spec.stdout_fd >= 0) posix_spawn_file_actions_adddup2(&fa, spec.stdout_fd, 1);
  if (spec.stderr_fd >= 0) posix_spawn_file_actions_adddup2(&fa, spec.stderr_fd, 2);
  for (auto [from, to] : spec.fds)
    posix_spawn_file_actions_adddup2(&fa, from, to);

  std::vector<std::string> args{spec.exe};
  args.insert(args.end(), spec.args.begin(), spec.args.end());
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  auto env = merged_environment(spec.env);
  std::vector<char*> envp;
  for (auto& e : env)
    envp.push_back(e.data());
  envp.push_back(nullptr);

  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, spec.exe.c_str(), &fa, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return Error{Errc::system_error, "posix_spawn " + spec.exe, rc};
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    int e = errno;
    ::kill(pid, SIGKILL);
    int ws;
    ::waitpid(pid, &ws, 0);
    return Error{Errc::system_error, "pidfd_open", e};
  }
  return std::unique_ptr<Process>(new PosixProcess(pid, pidfd));
}

std::string self_executable() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return {};
  return std::string(buf, static_cast<std::size_t>(n));
}

}  // namespace ferry::coordinator
