// Test support: real child processes (self-exec "peers"), bounded waits, leftover checks.
//
// A test binary's main() (support/main.cpp) runs doctest, unless started as
//   <test-binary> --ferry-test-peer NAME ARGS...
// in which case it runs the peer body registered under NAME with FERRY_TEST_PEER and exits
// with its return value. Tests start peers with spawn_peer(); a Child that goes out of scope
// still running is SIGKILLed and reaped, so no test leaves a process behind.
// The test process is a child subreaper, so orphaned grandchildren are reaped by it too and
// show up in LeakCheck.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ferry::testing {

using PeerFn = std::function<int(const std::vector<std::string>& args)>;

struct PeerRegistrar {
  PeerRegistrar(const char* name, PeerFn fn);
};

#define FERRY_TEST_PEER_CAT2(a, b) a##b
#define FERRY_TEST_PEER_CAT(a, b) FERRY_TEST_PEER_CAT2(a, b)
// FERRY_TEST_PEER(name) { body using `args`; return exit code; }
#define FERRY_TEST_PEER(name)                                                         \
  static int ferry_test_peer_##name(const std::vector<std::string>& args);            \
  static const ::ferry::testing::PeerRegistrar FERRY_TEST_PEER_CAT(ferry_reg_, name)( \
      #name, ferry_test_peer_##name);                                                 \
  static int ferry_test_peer_##name([[maybe_unused]] const std::vector<std::string>& args)

// Exit status decoded from waitpid.
struct ExitStatus {
  int code = -1;   // exit code if exited normally, else -1
  int signal = 0;  // terminating signal, else 0
  bool exited() const noexcept { return signal == 0; }
};

class Child {
 public:
  Child() = default;
  explicit Child(pid_t pid);
  Child(Child&& o) noexcept;
  Child& operator=(Child&& o) noexcept;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child();  // SIGKILL + reap if still running

  pid_t pid() const noexcept { return pid_; }
  bool running() const noexcept { return pid_ > 0 && !status_; }
  // Waits (on a pidfd, no polling) up to timeout; nullopt if still running.
  std::optional<ExitStatus> wait_for(std::chrono::milliseconds timeout);
  void kill(int sig) const;

 private:
  void reset() noexcept;
  pid_t pid_ = -1;
  int pidfd_ = -1;
  std::optional<ExitStatus> status_;
};

struct SpawnOptions {
  // (fd in this process, fd number in the child)
  std::vector<std::pair<int, int>> fds;
  std::vector<std::string> env;  // extra NAME=VALUE entries
  int stdout_fd = -1;            // if >= 0, child's stdout goes here
};

// Starts this test binary as peer `name` (FERRY_SESSION set to this process's session).
Child spawn_peer(std::string_view name, const std::vector<std::string>& args = {},
                 const SpawnOptions& opt = {});
// Starts an executable by path.
Child spawn(const std::string& exe, const std::vector<std::string>& args,
            const SpawnOptions& opt = {});

std::string self_exe();

// Runs exe with args to completion (bounded by timeout), capturing stdout and stderr.
struct RunResult {
  ExitStatus status;
  std::string out;
  std::string err;
  bool timed_out = false;
};
RunResult run(const std::string& exe, const std::vector<std::string>& args,
              std::chrono::milliseconds timeout = std::chrono::seconds(60),
              const std::string& stdin_data = {});

// A pipe with both ends O_CLOEXEC (spawn() dup2s the end a peer gets), closed on destruction.
// Throws std::runtime_error if pipe2 fails.
struct PipeFds {
  int r = -1;
  int w = -1;
  PipeFds();
  ~PipeFds();
  PipeFds(PipeFds&& o) noexcept;
  PipeFds& operator=(PipeFds&&) = delete;
  PipeFds(const PipeFds&) = delete;
  PipeFds& operator=(const PipeFds&) = delete;
  void close_r() noexcept;
  void close_w() noexcept;
};

// One byte / one line (without its '\n') from fd within timeout; nullopt / "" on timeout or
// EOF. Interrupted waits are resumed.
std::optional<char> read_byte(int fd, std::chrono::milliseconds timeout);
std::string read_line(int fd, std::chrono::milliseconds timeout);

// A peer whose stdout is a pipe back to the test, for peers that say where they are with a
// printed line ("ready", an endpoint, "claimed 7"). The test keeps only the read end, so
// line() returns "" once the peer has exited.
struct ReportingPeer {
  Child child;
  PipeFds out;
  std::string line(std::chrono::milliseconds timeout) { return read_line(out.r, timeout); }
};
ReportingPeer spawn_reporting_peer(std::string_view name, const std::vector<std::string>& args = {},
                                   SpawnOptions opt = {});

// Bytes as lowercase hex and back, to pass a serialized value (a handle) as a peer argument.
std::string to_hex(const std::vector<std::uint8_t>& bytes);
std::vector<std::uint8_t> from_hex(std::string_view hex);

// REQUIREs that c exits within timeout, then CHECKs that it exited normally with `code`.
void expect_exit(Child& c, int code = 0,
                 std::chrono::milliseconds timeout = std::chrono::seconds(60));

// Snapshot of what a test could leak; compare with LeakCheck at the end of a test.
std::set<std::string> open_fds();
std::set<std::string> shm_segments_of_session();  // /dev/shm/ferry.<this session>.*
std::vector<pid_t> child_pids();
// Waits up to `timeout` for children of this process whose name starts with `prefix` (helpers
// a program like Chromium leaves behind, re-parented to us as the subreaper) to end, reaps
// them, and SIGKILLs and reaps any still running then.
void reap_children_named(const std::string& prefix,
                         std::chrono::milliseconds timeout);  // alive or zombie children

// Records fds, shm segments and children at construction; verify() CHECKs they are back.
class LeakCheck {
 public:
  LeakCheck();
  void verify() const;

 private:
  std::set<std::string> fds_;
  std::set<std::string> shm_;
};

// Collects a pool's event lines (PoolOptions::on_event) from any thread.
struct Events {
  std::mutex m;
  std::vector<std::string> lines;
  std::function<void(std::string_view)> sink() {
    return [this](std::string_view l) {
      std::lock_guard lk(m);
      lines.emplace_back(l);
    };
  }
  bool has(std::string_view needle) {
    std::lock_guard lk(m);
    for (auto& l : lines) {
      if (l.find(needle) != std::string::npos) return true;
    }
    return false;
  }
};

}  // namespace ferry::testing
