// ferry-coordinator's command-line edges: signals while it waits (for workers, for stdin), a
// stdout that cannot be written, option values out of range, addresses, log levels.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "ferry/shared/session.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;
using Clock = std::chrono::steady_clock;

TEST_SUITE("cli.edges") {
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
}
