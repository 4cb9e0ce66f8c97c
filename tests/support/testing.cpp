#include "testing.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <doctest/doctest.h>

#include "ferry/shared/session.hpp"

extern char** environ;

namespace ferry::testing {

namespace {
std::map<std::string, PeerFn>& peers() {
  static std::map<std::string, PeerFn> m;
  return m;
}

ExitStatus decode(int st) {
  ExitStatus e;
  if (WIFEXITED(st)) e.code = WEXITSTATUS(st);
  if (WIFSIGNALED(st)) e.signal = WTERMSIG(st);
  return e;
}

int pidfd_open(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}
}  // namespace

PeerRegistrar::PeerRegistrar(const char* name, PeerFn fn) {
  peers()[name] = std::move(fn);
}

int run_peer_if_requested(int argc, char** argv, bool& was_peer) {
  was_peer = false;
  if (argc < 3 || std::string_view(argv[1]) != "--ferry-test-peer") return 0;
  was_peer = true;
  auto it = peers().find(argv[2]);
  if (it == peers().end()) {
    std::fprintf(stderr, "no test peer named %s\n", argv[2]);
    return 127;
  }
  std::vector<std::string> args(argv + 3, argv + argc);
  return it->second(args);
}

Child::Child(pid_t pid) : pid_(pid), pidfd_(pidfd_open(pid)) {}

Child::Child(Child&& o) noexcept : pid_(o.pid_), pidfd_(o.pidfd_), status_(o.status_) {
  o.pid_ = -1;
  o.pidfd_ = -1;
}

Child& Child::operator=(Child&& o) noexcept {
  if (this != &o) {
    reset();
    pid_ = std::exchange(o.pid_, -1);
    pidfd_ = std::exchange(o.pidfd_, -1);
    status_ = o.status_;
  }
  return *this;
}

Child::~Child() {
  reset();
}

void Child::reset() noexcept {
  if (running()) {
    ::kill(pid_, SIGKILL);
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
  }
  if (pidfd_ >= 0) ::close(pidfd_);
  pid_ = -1;
  pidfd_ = -1;
  status_.reset();
}

std::optional<ExitStatus> Child::wait_for(std::chrono::milliseconds timeout) {
  if (status_) return status_;
  if (pid_ <= 0) return std::nullopt;
  pollfd p{pidfd_, POLLIN, 0};
  int r;
  do {
    r = ::poll(&p, 1, static_cast<int>(timeout.count()));
  } while (r < 0 && errno == EINTR);
  if (r <= 0) return std::nullopt;
  int st = 0;
  pid_t got;
  do {
    got = ::waitpid(pid_, &st, 0);
  } while (got < 0 && errno == EINTR);
  if (got != pid_) return std::nullopt;
  status_ = decode(st);
  return status_;
}

void Child::kill(int sig) const {
  if (running()) ::kill(pid_, sig);
}

std::string self_exe() {
  std::array<char, 4096> buf{};
  const auto n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (n <= 0) throw std::runtime_error("readlink /proc/self/exe failed");
  return std::string(buf.data(), static_cast<std::size_t>(n));
}

Child spawn(const std::string& exe, const std::vector<std::string>& args, const SpawnOptions& opt) {
  std::vector<std::string> argv_s{exe};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s)
    argv.push_back(a.data());
  argv.push_back(nullptr);

  std::vector<std::string> env_s;
  for (char** e = environ; *e != nullptr; ++e)
    env_s.emplace_back(*e);
  env_s.insert(env_s.end(), opt.env.begin(), opt.env.end());
  std::vector<char*> envp;
  for (auto& e : env_s)
    envp.push_back(e.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  for (auto [from, to] : opt.fds) {
    if (from == to) {
      // dup2 onto itself would keep FD_CLOEXEC; go through a spare number instead.
      posix_spawn_file_actions_adddup2(&fa, from, 1000 + to);
      posix_spawn_file_actions_adddup2(&fa, 1000 + to, to);
      posix_spawn_file_actions_addclose(&fa, 1000 + to);
    } else {
      posix_spawn_file_actions_adddup2(&fa, from, to);
    }
  }
  if (opt.stdout_fd >= 0) posix_spawn_file_actions_adddup2(&fa, opt.stdout_fd, 1);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("posix_spawn " + exe + ": " + std::strerror(rc));
  return Child(pid);
}

Child spawn_peer(std::string_view name, const std::vector<std::string>& args,
                 const SpawnOptions& opt) {
  std::vector<std::string> a{"--ferry-test-peer", std::string(name)};
  a.insert(a.end(), args.begin(), args.end());
  SpawnOptions o = opt;
  o.env.push_back(std::string(kSessionEnv) + "=" + SessionId::current().str());
  return spawn(self_exe(), a, o);
}

RunResult run(const std::string& exe, const std::vector<std::string>& args,
              std::chrono::milliseconds timeout, const std::string& stdin_data) {
  int out[2], err[2], in[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0 || ::pipe2(in, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe2 failed");
  SpawnOptions o;
  o.fds = {{in[0], 0}, {err[1], 2}};
  o.stdout_fd = out[1];
  Child c = spawn(exe, args, o);
  ::close(out[1]);
  ::close(err[1]);
  ::close(in[0]);
  // Feed stdin from a thread so a child that writes a lot before reading cannot deadlock us.
  std::thread feeder([fd = in[1], &stdin_data] {
    std::size_t off = 0;
    while (off < stdin_data.size()) {
      const auto n = ::write(fd, stdin_data.data() + off, stdin_data.size() - off);
      if (n <= 0) break;
      off += static_cast<std::size_t>(n);
    }
    ::close(fd);
  });
  RunResult r;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::array<pollfd, 2> pf{{{out[0], POLLIN, 0}, {err[0], POLLIN, 0}}};
  int open_count = 2;
  char buf[65536];
  while (open_count > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      r.timed_out = true;
      c.kill(SIGKILL);
      break;
    }
    const int pr = ::poll(pf.data(), pf.size(), static_cast<int>(left.count()));
    if (pr < 0 && errno == EINTR) continue;
    for (std::size_t i = 0; i < pf.size(); ++i) {
      if (pf[i].fd < 0 || pf[i].revents == 0) continue;
      const auto n = ::read(pf[i].fd, buf, sizeof buf);
      if (n > 0) {
        (i == 0 ? r.out : r.err).append(buf, static_cast<std::size_t>(n));
      } else {
        ::close(pf[i].fd);
        pf[i].fd = -1;
        --open_count;
      }
    }
  }
  for (auto& p : pf) {
    if (p.fd >= 0) ::close(p.fd);
  }
  feeder.join();
  auto st = c.wait_for(std::chrono::seconds(10));
  if (st) r.status = *st;
  return r;
}

PipeFds::PipeFds() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  r = fds[0];
  w = fds[1];
}

PipeFds::PipeFds(PipeFds&& o) noexcept : r(std::exchange(o.r, -1)), w(std::exchange(o.w, -1)) {}

PipeFds::~PipeFds() {
  close_r();
  close_w();
}

void PipeFds::close_r() noexcept {
  if (r >= 0) ::close(std::exchange(r, -1));
}

void PipeFds::close_w() noexcept {
  if (w >= 0) ::close(std::exchange(w, -1));
}

namespace {
// Waits until fd is readable (or hung up) within the time left to `until`.
bool wait_readable(int fd, std::chrono::steady_clock::time_point until) {
  for (;;) {
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}
}  // namespace

std::optional<char> read_byte(int fd, std::chrono::milliseconds timeout) {
  if (!wait_readable(fd, std::chrono::steady_clock::now() + timeout)) return std::nullopt;
  char c = 0;
  ssize_t n;
  while ((n = ::read(fd, &c, 1)) < 0 && errno == EINTR) {
  }
  if (n != 1) return std::nullopt;
  return c;
}

std::string read_line(int fd, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  std::string line;
  for (;;) {
    if (!wait_readable(fd, until)) return {};
    char c = 0;
    ssize_t n;
    while ((n = ::read(fd, &c, 1)) < 0 && errno == EINTR) {
    }
    if (n != 1) return {};
    if (c == '\n') return line;
    line.push_back(c);
  }
}

ReportingPeer spawn_reporting_peer(std::string_view name, const std::vector<std::string>& args,
                                   SpawnOptions opt) {
  ReportingPeer p;
  opt.stdout_fd = p.out.w;
  p.child = spawn_peer(name, args, opt);
  p.out.close_w();  // the peer holds the only write end: its exit is EOF here
  return p;
}

std::string to_hex(const std::vector<std::uint8_t>& bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  s.reserve(2 * bytes.size());
  for (const auto b : bytes) {
    s.push_back(kDigits[b >> 4]);
    s.push_back(kDigits[b & 0xf]);
  }
  return s;
}

std::vector<std::uint8_t> from_hex(std::string_view hex) {
  std::vector<std::uint8_t> out;
  out.reserve(hex.size() / 2);
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<std::uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  return out;
}

void expect_exit(Child& c, int code, std::chrono::milliseconds timeout) {
  const pid_t pid = c.pid();
  auto st = c.wait_for(timeout);
  REQUIRE_MESSAGE(st.has_value(), "peer " << pid << " did not exit");
  CHECK_MESSAGE(st->exited(), "peer " << pid << " killed by signal " << st->signal);
  CHECK_MESSAGE(st->code == code, "peer " << pid << " exit code");
}

std::set<std::string> open_fds() {
  std::set<std::string> fds;
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return fds;
  const int self = ::dirfd(d);
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    if (std::atoi(e->d_name) == self) continue;
    std::array<char, 512> target{};
    const std::string path = std::string("/proc/self/fd/") + e->d_name;
    const auto n = ::readlink(path.c_str(), target.data(), target.size() - 1);
    fds.insert(std::string(e->d_name) + " -> " +
               (n > 0 ? std::string(target.data(), static_cast<std::size_t>(n)) : "?"));
  }
  ::closedir(d);
  return fds;
}

std::set<std::string> shm_segments_of_session() {
  std::set<std::string> out;
  const std::string prefix = "ferry." + SessionId::current().str() + ".";
  DIR* d = ::opendir("/dev/shm");
  if (d == nullptr) return out;
  while (const dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.rfind(prefix, 0) == 0) out.insert(n);
  }
  ::closedir(d);
  return out;
}

namespace {

// The start of /proc/PID/stat: "pid (name) state ppid". The name may hold spaces and ')', so
// the fields resume after the last ')'.
struct ProcStat {
  std::string head;  // "pid (name) state"
  char state = '?';
  int ppid = 0;
};

std::optional<ProcStat> proc_stat(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return std::nullopt;
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(stat.substr(close + 2));
  std::string state;
  ProcStat p;
  rest >> state >> p.ppid;
  p.head = stat.substr(0, close + 2) + state;
  p.state = state.empty() ? '?' : state[0];
  return p;
}

}  // namespace

std::vector<pid_t> child_pids() {
  std::vector<pid_t> kids;
  const pid_t self = ::getpid();
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return kids;
  while (const dirent* e = ::readdir(d)) {
    const int pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    const auto st = proc_stat(e->d_name);
    if (st && st->ppid == self) kids.push_back(pid);
  }
  ::closedir(d);
  return kids;
}

void reap_children_named(const std::string& prefix, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    bool left = false;
    const bool late = std::chrono::steady_clock::now() > until;
    for (const pid_t k : child_pids()) {
      const auto st = proc_stat(std::to_string(k));
      if (!st || st->head.find("(" + prefix) == std::string::npos) continue;
      if (late) ::kill(k, SIGKILL);
      int ws = 0;
      if (::waitpid(k, &ws, late ? 0 : WNOHANG) == 0) left = true;
    }
    if (!left || late) return;
    ::poll(nullptr, 0, 20);  // not our children by birth: no pidfd to wait on
  }
}

LeakCheck::LeakCheck() : fds_(open_fds()), shm_(shm_segments_of_session()) {}

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kLeakSanitizerTracers = true;
#else
constexpr bool kLeakSanitizerTracers = false;
#endif

void LeakCheck::verify() const {
  auto kids = child_pids();
  std::string which;  // "pid (name) state" of each, to tell who it was
  std::vector<pid_t> left;
  for (const pid_t k : kids) {
    const auto st = proc_stat(std::to_string(k));
    // LeakSanitizer checks for leaks at exit from a cloned tracer task that dies with its
    // process. A process SIGKILLed during that check (a worker killed at shutdown on a busy
    // machine) leaves the dead tracer re-parented to us, the subreaper: a zombie that is the
    // sanitizer's, not a leaked process. Reap those in sanitizer builds only; plain builds,
    // which have no tracer, still fail on any zombie.
    if (kLeakSanitizerTracers && st && st->state == 'Z') {
      int ws = 0;
      if (::waitpid(k, &ws, WNOHANG) == k) {
        MESSAGE("reaped a zombie orphan (a LeakSanitizer tracer): " << st->head);
        continue;
      }
    }
    left.push_back(k);
    which += " " + (st ? st->head : std::to_string(k));
  }
  kids = left;
  CHECK_MESSAGE(kids.empty(), "child processes left behind: " << kids.size() << ":" << which);
  const auto shm = shm_segments_of_session();
  for (const auto& s : shm) {
    CHECK_MESSAGE(shm_.count(s) == 1, "shared-memory segment left behind: /dev/shm/" << s);
  }
  const auto fds = open_fds();
  for (const auto& f : fds)
    CHECK_MESSAGE(fds_.count(f) == 1, "fd left open: " << f);
}

}  // namespace ferry::testing
