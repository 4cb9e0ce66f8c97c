// Multi-host: a coordinator and workers on different "hosts" (network namespaces joined by a
// bridge), with links cut, healed and degraded for real. Skips, naming why, where namespaces
// cannot be made (no privilege) or netem is missing.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <deque>
#include <filesystem>

#include "curve_keys.hpp"
#include "ferry/shared/session.hpp"
#include "netns.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;

namespace {

// Lines of a pipe, read with deadlines (readiness messages, not sleeps).
class Lines {
 public:
  explicit Lines(int fd) : fd_(fd) { ::fcntl(fd_, F_SETFL, O_NONBLOCK); }
  ~Lines() { ::close(fd_); }
  // Reads until a line containing needle arrives (true) or the deadline passes / EOF.
  bool wait_for(std::string_view needle, std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      for (; scanned_ < lines_.size(); ++scanned_) {
        if (lines_[scanned_].find(needle) != std::string::npos) {
          ++scanned_;
          return true;
        }
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          until - std::chrono::steady_clock::now());
      if (left.count() <= 0 || eof_) return false;
      pollfd p{fd_, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(left.count()));
      read_some();
    }
  }
  // Everything until EOF (bounded).
  std::string rest(std::chrono::milliseconds timeout) {
    wait_for("\x01never\x01", timeout);
    std::string all;
    for (auto& l : lines_)
      all += l + "\n";
    return all;
  }
  std::size_t count(std::string_view needle) const {
    std::size_t n = 0;
    for (auto& l : lines_)
      n += l.find(needle) != std::string::npos ? 1u : 0u;
    return n;
  }

 private:
  void read_some() {
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n == 0) eof_ = true;
      if (n <= 0) break;
      partial_.append(buf, static_cast<std::size_t>(n));
      std::size_t pos;
      while ((pos = partial_.find('\n')) != std::string::npos) {
        lines_.push_back(partial_.substr(0, pos));
        partial_.erase(0, pos + 1);
      }
    }
  }
  int fd_;
  bool eof_ = false;
  std::string partial_;
  std::vector<std::string> lines_;
  std::size_t scanned_ = 0;
};

struct Coordinator {
  ft::Child child;
  std::unique_ptr<Lines> out, err;
};

Coordinator start_coordinator(ft::Testbed& tb, const std::vector<std::string>& args) {
  int o[2], e[2];
  REQUIRE(::pipe2(o, O_CLOEXEC) == 0);
  REQUIRE(::pipe2(e, O_CLOEXEC) == 0);
  ft::SpawnOptions so;
  so.stdout_fd = o[1];
  so.fds = {{e[1], 2}};
  so.env.push_back(std::string(ferry::kSessionEnv) + "=" + ferry::SessionId::current().str());
  Coordinator c;
  c.child = tb.spawn(0, FERRY_COORDINATOR_EXE, args, so);
  ::close(o[1]);
  ::close(e[1]);
  c.out = std::make_unique<Lines>(o[0]);
  c.err = std::make_unique<Lines>(e[0]);
  return c;
}

std::string listen_on(ft::Testbed& tb) {
  return "tcp://" + tb.host(0).address() + ":5555";
}

bool skip_without_testbed() {
  if (auto ok = ft::Testbed::available(); !ok) {
    MESSAGE("skipped: network namespaces are not available here: " << ok.reason);
    return true;
  }
  return false;
}

// A TCP relay that holds every chunk for a fixed delay in each direction: latency on the path
// where the kernel has no netem. Args: listen port, target address, target port, delay ms.
// Prints "ready" once listening; serves one connection at a time, forever.
FERRY_TEST_PEER(delay_relay) {
  const auto port = static_cast<std::uint16_t>(std::stoi(args.at(0)));
  const std::string target = args.at(1);
  const auto target_port = static_cast<std::uint16_t>(std::stoi(args.at(2)));
  const auto delay = std::chrono::milliseconds(std::stoi(args.at(3)));
  int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(lfd, 4) != 0) {
    return 2;
  }
  std::printf("ready\n");
  std::fflush(stdout);
  using Clock = std::chrono::steady_clock;
  for (;;) {
    int c = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    int u = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in t{};
    t.sin_family = AF_INET;
    t.sin_port = htons(target_port);
    ::inet_pton(AF_INET, target.c_str(), &t.sin_addr);
    if (::connect(u, reinterpret_cast<sockaddr*>(&t), sizeof t) != 0) {
      ::close(c);
      ::close(u);
      continue;
    }
    struct Pending {
      Clock::time_point due;
      std::string bytes;
    };
    std::deque<Pending> to_u, to_c;  // c -> u, u -> c
    bool open = true;
    bool eof = false;  // one side closed: deliver what is queued, then close both
    while (open && !(eof && to_u.empty() && to_c.empty())) {
      auto next = Clock::time_point::max();
      for (auto* q : {&to_u, &to_c}) {
        if (!q->empty()) next = std::min(next, q->front().due);
      }
      int timeout = -1;
      if (next != Clock::time_point::max()) {
        timeout = static_cast<int>(std::max<long>(
            0, std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now()).count()));
      }
      pollfd p[2] = {{eof ? -1 : c, POLLIN, 0}, {eof ? -1 : u, POLLIN, 0}};
      ::poll(p, 2, timeout);
      char buf[65536];
      for (int i = 0; i < 2 && open; ++i) {
        if (!p[i].revents) continue;
        ssize_t n = ::read(p[i].fd, buf, sizeof buf);
        if (n <= 0) {
          eof = true;
          break;
        }
        (i == 0 ? to_u : to_c)
            .push_back({Clock::now() + delay, std::string(buf, static_cast<std::size_t>(n))});
      }
      const auto now = Clock::now();
      for (auto [q, fd] : {std::pair{&to_u, u}, std::pair{&to_c, c}}) {
        while (open && !q->empty() && q->front().due <= now) {
          const auto& b = q->front().bytes;
          if (::write(fd, b.data(), b.size()) != static_cast<ssize_t>(b.size())) open = false;
          q->pop_front();
        }
      }
    }
    ::close(c);
    ::close(u);
  }
}

}  // namespace

TEST_SUITE("coordinator.netns") {
  TEST_CASE("a coordinator and two workers on three hosts complete a map") {
    if (skip_without_testbed()) return;
    ft::LeakCheck leaks;
    {
      ft::Testbed tb(3);
      auto c = start_coordinator(
          tb, {"-w", "0", "--listen", listen_on(tb), "--insecure", "--wait-workers", "2", "map",
               "square", "--range", "0:300", "--chunksize", "5"});
      auto w1 = tb.spawn(1, FERRY_WORKER_EXE, {"--connect", listen_on(tb), "--name", "h1"});
      auto w2 = tb.spawn(2, FERRY_WORKER_EXE, {"--connect", listen_on(tb), "--name", "h2"});
      auto st = c.child.wait_for(60s);
      REQUIRE(st.has_value());
      CHECK(st->code == 0);
      const std::string out = c.out->rest(5s);
      std::string expected;
      for (int i = 0; i < 300; ++i)
        expected += std::to_string(i * i) + "\n";
      CHECK(out == expected);
      const std::string err = c.err->rest(1s);
      CHECK(err.find("from ") != std::string::npos);
      CHECK(c.err->count("joined") == 2);
      CHECK(w1.wait_for(10s).has_value());  // told to shut down at the end
      CHECK(w2.wait_for(10s).has_value());
    }
    leaks.verify();
  }

  TEST_CASE("a cut link re-queues that worker's tasks, and healing it lets the worker rejoin") {
    if (skip_without_testbed()) return;
    ft::LeakCheck leaks;
    {
      ft::Testbed tb(3);
      // 60 tasks of 100 ms over two workers: long enough to cut, see the loss, heal and rejoin.
      std::string items;
      for (int i = 0; i < 60; ++i)
        items += (i ? "," : "") + std::to_string(100 + i);
      auto c = start_coordinator(
          tb, {"-w", "0", "--listen", listen_on(tb), "--insecure", "--heartbeat-interval", "200",
               "--heartbeat-timeout", "1000", "--wait-workers", "2", "map", "sleep_ms", "--items",
               items, "--chunksize", "1"});
      auto w1 = tb.spawn(1, FERRY_WORKER_EXE, {"--connect", listen_on(tb), "--name", "h1"});
      auto w2 = tb.spawn(2, FERRY_WORKER_EXE, {"--connect", listen_on(tb), "--name", "h2"});
      REQUIRE(c.out->wait_for("100", 30s));  // the job is running
      const auto cut = std::chrono::steady_clock::now();
      tb.link_down(1);
      REQUIRE(c.err->wait_for("lost", 10s));
      const auto detected = std::chrono::steady_clock::now() - cut;
      CHECK(detected < 2 * 1000ms + 500ms);  // within 2x the heartbeat timeout (+ slack)
      tb.link_up(1);
      CHECK(c.err->wait_for("joined", 30s));  // h1 reconnected and registered again
      auto st = c.child.wait_for(90s);
      REQUIRE(st.has_value());
      CHECK(st->code == 0);
      const std::string out = c.out->rest(5s);
      std::string expected;
      for (int i = 0; i < 60; ++i)
        expected += std::to_string(100 + i) + "\n";
      CHECK(out == expected);
      // Told to shut down, both exit by themselves (a SIGKILL during an instrumented build's
      // exit-time leak check would orphan the checker).
      CHECK(w1.wait_for(15s).has_value());
      CHECK(w2.wait_for(15s).has_value());
    }
    leaks.verify();
  }

  TEST_CASE("a worker whose key is not authorized gets no task") {
    if (skip_without_testbed()) return;
    ft::LeakCheck leaks;
    const ft::TestKeys keys("ferry-netns-keys-");
    const auto& dir = keys.dir;
    const auto& stranger = keys.stranger;
    {
      ft::Testbed tb(3);
      const std::string ep = "tcp://0.0.0.0:5555";  // non-loopback: keys make it allowed
      auto c = start_coordinator(tb, {"-w", "0", "--listen", ep, "--keys", dir.string(),
                                      "--wait-workers", "1", "map", "square", "--range", "0:50"});
      auto bad = tb.spawn(
          2, FERRY_WORKER_EXE,
          {"--connect", listen_on(tb), "--keys", stranger.string(), "--reconnect-timeout", "3"});
      REQUIRE(c.err->wait_for("is not in authorized_workers", 30s));
      auto good =
          tb.spawn(1, FERRY_WORKER_EXE, {"--connect", listen_on(tb), "--keys", dir.string()});
      auto st = c.child.wait_for(60s);
      REQUIRE(st.has_value());
      CHECK(st->code == 0);
      CHECK(c.out->rest(5s).size() > 0);
      c.err->rest(2s);
      CHECK(c.err->count("joined") == 1);  // only the authorized worker ever registered
      auto b = bad.wait_for(30s);
      REQUIRE(b.has_value());
      CHECK(b->code == 6);
      CHECK(good.wait_for(10s).has_value());
    }
    leaks.verify();
  }

  TEST_CASE("200 ms delay and 5% loss on a worker's link still complete correctly") {
    if (skip_without_testbed()) return;
    ft::LeakCheck leaks;
    {
      ft::Testbed tb(3);
      std::string w1_connect = listen_on(tb);
      ft::Child relay;
      std::unique_ptr<Lines> relay_out;
      if (ft::Testbed::netem_available()) {
        tb.netem(1, "delay 200ms loss 5%");
      } else {
        // No sch_netem in this kernel: the same conditions by other real means. Loss: iptables
        // drops 5% of host 1's packets both ways (TCP must retransmit). Delay: host 1's worker
        // talks through a relay that holds every chunk for 100 ms each way (200 ms per round
        // trip, as netem's 200 ms on one side's egress gives).
        MESSAGE("netem unavailable (" << ft::Testbed::netem_available().reason
                                      << "); using iptables statistic loss + a delay relay");
        const std::string ifc = tb.host(1).interface();
        for (const char* chain : {"INPUT", "OUTPUT"}) {
          auto r = tb.run(1, "/usr/sbin/iptables",
                          {"-A", chain, std::string(chain) == "INPUT" ? "-i" : "-o", ifc, "-m",
                           "statistic", "--mode", "random", "--probability", "0.05", "-j", "DROP"});
          if (r.status.code != 0) {
            MESSAGE("skipped: neither netem nor iptables statistic available: " << r.err);
            return;
          }
        }
        int o[2];
        REQUIRE(::pipe2(o, O_CLOEXEC) == 0);
        ft::SpawnOptions so;
        so.stdout_fd = o[1];
        relay = tb.spawn_peer(1, "delay_relay", {"6000", tb.host(0).address(), "5555", "100"}, so);
        ::close(o[1]);
        relay_out = std::make_unique<Lines>(o[0]);
        REQUIRE(relay_out->wait_for("ready", 10s));
        w1_connect = "tcp://127.0.0.1:6000";
      }
      // A lossy, slow link needs a heartbeat timeout above its worst retransmission delays.
      auto c = start_coordinator(
          tb, {"-w", "0", "--listen", listen_on(tb), "--insecure", "--heartbeat-timeout", "15000",
               "--wait-workers", "2", "map", "square", "--range", "0:200", "--chunksize", "4"});
      auto w1 = tb.spawn(1, FERRY_WORKER_EXE, {"--connect", w1_connect});
      auto w2 = tb.spawn(2, FERRY_WORKER_EXE, {"--connect", listen_on(tb)});
      auto st = c.child.wait_for(120s);
      REQUIRE(st.has_value());
      CHECK(st->code == 0);
      std::string expected;
      for (int i = 0; i < 200; ++i)
        expected += std::to_string(i * i) + "\n";
      CHECK(c.out->rest(5s) == expected);
      const std::string err = c.err->rest(2s);
      CHECK(c.err->count("joined") >= 2);
      // Over a lossy link a connection may still drop and be re-made (the worker rejoins and
      // its tasks move); what must hold is the complete, correct output above.
      WARN_MESSAGE(err.find("lost") == std::string::npos, err);
      // Usually both workers complete chunks ("w1 12, w2 38;"); on a loaded machine the fast
      // one may finish first, which is correct behaviour, so this is reported, not asserted.
      const auto summary = err.substr(err.find("chunks per worker:"));
      WARN_MESSAGE(summary.find(" 0,") == std::string::npos, summary);
      WARN_MESSAGE(summary.find(" 0;") == std::string::npos, summary);
      CHECK(w2.wait_for(15s).has_value());
      if (w1.running()) w1.kill(SIGKILL);
      if (relay.running()) relay.kill(SIGKILL);
    }
    leaks.verify();
  }
}
