// The network-namespace testbed (support/netns.hpp): hosts reach each other, a process spawned
// in a host runs there under the pid its Child holds, link_down partitions and link_up heals,
// qdiscs (netem where the kernel has it, tbf otherwise) slow traffic measurably, and nothing
// is left once the testbed is gone. Every test skips, naming the reason, where namespaces
// cannot be made (not root, no iproute2).
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "netns.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
using ferry::testing::Child;
using ferry::testing::Fd;
using ferry::testing::SpawnOptions;
using ferry::testing::Testbed;
using Clock = std::chrono::steady_clock;

namespace {

// Skips the calling test (with the reason in the log) where a testbed cannot be made.
#define REQUIRE_TESTBED()                                                \
  do {                                                                   \
    if (const auto ok = Testbed::available(); !ok) {                     \
      MESSAGE("skipped: network namespaces unavailable: " << ok.reason); \
      return;                                                            \
    }                                                                    \
  } while (false)

struct Pipe {
  Fd r, w;
  Pipe() {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    r = Fd(fds[0]);
    w = Fd(fds[1]);
  }
};

// One line (without '\n') from fd, or nullopt at EOF or when the deadline passes.
std::optional<std::string> read_line(int fd, Clock::time_point deadline) {
  std::string line;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return std::nullopt;
    char c = 0;
    const auto n = ::read(fd, &c, 1);
    if (n <= 0) return std::nullopt;
    if (c == '\n') return line;
    line += c;
  }
}

std::optional<std::string> read_line(int fd, std::chrono::milliseconds timeout) {
  return read_line(fd, Clock::now() + timeout);
}

bool write_all(int fd, std::string_view s) {
  while (!s.empty()) {
    const auto n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    s.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

ino_t inode_of(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

// The echo peer inside `host`; returns its Child and port once it has said it listens.
std::pair<Child, std::uint16_t> start_echo(Testbed& tb, std::size_t host) {
  Pipe out;
  SpawnOptions o;
  o.stdout_fd = out.w.get();
  Child server = tb.spawn_peer(host, "netns_echo", {}, o);
  out.w.reset();
  const auto ready = read_line(out.r.get(), 20s);
  REQUIRE_MESSAGE(ready, "echo peer did not say it listens");
  REQUIRE(ready->rfind("ready ", 0) == 0);
  return {std::move(server), static_cast<std::uint16_t>(std::stoi(ready->substr(6)))};
}

// A connection from `from` to the echo peer, past its greeting (which names the caller).
Fd connect_echo(Testbed& tb, std::size_t from, std::size_t to, std::uint16_t port) {
  std::string why;
  Fd c = tb.tcp_connect(from, tb.host(to).address(), port, 5s, &why);
  REQUIRE_MESSAGE(c, "connect: " << why);
  const auto hello = read_line(c.get(), 5s);
  REQUIRE(hello);
  CHECK(*hello == "peer " + tb.host(from).address());
  return c;
}

// One round trip of a short line through the echo peer.
std::optional<Clock::duration> round_trip(int fd, std::chrono::milliseconds timeout) {
  const auto t0 = Clock::now();
  if (!write_all(fd, "x\n")) return std::nullopt;
  const auto back = read_line(fd, timeout);
  if (!back || *back != "x") return std::nullopt;
  return Clock::now() - t0;
}

// Sends `bytes` through the echo peer and reads them all back; the time it took.
std::optional<Clock::duration> bulk_round_trip(int fd, std::size_t bytes,
                                               std::chrono::milliseconds timeout) {
  const auto t0 = Clock::now();
  const auto deadline = t0 + timeout;
  std::vector<char> buf(16384, 'b');
  std::size_t sent = 0, got = 0;
  while (got < bytes) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return std::nullopt;
    // Read and write together: the peer echoes while we send, and must not block on us.
    pollfd p{fd, static_cast<short>(POLLIN | (sent < bytes ? POLLOUT : 0)), 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    if ((p.revents & POLLOUT) != 0) {
      const auto n =
          ::send(fd, buf.data(), std::min(buf.size(), bytes - sent), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) sent += static_cast<std::size_t>(n);
    }
    if ((p.revents & POLLIN) != 0) {
      std::array<char, 16384> in{};
      const auto n = ::recv(fd, in.data(), in.size(), MSG_DONTWAIT);
      if (n == 0) return std::nullopt;
      if (n > 0) got += static_cast<std::size_t>(n);
    }
  }
  return Clock::now() - t0;
}

// `ip ARGS` through the shell, with the sbin folders a test's PATH may lack.
ferry::testing::RunResult ip(const std::string& args) {
  return ferry::testing::run("/bin/sh", {"-c", "PATH=/usr/sbin:/sbin:$PATH ip " + args}, 10s);
}

std::chrono::milliseconds ms(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d);
}

}  // namespace

// Listens on an ephemeral port of every address of its host, says "ready <port>" on stdout,
// then greets each connection with "peer <caller's address>" and echoes what it receives.
FERRY_TEST_PEER(netns_echo) {
  const int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  if (ls < 0 || ::bind(ls, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0 ||
      ::listen(ls, 16) != 0)
    return 1;
  socklen_t len = sizeof sa;
  ::getsockname(ls, reinterpret_cast<sockaddr*>(&sa), &len);
  std::printf("ready %u\n", static_cast<unsigned>(ntohs(sa.sin_port)));
  std::fflush(stdout);
  std::vector<pollfd> fds{{ls, POLLIN, 0}};
  std::vector<char> buf(65536);
  for (;;) {
    if (::poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) return 1;
    for (std::size_t i = fds.size(); i-- > 0;) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == ls) {
        sockaddr_in peer{};
        socklen_t plen = sizeof peer;
        const int c = ::accept4(ls, reinterpret_cast<sockaddr*>(&peer), &plen, SOCK_CLOEXEC);
        if (c < 0) continue;
        std::array<char, INET_ADDRSTRLEN> addr{};
        ::inet_ntop(AF_INET, &peer.sin_addr, addr.data(), addr.size());
        write_all(c, "peer " + std::string(addr.data()) + "\n");
        fds.push_back({c, POLLIN, 0});
        continue;
      }
      const auto n = ::recv(fds[i].fd, buf.data(), buf.size(), 0);
      if (n <= 0 || !write_all(fds[i].fd, {buf.data(), static_cast<std::size_t>(n)})) {
        ::close(fds[i].fd);
        fds.erase(fds.begin() + static_cast<std::ptrdiff_t>(i));
      }
    }
  }
}

// Connects to ADDRESS PORT (args) and prints the echo peer's greeting.
FERRY_TEST_PEER(netns_hello) {
  if (args.size() != 2) return 2;
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<std::uint16_t>(std::stoi(args[1])));
  ::inet_pton(AF_INET, args[0].c_str(), &sa.sin_addr);
  if (s < 0 || ::connect(s, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0) return 1;
  const auto hello = read_line(s, 10s);
  if (!hello) return 1;
  std::printf("%s\n", hello->c_str());
  return 0;
}

// Prints why a testbed cannot be made here ("" if it can).
FERRY_TEST_PEER(netns_why_unavailable) {
  std::printf("%s\n", Testbed::available().reason.c_str());
  return 0;
}

TEST_SUITE("support.netns") {
  TEST_CASE("two hosts reach each other over TCP and see each other's addresses") {
    REQUIRE_TESTBED();
    ferry::testing::LeakCheck leaks;
    {
      Testbed tb(2);
      CHECK(tb.host(0).address() != tb.host(1).address());
      CHECK(tb.host(0).address().rfind(tb.subnet().substr(0, tb.subnet().size() - 4), 0) == 0);
      auto [server, port] = start_echo(tb, 0);

      // From a socket of host 1 made in this process...
      Fd c = connect_echo(tb, 1, 0, port);
      REQUIRE(write_all(c.get(), "hello\n"));
      CHECK(read_line(c.get(), 5s) == "hello");

      // ...and from a process running inside host 1.
      const auto r =
          tb.run(1, ferry::testing::self_exe(),
                 {"--ferry-test-peer", "netns_hello", tb.host(0).address(), std::to_string(port)});
      CHECK(r.status.code == 0);
      CHECK(r.out == "peer " + tb.host(1).address() + "\n");
    }
    leaks.verify();
  }

  TEST_CASE("a process spawned in a host runs in its namespace under the pid its Child holds") {
    REQUIRE_TESTBED();
    ferry::testing::LeakCheck leaks;
    {
      Testbed tb(2);
      auto [server, port] = start_echo(tb, 1);
      const std::string proc = "/proc/" + std::to_string(server.pid());
      CHECK(inode_of(proc + "/ns/net") == inode_of("/run/netns/" + tb.host(1).netns()));
      CHECK(inode_of(proc + "/ns/net") != inode_of("/proc/self/ns/net"));
      CHECK(inode_of(proc + "/exe") == inode_of(ferry::testing::self_exe()));
      // Killing the Child kills the program itself: its port stops answering.
      server.kill(SIGKILL);
      const auto st = server.wait_for(10s);
      REQUIRE(st);
      CHECK(st->signal == SIGKILL);
      std::string why;
      CHECK_FALSE(tb.tcp_connect(0, tb.host(1).address(), port, 5s, &why));
      CHECK(why == std::strerror(ECONNREFUSED));
    }
    leaks.verify();
  }

  TEST_CASE("link_down partitions a host within a bounded time and link_up heals it") {
    REQUIRE_TESTBED();
    ferry::testing::LeakCheck leaks;
    {
      Testbed tb(2);
      auto [server, port] = start_echo(tb, 0);
      Fd c = connect_echo(tb, 1, 0, port);

      tb.link_down(0);
      // New connections get no answer (dropped, not refused)...
      std::string why;
      CHECK_FALSE(tb.tcp_connect(1, tb.host(0).address(), port, 500ms, &why));
      CHECK(why.rfind("timed out", 0) == 0);
      // ...and what is sent on an open one is not echoed.
      REQUIRE(write_all(c.get(), "during\n"));
      CHECK_FALSE(read_line(c.get(), 1s));

      tb.link_up(0);
      // TCP retransmits what was sent during the partition (backoff: seconds, bounded).
      CHECK(read_line(c.get(), 30s) == "during");
      CHECK(round_trip(c.get(), 5s));
      Fd again = tb.tcp_connect(1, tb.host(0).address(), port, 5s, &why);
      CHECK_MESSAGE(again, "connect after link_up: " << why);
    }
    leaks.verify();
  }

  TEST_CASE("netem delay measurably lengthens a round trip and clear_netem removes it") {
    REQUIRE_TESTBED();
    if (const auto ok = Testbed::netem_available(); !ok) {
      MESSAGE("skipped: " << ok.reason);
      return;
    }
    ferry::testing::LeakCheck leaks;
    {
      Testbed tb(2);
      auto [server, port] = start_echo(tb, 0);
      Fd c = connect_echo(tb, 1, 0, port);
      // netem holds every packet host 0 sends for at least the delay: a lower bound, which
      // load on the machine can only lengthen, so it is safe to assert.
      tb.netem(0, "delay 200ms");
      for (int i = 0; i < 3; ++i) {
        const auto rtt = round_trip(c.get(), 10s);
        REQUIRE(rtt);
        CHECK(ms(*rtt) >= 200ms);
      }
      tb.clear_netem(0);
      std::vector<Clock::duration> rtts;
      for (int i = 0; i < 5; ++i) {
        const auto rtt = round_trip(c.get(), 10s);
        REQUIRE(rtt);
        rtts.push_back(*rtt);
      }
      std::sort(rtts.begin(), rtts.end());
      CHECK(ms(rtts[2]) < 200ms);
    }
    leaks.verify();
  }

  TEST_CASE("a tbf qdisc on a host measurably slows what it sends and clear_qdisc removes it") {
    REQUIRE_TESTBED();
    ferry::testing::LeakCheck leaks;
    {
      Testbed tb(2);
      auto [server, port] = start_echo(tb, 0);
      Fd c = connect_echo(tb, 1, 0, port);
      // 256 KiB echoed back through host 0 at 2 Mbit/s: (256 - 16 KiB burst) * 8 / 2000 kbit/s
      // is at least 0.98 s whatever the load, and milliseconds without the qdisc.
      constexpr std::size_t kBytes = 256 * 1024;
      tb.qdisc(0, "tbf rate 2mbit burst 16kb latency 2s");
      const auto shaped = bulk_round_trip(c.get(), kBytes, 60s);
      REQUIRE(shaped);
      CHECK(ms(*shaped) >= 950ms);
      tb.clear_qdisc(0);
      const auto plain = bulk_round_trip(c.get(), kBytes, 60s);
      REQUIRE(plain);
      CHECK(ms(*plain) < 950ms);
      MESSAGE("256 KiB echo: " << ms(*shaped).count() << " ms shaped, " << ms(*plain).count()
                               << " ms plain");
    }
    leaks.verify();
  }

  TEST_CASE("destroying a testbed kills what runs inside and leaves no namespace or interface") {
    REQUIRE_TESTBED();
    ferry::testing::LeakCheck leaks;
    std::vector<std::string> names, interfaces;
    Child survivor;  // outlives the testbed, as a test's Child may
    pid_t orphan = -1;
    {
      Testbed tb(3);
      names = tb.namespaces();
      interfaces = tb.interfaces();
      REQUIRE(names.size() == 4);
      REQUIRE(interfaces.size() == 7);
      // A shell in host 2 that leaves a background child behind, to be orphaned when its
      // parent dies; it prints that child's pid when both exist.
      Pipe out;
      SpawnOptions o;
      o.stdout_fd = out.w.get();
      survivor = tb.spawn(2, "/bin/sh", {"-c", "sleep 300 & echo $!; exec sleep 300"}, o);
      out.w.reset();
      const auto line = read_line(out.r.get(), 10s);
      REQUIRE(line);
      orphan = std::stoi(*line);
    }
    const auto st = survivor.wait_for(10s);
    REQUIRE(st);
    CHECK(st->signal == SIGKILL);
    survivor = Child();
    // The orphan was re-parented to this (subreaper) process and reaped by the testbed.
    const auto kids = ferry::testing::child_pids();
    CHECK(std::find(kids.begin(), kids.end(), orphan) == kids.end());

    const auto netns = ip("netns list");
    REQUIRE(netns.status.code == 0);
    for (const auto& n : names) {
      CHECK_MESSAGE(netns.out.find(n) == std::string::npos, "namespace left: " << n);
      CHECK(::access(("/run/netns/" + n).c_str(), F_OK) != 0);
    }
    const auto links = ip("-o link show");
    REQUIRE(links.status.code == 0);
    for (const auto& i : interfaces)
      CHECK_MESSAGE(links.out.find(i) == std::string::npos, "interface left: " << i);
    leaks.verify();
  }

  TEST_CASE("a new testbed removes the namespaces of a test process that no longer runs") {
    REQUIRE_TESTBED();
    ferry::testing::LeakCheck leaks;
    // A pid that ran and is gone, with the start time a live process of that pid cannot have.
    Child gone = ferry::testing::spawn("/bin/true", {});
    REQUIRE(gone.wait_for(10s));
    const std::string stale = "ferry-" + std::to_string(gone.pid()) + "-1-0-h0";
    gone = Child();
    const auto add = ip("netns add " + stale);
    REQUIRE(add.status.code == 0);
    {
      Testbed tb(1);
      CHECK(::access(("/run/netns/" + stale).c_str(), F_OK) != 0);
    }
    if (::access(("/run/netns/" + stale).c_str(), F_OK) == 0) ip("netns del " + stale);
    leaks.verify();
  }

  TEST_CASE("without privileges available() says why, so tests can skip naming it") {
    REQUIRE_TESTBED();
    if (::access("/usr/bin/setpriv", X_OK) != 0) {
      MESSAGE("skipped: setpriv (util-linux) not found");
      return;
    }
    ferry::testing::LeakCheck leaks;
    const auto r = ferry::testing::run(
        "/usr/bin/setpriv",
        {"--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
         ferry::testing::self_exe(), "--ferry-test-peer", "netns_why_unavailable"},
        30s);
    REQUIRE(r.status.code == 0);
    CHECK(r.out.find("cannot create a network namespace") != std::string::npos);
    MESSAGE("as nobody: " << r.out);
    leaks.verify();
  }
}
