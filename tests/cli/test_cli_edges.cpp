// ferry-coordinator's command-line edges: signals while it waits (for workers, for stdin), a
// stdout that cannot be written, option values out of range, addresses, log levels.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "ferry/shared/session.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;
using Clock = std::chrono::steady_clock;

namespace {

std::string session_env() {
  return std::string(ferry::kSessionEnv) + "=" + ferry::SessionId::current().str();
}

// A coordinator (or worker) whose stdout and stderr come back on pipes; stdin is a pipe the
// test holds when asked for, else the test's own.
struct Running {
  ft::Child child;
  ft::PipeFds out, err, in;
};

Running start(const std::string& exe, const std::vector<std::string>& args, bool pipe_stdin = false,
              int stdout_fd = -1) {
  Running r;
  ft::SpawnOptions o;
  o.env.push_back(session_env());
  o.fds.emplace_back(r.err.w, 2);
  if (pipe_stdin) o.fds.emplace_back(r.in.r, 0);
  o.stdout_fd = stdout_fd >= 0 ? stdout_fd : r.out.w;
  r.child = ft::spawn(exe, args, o);
  // The child holds the only other ends: its exit is EOF here, a closed stdin EOF there.
  r.out.close_w();
  r.err.close_w();
  r.in.close_r();
  return r;
}

// Reads lines from fd (appending them to `seen`) until one contains `what`; that line, or ""
// if the stream ended or `timeout` passed first.
std::string read_until(int fd, const std::string& what, std::string& seen,
                       std::chrono::milliseconds timeout = 30s) {
  const auto until = Clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    if (left.count() <= 0) return {};
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    const std::string line = ft::read_line(fd, left);
    if (line.empty() && p.revents & POLLHUP && !(p.revents & POLLIN)) return {};
    seen += line + "\n";
    if (line.find(what) != std::string::npos) return line;
  }
}

// Everything left on fd until EOF (bounded by timeout).
std::string read_rest(int fd, std::chrono::milliseconds timeout = 30s) {
  const auto until = Clock::now() + timeout;
  std::string s;
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    if (left.count() <= 0) return s;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    const auto n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return s;
    s.append(buf, static_cast<std::size_t>(n));
  }
}

void write_all(int fd, const std::string& s) {
  REQUIRE(::write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size()));
}

// Whether this host has an IPv6 loopback to bind (containers may have IPv6 disabled).
bool have_ipv6_loopback() {
  const int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  const bool ok = ::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// The endpoint in "ferry: listening on ENDPOINT; waiting for ...".
std::string listened_endpoint(const std::string& line) {
  const std::string on = "listening on ";
  const auto b = line.find(on);
  if (b == std::string::npos) return {};
  const auto e = line.find(';', b);
  return line.substr(b + on.size(), e - b - on.size());
}

}  // namespace

TEST_SUITE("cli.edges") {
  TEST_CASE("SIGINT or SIGTERM while waiting for remote workers: exit 130 within 2 s") {
    ft::LeakCheck leaks;
    for (int sig : {SIGINT, SIGTERM}) {
      CAPTURE(sig);
      auto c =
          start(FERRY_COORDINATOR_EXE, {"-w", "0", "--listen", "tcp://127.0.0.1:0",
                                        "--wait-workers", "1", "map", "square", "--range", "0:10"});
      std::string err;
      REQUIRE(!read_until(c.err.r, "waiting for 1 worker(s)", err).empty());
      const auto t0 = Clock::now();
      c.child.kill(sig);
      auto st = c.child.wait_for(5s);
      REQUIRE(st.has_value());
      CHECK(st->code == 130);
      CHECK(Clock::now() - t0 < 2s);
      err += read_rest(c.err.r);
      CHECK_MESSAGE(err.find("interrupted while waiting for workers") != std::string::npos, err);
    }
    leaks.verify();
  }

  TEST_CASE("SIGINT or SIGTERM while --stdin waits: exit 130, a partial line is not an item") {
    ft::LeakCheck leaks;
    for (int sig : {SIGINT, SIGTERM}) {
      CAPTURE(sig);
      auto c = start(FERRY_COORDINATOR_EXE,
                     {"-w", "1", "map", "square", "--stdin", "--chunksize", "1"}, true);
      write_all(c.in.w, "5\n");
      // The first result is out: the job runs and the next read waits for more input.
      CHECK(ft::read_line(c.out.r, 30s) == "25");
      if (sig == SIGINT) write_all(c.in.w, "7");  // a last line still being written
      const auto t0 = Clock::now();
      c.child.kill(sig);
      auto st = c.child.wait_for(5s);
      REQUIRE(st.has_value());
      CHECK(st->code == 130);
      CHECK(Clock::now() - t0 < 2s);
      CHECK(read_rest(c.out.r) == "");  // 7 was never mapped
    }
    leaks.verify();
  }

  TEST_CASE("SIGINT or SIGTERM while results wait for a reader that stopped: exit 130 in 2 s") {
    ft::LeakCheck leaks;
    for (int sig : {SIGINT, SIGTERM}) {
      CAPTURE(sig);
      auto c = start(FERRY_COORDINATOR_EXE, {"-w", "2", "map", "square", "--range", "0:1000000"});
      // One line read, then no more: the coordinator fills the pipe and blocks in write().
      CHECK(ft::read_line(c.out.r, 30s) == "0");
      const auto t0 = Clock::now();
      c.child.kill(sig);
      auto st = c.child.wait_for(5s);
      REQUIRE(st.has_value());
      CHECK(st->code == 130);
      CHECK(Clock::now() - t0 < 2s);
    }
    leaks.verify();
  }

  TEST_CASE("results that cannot be written: a message naming why, exit 1, nothing left") {
    ft::LeakCheck leaks;
    {
      const int full = ::open("/dev/full", O_WRONLY | O_CLOEXEC);
      REQUIRE(full >= 0);
      auto c = start(FERRY_COORDINATOR_EXE, {"-w", "2", "map", "square", "--range", "0:1000"},
                     false, full);
      ::close(full);
      const std::string err = read_rest(c.err.r);
      auto st = c.child.wait_for(30s);
      REQUIRE(st.has_value());
      CHECK(st->code == 1);
      CHECK_MESSAGE(err.find("ferry-coordinator: writing results: No space left on device") !=
                        std::string::npos,
                    err);
    }
    {
      // A reader that went away (`| head -0`): EPIPE, not a death by SIGPIPE.
      auto c = start(FERRY_COORDINATOR_EXE, {"-w", "2", "map", "square", "--range", "0:1000"});
      c.out.close_r();
      const std::string err = read_rest(c.err.r);
      auto st = c.child.wait_for(30s);
      REQUIRE(st.has_value());
      CHECK(st->signal == 0);
      CHECK(st->code == 1);
      CHECK_MESSAGE(
          err.find("ferry-coordinator: writing results: Broken pipe") != std::string::npos, err);
    }
    {
      // `| head -1`: the reader goes while results are being written (the coordinator is
      // blocked in, or between, writes bigger than the pipe holds).
      auto c = start(FERRY_COORDINATOR_EXE, {"-w", "2", "map", "square", "--range", "0:1000000"});
      CHECK(ft::read_line(c.out.r, 30s) == "0");
      c.out.close_r();
      const std::string err = read_rest(c.err.r);
      auto st = c.child.wait_for(30s);
      REQUIRE(st.has_value());
      CHECK(st->signal == 0);
      CHECK(st->code == 1);
      CHECK_MESSAGE(
          err.find("ferry-coordinator: writing results: Broken pipe") != std::string::npos, err);
    }
    leaks.verify();
  }

  TEST_CASE("a port over 65535 is a usage error naming it, in --listen and --connect") {
    auto r =
        ft::run(FERRY_COORDINATOR_EXE, {"-w", "0", "--listen", "tcp://127.0.0.1:70000",
                                        "--wait-timeout", "5", "map", "square", "--items", "1"});
    CHECK(r.status.code == 2);
    CHECK_MESSAGE(r.err.find("70000") != std::string::npos, r.err);
    CHECK(r.err.find("4464") == std::string::npos);
    auto w = ft::run(FERRY_WORKER_EXE,
                     {"--connect", "tcp://127.0.0.1:70000", "--reconnect-timeout", "1"});
    CHECK(w.status.code == 2);
    CHECK_MESSAGE(w.err.find("70000") != std::string::npos, w.err);
  }

  TEST_CASE("timeouts and --max-retries out of range are usage errors naming the option") {
    const std::vector<std::vector<std::string>> bad{
        {"--task-timeout", "nan"},    {"--task-timeout", "inf"}, {"--task-timeout", "1e300"},
        {"--task-timeout", "0.0001"}, {"--task-timeout", "-1"},  {"--max-retries", "4294967295"},
        {"--max-retries", "1000001"}, {"--max-retries", "-1"},   {"--wait-timeout", "nan"},
        {"--wait-timeout", "1e300"}};
    for (const auto& b : bad) {
      CAPTURE(b[0] + " " + b[1]);
      std::vector<std::string> args{"-w", "1"};
      args.insert(args.end(), b.begin(), b.end());
      args.insert(args.end(), {"map", "square", "--items", "1"});
      auto r = ft::run(FERRY_COORDINATOR_EXE, args);
      CHECK(r.status.code == 2);
      CHECK_MESSAGE(r.err.find(b[0]) != std::string::npos, r.err);
    }
    auto w = ft::run(FERRY_WORKER_EXE,
                     {"--connect", "tcp://127.0.0.1:1", "--reconnect-timeout", "nan"}, 10s);
    CHECK(w.status.code == 2);
    CHECK_MESSAGE(w.err.find("--reconnect-timeout") != std::string::npos, w.err);
    // The bounds themselves, and 0 (no timeout), are accepted.
    for (const char* t : {"0", "0.001", "1000000"}) {
      CAPTURE(t);
      auto r = ft::run(FERRY_COORDINATOR_EXE, {"-w", "1", "--task-timeout", t, "--max-retries",
                                               "1000000", "map", "square", "--items", "3"});
      CHECK(r.status.code == 0);
      CHECK(r.out == "9\n");
    }
  }

  TEST_CASE("--items with an empty item is a usage error naming its index") {
    auto r = ft::run(FERRY_COORDINATOR_EXE, {"-w", "1", "map", "square", "--items", "1,,2"});
    CHECK(r.status.code == 2);
    CHECK_MESSAGE(r.err.find("item 1 is empty") != std::string::npos, r.err);
    CHECK(r.out.empty());
    auto e = ft::run(FERRY_COORDINATOR_EXE, {"-w", "1", "map", "square", "--items", ""});
    CHECK(e.status.code == 2);
    CHECK_MESSAGE(e.err.find("item 0 is empty") != std::string::npos, e.err);
    auto t = ft::run(FERRY_COORDINATOR_EXE, {"-w", "1", "map", "square", "--items", "1,2,"});
    CHECK(t.status.code == 2);
    CHECK_MESSAGE(t.err.find("item 2 is empty") != std::string::npos, t.err);
  }

  TEST_CASE("--listen on localhost and [::1]: a remote ferry-worker joins and the map completes") {
    ft::LeakCheck leaks;
    for (const std::string ep : {"tcp://localhost:0", "tcp://[::1]:0"}) {
      CAPTURE(ep);
      if (ep.find("::1") != std::string::npos && !have_ipv6_loopback()) {
        MESSAGE("skipped " << ep << ": no IPv6 loopback on this host");
        continue;
      }
      auto c = start(FERRY_COORDINATOR_EXE, {"-w", "0", "--listen", ep, "--wait-workers", "1",
                                             "map", "square", "--range", "0:5"});
      std::string err;
      const std::string endpoint =
          listened_endpoint(read_until(c.err.r, "waiting for 1 worker(s)", err));
      REQUIRE_MESSAGE(!endpoint.empty(), err << read_rest(c.err.r, 5s));
      auto w = start(FERRY_WORKER_EXE, {"--connect", endpoint, "--reconnect-timeout", "5"});
      CHECK(read_rest(c.out.r) == "0\n1\n4\n9\n16\n");
      auto st = c.child.wait_for(30s);
      REQUIRE(st.has_value());
      CHECK(st->code == 0);
      ft::expect_exit(w.child, 0, 30s);  // a drained pool tells its remote workers to go
    }
    leaks.verify();
  }

  TEST_CASE("--log-level error silences the joined and listening lines, the default shows them") {
    ft::LeakCheck leaks;
    int n = 0;
    for (const char* level : {"info", "error"}) {
      CAPTURE(level);
      // An ipc:// path the worker can be told before the coordinator says where it listens.
      const std::string ep = "ipc:///tmp/ferry-edges-" + std::to_string(::getpid()) + "-" +
                             std::to_string(n++) + ".sock";
      auto c =
          start(FERRY_COORDINATOR_EXE, {"--log-level", level, "-w", "0", "--listen", ep,
                                        "--wait-workers", "1", "map", "square", "--range", "0:3"});
      auto w = start(FERRY_WORKER_EXE, {"--connect", ep, "--reconnect-timeout", "5"});
      CHECK(read_rest(c.out.r) == "0\n1\n4\n");
      const std::string err = read_rest(c.err.r);
      auto st = c.child.wait_for(30s);
      REQUIRE(st.has_value());
      CHECK(st->code == 0);
      ft::expect_exit(w.child, 0, 30s);
      const bool quiet = std::string(level) == "error";
      CHECK_MESSAGE((err.find("joined") == std::string::npos) == quiet, err);
      CHECK_MESSAGE((err.find("listening on") == std::string::npos) == quiet, err);
      CHECK_MESSAGE(err.find("ferry: map square: 3 items") != std::string::npos, err);
    }
    // Failures are still said at error level.
    const std::string ep = "ipc:///tmp/ferry-edges-" + std::to_string(::getpid()) + "-none.sock";
    auto r = ft::run(FERRY_COORDINATOR_EXE,
                     {"--log-level", "error", "-w", "0", "--listen", ep, "--wait-workers", "1",
                      "--wait-timeout", "0.2", "map", "square", "--range", "0:3"});
    CHECK(r.status.code == 1);
    CHECK_MESSAGE(r.err.find("no job run: fewer than 1 worker(s) joined") != std::string::npos,
                  r.err);
    CHECK(r.err.find("listening on") == std::string::npos);
    leaks.verify();
  }
}
