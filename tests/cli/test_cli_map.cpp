// ferry-coordinator map / tasks: output, exit codes, interruption and coordinator death.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <set>
#include <string>

#include "ferry/shared/session.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;

namespace {

std::string session_env() {
  return std::string(ferry::kSessionEnv) + "=" + ferry::SessionId::current().str();
}

// Starts ferry-coordinator with stdout on a pipe; returns the child and the pipe's read end.
std::pair<ft::Child, int> start_coordinator(const std::vector<std::string>& args) {
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  ft::SpawnOptions o;
  o.stdout_fd = p[1];
  o.env.push_back(session_env());
  auto c = ft::spawn(FERRY_COORDINATOR_EXE, args, o);
  ::close(p[1]);
  return {std::move(c), p[0]};
}

// Reads stdout until a whole line arrives (a readiness message: the first result is out).
std::string read_line(int fd) {
  std::string line;
  char ch;
  while (::read(fd, &ch, 1) == 1 && ch != '\n')
    line.push_back(ch);
  return line;
}

}  // namespace

TEST_SUITE("cli.map") {
  TEST_CASE("map prints one result per line in input order, identically over every transport") {
    ft::LeakCheck leaks;
    std::string expected;
    for (int i = 0; i < 200; ++i)
      expected += std::to_string(i * i) + "\n";
    for (const char* t : {"pipe", "shm", "zmq"}) {
      CAPTURE(t);
      auto r = ft::run(
          FERRY_COORDINATOR_EXE,
          {"-w", "2", "-t", t, "map", "square", "--range", "0:200", "--chunksize", "7"}, 60s);
      CHECK(r.status.code == 0);
      CHECK(r.out == expected);
      CHECK(r.err.find("200 items") != std::string::npos);
    }
    leaks.verify();
  }

  TEST_CASE("map --unordered prints every result once, and --items and --stdin feed it") {
    auto r = ft::run(FERRY_COORDINATOR_EXE,
                     {"-w", "2", "map", "square", "--items", "3,1,2", "--unordered"}, 60s);
    CHECK(r.status.code == 0);
    std::multiset<std::string> lines;
    std::size_t pos = 0, nl;
    while ((nl = r.out.find('\n', pos)) != std::string::npos) {
      lines.insert(r.out.substr(pos, nl - pos));
      pos = nl + 1;
    }
    CHECK(lines == std::multiset<std::string>{"1", "4", "9"});
    auto s = ft::run(FERRY_COORDINATOR_EXE, {"-w", "1", "map", "square", "--stdin"}, 60s, "5\n6\n");
    CHECK(s.status.code == 0);
    CHECK(s.out == "25\n36\n");
  }

  TEST_CASE("failed items go to stderr with their input and the exit status is 1") {
    auto r = ft::run(FERRY_COORDINATOR_EXE, {"-w", "2", "map", "fail", "--items", "41,42"}, 60s);
    CHECK(r.status.code == 1);
    CHECK(r.err.find("fail(41) failed") != std::string::npos);
    CHECK(r.err.find("fail(42)") != std::string::npos);
    auto c = ft::run(FERRY_COORDINATOR_EXE,
                     {"-w", "2", "--max-retries", "1", "map", "crash", "--items", "1"}, 60s);
    CHECK(c.status.code == 1);
    CHECK(c.err.find("WorkerDied") != std::string::npos);
    CHECK(c.err.find("attempt 2/2") != std::string::npos);
  }

  TEST_CASE("map usage errors exit 2") {
    CHECK(ft::run(FERRY_COORDINATOR_EXE, {"map", "no_such_task", "--range", "0:3"}).status.code ==
          2);
    CHECK(ft::run(FERRY_COORDINATOR_EXE, {"map", "square"}).status.code == 2);
    CHECK(ft::run(FERRY_COORDINATOR_EXE, {"map", "square", "--range", "9:1"}).status.code == 2);
    CHECK(ft::run(FERRY_COORDINATOR_EXE, {"map", "square", "--items", "x"}).status.code == 2);
  }

  TEST_CASE("--json gives one object per result and a summary line") {
    auto r =
        ft::run(FERRY_COORDINATOR_EXE, {"-w", "1", "--json", "map", "blob", "--items", "16"}, 60s);
    CHECK(r.status.code == 0);
    CHECK(r.out.find("\"input\":\"16\"") != std::string::npos);
    CHECK(r.out.find("16 bytes fnv1a=") != std::string::npos);
    CHECK(r.out.find("{\"summary\":") != std::string::npos);
  }

  TEST_CASE("tasks lists the built-in tasks") {
    auto r = ft::run(FERRY_COORDINATOR_EXE, {"tasks"});
    CHECK(r.status.code == 0);
    for (const char* t : {"square", "sleep_ms", "spin_ms", "count_primes", "fail", "crash", "blob"})
      CHECK(r.out.find(t) != std::string::npos);
  }

  TEST_CASE("Ctrl-C cancels: exit 130 within 2 s, workers gone, nothing left behind") {
    ft::LeakCheck leaks;
    {
      auto [c, fd] = start_coordinator(
          {"-w", "2", "map", "sleep_ms", "--items", "1,20000,20000", "--chunksize", "1"});
      CHECK(read_line(fd) == "1");  // workers are up and the long tasks are running
      const auto t0 = std::chrono::steady_clock::now();
      c.kill(SIGINT);
      auto st = c.wait_for(5s);
      REQUIRE(st.has_value());
      CHECK(st->code == 130);
      CHECK(std::chrono::steady_clock::now() - t0 < 2s);
      ::close(fd);
    }
    leaks.verify();
  }

  TEST_CASE("a SIGKILLed coordinator's workers exit within 2 s") {
    ft::LeakCheck leaks;
    {
      // --wait-workers 2: both workers have attached their segments (whose names are then
      // unlinked) before the kill; a worker killed before it attached leaves its segment to
      // the next coordinator's sweep.
      auto [c, fd] = start_coordinator({"-w", "2", "--wait-workers", "2", "map", "sleep_ms",
                                        "--items", "1,20000,20000", "--chunksize", "1"});
      CHECK(read_line(fd) == "1");
      c.kill(SIGKILL);
      REQUIRE(c.wait_for(5s).has_value());
      // Its workers were re-parented to this test process (a subreaper): each must die promptly.
      const auto t0 = std::chrono::steady_clock::now();
      for (pid_t pid : ft::child_pids()) {
        ft::Child orphan(pid);
        CHECK(orphan.wait_for(2s).has_value());
      }
      CHECK(std::chrono::steady_clock::now() - t0 < 2s);
      ::close(fd);
    }
    leaks.verify();
  }
}
