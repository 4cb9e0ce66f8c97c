#include "netns.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "ferry/shared/session.hpp"

namespace ferry::testing {

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kNetnsDir = "/run/netns/";

// Tests may run with a PATH that lacks the sbin folders where iproute2 lives.
std::string find_tool(const std::string& name) {
  std::vector<std::string> dirs{"/usr/sbin", "/sbin", "/usr/bin", "/bin"};
  if (const char* path = std::getenv("PATH")) {
    std::istringstream in(path);
    for (std::string d; std::getline(in, d, ':');)
      if (!d.empty()) dirs.push_back(d);
  }
  for (const auto& d : dirs) {
    const std::string p = d + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return {};
}

const std::string& ip_exe() {
  static const std::string p = find_tool("ip");
  return p;
}

const std::string& tc_exe() {
  static const std::string p = find_tool("tc");
  return p;
}

std::string join(const std::vector<std::string>& args) {
  std::string s;
  for (const auto& a : args)
    s += (s.empty() ? "" : " ") + a;
  return s;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
    s.pop_back();
  return s;
}

// Runs a tool to completion; "" on success, else what went wrong.
std::string try_tool(const std::string& exe, const std::vector<std::string>& args,
                     const std::string& stdin_data = {}) {
  if (exe.empty()) return "iproute2 not found (apt-get install iproute2)";
  const std::string name = exe.substr(exe.rfind('/') + 1);
  const RunResult r = run(exe, args, 30s, stdin_data);
  if (r.timed_out) return name + " " + join(args) + ": timed out";
  if (r.status.code != 0) {
    return name + " " + join(args) + ": " + (r.err.empty() ? "failed" : trim(r.err)) + " (exit " +
           std::to_string(r.status.code) + ")";
  }
  return {};
}

void tool(const std::string& exe, const std::vector<std::string>& args,
          const std::string& stdin_data = {}) {
  if (auto err = try_tool(exe, args, stdin_data); !err.empty()) throw std::runtime_error(err);
}

std::string own_session() {
  const auto id = SessionId::of_pid(static_cast<std::int32_t>(::getpid()));
  return id ? id->str() : std::to_string(::getpid()) + "-0";
}

std::atomic<unsigned> g_next_seq{0};

int pidfd_open(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

pid_t parent_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return -1;
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(stat.substr(close + 2));
  std::string state;
  pid_t ppid = -1;
  rest >> state >> ppid;
  return ppid;
}

// Processes whose network namespace is the one bound at `path` (zombies have none any more).
std::vector<pid_t> pids_in_netns(const std::string& path) {
  std::vector<pid_t> pids;
  struct stat ns {};
  if (::stat(path.c_str(), &ns) != 0) return pids;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return pids;
  const pid_t self = ::getpid();
  while (const dirent* e = ::readdir(d)) {
    const int pid = std::atoi(e->d_name);
    if (pid <= 0 || pid == self) continue;
    struct stat st {};
    const std::string link = std::string("/proc/") + e->d_name + "/ns/net";
    if (::stat(link.c_str(), &st) == 0 && st.st_dev == ns.st_dev && st.st_ino == ns.st_ino)
      pids.push_back(pid);
  }
  ::closedir(d);
  return pids;
}

// SIGKILLs everything inside the namespaces until none is left (bounded), then reaps the
// victims that became our children by being orphaned: nobody else will. Our own children as
// the first look finds them (Child objects, theirs to reap) and `keep` are left alone.
void kill_all_in(const std::vector<std::string>& paths, const std::set<pid_t>& keep = {}) {
  const pid_t self = ::getpid();
  std::set<pid_t> theirs = keep;
  // Taken before any kill: once a parent dies its children are ours too, and must be reaped.
  for (const auto& p : paths) {
    for (const pid_t pid : pids_in_netns(p))
      if (parent_of(pid) == self) theirs.insert(pid);
  }
  std::map<pid_t, int> victims;  // pid -> pidfd
  const auto deadline = Clock::now() + 10s;
  while (Clock::now() < deadline) {
    std::vector<pollfd> waiting;
    for (const auto& p : paths) {
      for (const pid_t pid : pids_in_netns(p)) {
        auto [it, fresh] = victims.try_emplace(pid, -1);
        if (fresh) it->second = pidfd_open(pid);
        if (it->second < 0) continue;  // gone already
        ::syscall(SYS_pidfd_send_signal, it->second, SIGKILL, nullptr, 0);
        waiting.push_back({it->second, POLLIN, 0});
      }
    }
    if (waiting.empty()) break;
    // A pidfd turns readable once its process has exited, after its children were
    // re-parented; the next round sees any process that was started meanwhile.
    for (auto& w : waiting) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) break;
      int r;
      do {
        r = ::poll(&w, 1, static_cast<int>(left.count()));
      } while (r < 0 && errno == EINTR);
    }
  }
  for (const auto& [pid, pidfd] : victims) {
    if (theirs.count(pid) == 0 && parent_of(pid) == self) {
      int st = 0;
      ::waitpid(pid, &st, WNOHANG);
    }
    if (pidfd >= 0) ::close(pidfd);
  }
}

void remove_netns(const std::string& name, std::string& errors) {
  const std::string path = std::string(kNetnsDir) + name;
  if (::access(path.c_str(), F_OK) != 0) return;
  if (auto err = try_tool(ip_exe(), {"netns", "del", name}); !err.empty()) errors += err + "\n";
}

// Owner session of a namespace named "ferry-<pid>-<start ticks>-...", if it has that form.
std::optional<SessionId> owner_of(std::string_view name) {
  if (name.rfind("ferry-", 0) != 0) return std::nullopt;
  name.remove_prefix(6);
  const auto first = name.find('-');
  if (first == std::string_view::npos) return std::nullopt;
  const auto second = name.find('-', first + 1);
  if (second == std::string_view::npos) return std::nullopt;
  return SessionId::parse(name.substr(0, second));
}

std::vector<std::string> netns_names() {
  std::vector<std::string> names;
  DIR* d = ::opendir(std::string(kNetnsDir).c_str());
  if (d == nullptr) return names;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') names.emplace_back(e->d_name);
  }
  ::closedir(d);
  return names;
}

std::string hex8(unsigned v) {
  std::array<char, 16> buf{};
  std::snprintf(buf.data(), buf.size(), "%08x", v);
  return buf.data();
}

Availability probe(bool with_netem) {
  if (ip_exe().empty()) return {"iproute2's `ip` not found (apt-get install iproute2)"};
  if (with_netem && tc_exe().empty()) return {"iproute2's `tc` not found"};
  const std::string ns = "ferry-" + own_session() + "-probe" + (with_netem ? "-netem" : "");
  if (auto err = try_tool(ip_exe(), {"netns", "add", ns}); !err.empty())
    return {"cannot create a network namespace (needs root): " + err};
  std::string err;
  if (with_netem) {
    err = try_tool(tc_exe(),
                   {"-n", ns, "qdisc", "replace", "dev", "lo", "root", "netem", "delay", "1ms"});
    if (!err.empty()) err = "no netem qdisc (kernel without sch_netem?): " + err;
  } else {
    err = try_tool(ip_exe(), {"-n", ns, "-batch", "-"},
                   "link add fprobe0 type veth peer name fprobe1\n"
                   "link add fprobebr type bridge\n");
    if (!err.empty()) err = "cannot make veth pairs or bridges: " + err;
  }
  std::string del_errors;
  remove_netns(ns, del_errors);
  if (err.empty() && !del_errors.empty()) err = "cannot delete a network namespace: " + del_errors;
  return {err};
}

}  // namespace

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    reset();
    fd_ = std::exchange(o.fd_, -1);
  }
  return *this;
}

void Fd::reset() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Availability Testbed::available() {
  static const Availability a = probe(false);
  return a;
}

Availability Testbed::netem_available() {
  static const Availability a = [] {
    auto base = available();
    return base ? probe(true) : base;
  }();
  return a;
}

void Testbed::sweep_stale() {
  for (const auto& name : netns_names()) {
    const auto owner = owner_of(name);
    if (!owner || owner->alive()) continue;
    kill_all_in({std::string(kNetnsDir) + name});
    std::string errors;
    remove_netns(name, errors);
    if (!errors.empty()) std::fprintf(stderr, "netns testbed: sweeping %s", errors.c_str());
  }
}

Testbed::Testbed(std::size_t hosts) {
  if (hosts < 1 || hosts > 200) throw std::invalid_argument("Testbed: 1 to 200 hosts");
  if (ip_exe().empty()) throw std::runtime_error("Testbed: iproute2's `ip` not found");
  sweep_stale();

  const unsigned seq = g_next_seq++;
  const auto pid = static_cast<unsigned>(::getpid());
  prefix_ = "ferry-" + own_session() + "-" + std::to_string(seq) + "-";
  const std::string tag = "f" + hex8((pid << 8) | (seq & 0xffU));
  const unsigned net = pid * 4 + seq % 4;
  subnet_ = "10." + std::to_string(128 + (net >> 8) % 96) + "." + std::to_string(net & 0xffU);
  bridge_ns_ = prefix_ + "br";
  bridge_ = tag + "br";
  hosts_.resize(hosts);
  for (std::size_t i = 0; i < hosts; ++i) {
    auto& h = hosts_[i];
    h.netns_ = prefix_ + "h" + std::to_string(i);
    h.interface_ = tag + "h" + std::to_string(i);
    h.port_ = tag + "p" + std::to_string(i);
    h.address_ = subnet_ + "." + std::to_string(i + 1);
  }
  subnet_ += ".0/24";

  try {
    tool(ip_exe(), {"netns", "add", bridge_ns_});
    for (const auto& h : hosts_)
      tool(ip_exe(), {"netns", "add", h.netns_});
    // Both ends of each veth pair are made from the bridge's namespace, the host's end moved
    // straight into its host: no interface ever exists in the root namespace.
    std::string br = "link add " + bridge_ + " type bridge\nlink set " + bridge_ + " up\n";
    for (const auto& h : hosts_) {
      br += "link add " + h.port_ + " type veth peer name " + h.interface_ + " netns " + h.netns_ +
            "\nlink set " + h.port_ + " master " + bridge_ + "\nlink set " + h.port_ + " up\n";
    }
    ip_batch(bridge_ns_, br);
    for (const auto& h : hosts_) {
      ip_batch(h.netns_, "link set lo up\naddr add " + h.address_ + "/24 dev " + h.interface_ +
                             "\nlink set " + h.interface_ + " up\n");
    }
  } catch (...) {
    destroy();
    throw;
  }
}

Testbed::~Testbed() {
  destroy();
}

void Testbed::ip_batch(const std::string& netns, const std::string& commands) {
  tool(ip_exe(), {"-n", netns, "-batch", "-"}, commands);
}

void Testbed::destroy() noexcept {
  try {
    std::vector<std::string> paths;
    for (const auto& n : namespaces())
      paths.push_back(std::string(kNetnsDir) + n);
    kill_all_in(paths, spawned_);
    std::string errors;
    for (const auto& h : hosts_)
      remove_netns(h.netns_, errors);
    remove_netns(bridge_ns_, errors);
    if (!errors.empty()) std::fprintf(stderr, "netns testbed: cleanup: %s", errors.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "netns testbed: cleanup: %s\n", e.what());
  }
}

std::vector<std::string> Testbed::namespaces() const {
  std::vector<std::string> v;
  for (const auto& h : hosts_)
    v.push_back(h.netns_);
  v.push_back(bridge_ns_);
  return v;
}

std::vector<std::string> Testbed::interfaces() const {
  std::vector<std::string> v;
  for (const auto& h : hosts_) {
    v.push_back(h.interface_);
    v.push_back(h.port_);
  }
  v.push_back(bridge_);
  return v;
}

Child Testbed::spawn(std::size_t i, const std::string& exe, const std::vector<std::string>& args,
                     const SpawnOptions& opt) {
  std::vector<std::string> a{"netns", "exec", host(i).netns_, exe};
  a.insert(a.end(), args.begin(), args.end());
  Child c = testing::spawn(ip_exe(), a, opt);
  spawned_.insert(c.pid());
  return c;
}

Child Testbed::spawn_peer(std::size_t i, std::string_view name,
                          const std::vector<std::string>& args, const SpawnOptions& opt) {
  std::vector<std::string> a{"--ferry-test-peer", std::string(name)};
  a.insert(a.end(), args.begin(), args.end());
  SpawnOptions o = opt;
  o.env.push_back(std::string(kSessionEnv) + "=" + SessionId::current().str());
  return spawn(i, self_exe(), a, o);
}

RunResult Testbed::run(std::size_t i, const std::string& exe, const std::vector<std::string>& args,
                       std::chrono::milliseconds timeout) {
  std::vector<std::string> a{"netns", "exec", host(i).netns_, exe};
  a.insert(a.end(), args.begin(), args.end());
  return testing::run(ip_exe(), a, timeout);
}

Fd Testbed::socket(std::size_t i, int domain, int type) const {
  const std::string path = std::string(kNetnsDir) + host(i).netns_;
  int fd = -1;
  int err = 0;
  // setns(CLONE_NEWNET) moves only the calling thread; a socket keeps the namespace it was
  // made in, whichever thread uses it later.
  std::thread t([&] {
    const int ns = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) {
      err = errno;
    } else {
      fd = ::socket(domain, type | SOCK_CLOEXEC, 0);
      if (fd < 0) err = errno;
    }
    if (ns >= 0) ::close(ns);
  });
  t.join();
  if (fd < 0) throw std::runtime_error("socket in " + path + ": " + std::strerror(err));
  return Fd(fd);
}

Fd Testbed::tcp_connect(std::size_t from, const std::string& address, std::uint16_t port,
                        std::chrono::milliseconds timeout, std::string* why) const {
  auto fail = [&](std::string reason) {
    if (why != nullptr) *why = std::move(reason);
    return Fd();
  };
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  if (::inet_pton(AF_INET, address.c_str(), &sa.sin_addr) != 1)
    return fail("not an IPv4 address: " + address);
  Fd s = socket(from, AF_INET, SOCK_STREAM | SOCK_NONBLOCK);
  if (::connect(s.get(), reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0) {
    if (errno != EINPROGRESS) return fail(std::strerror(errno));
    pollfd p{s.get(), POLLOUT, 0};
    int r;
    do {
      r = ::poll(&p, 1, static_cast<int>(timeout.count()));
    } while (r < 0 && errno == EINTR);
    if (r == 0) return fail("timed out after " + std::to_string(timeout.count()) + " ms");
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return fail(std::strerror(err));
  }
  // Callers read and write with poll deadlines of their own; blocking is simpler for them.
  ::fcntl(s.get(), F_SETFL, ::fcntl(s.get(), F_GETFL) & ~O_NONBLOCK);
  return s;
}

void Testbed::link_down(std::size_t i) {
  tool(ip_exe(), {"-n", bridge_ns_, "link", "set", host(i).port_, "down"});
}

void Testbed::link_up(std::size_t i) {
  tool(ip_exe(), {"-n", bridge_ns_, "link", "set", host(i).port_, "up"});
}

void Testbed::netem(std::size_t i, const std::string& spec) {
  qdisc(i, "netem " + spec);
}

void Testbed::qdisc(std::size_t i, const std::string& spec) {
  auto& h = hosts_.at(i);
  std::vector<std::string> a{"-n", h.netns_, "qdisc", "replace", "dev", h.interface_, "root"};
  std::istringstream words(spec);
  for (std::string w; words >> w;)
    a.push_back(w);
  tool(tc_exe(), a);
  h.shaped_ = true;
}

void Testbed::clear_qdisc(std::size_t i) {
  auto& h = hosts_.at(i);
  if (!h.shaped_) return;
  tool(tc_exe(), {"-n", h.netns_, "qdisc", "del", "dev", h.interface_, "root"});
  h.shaped_ = false;
}

}  // namespace ferry::testing
