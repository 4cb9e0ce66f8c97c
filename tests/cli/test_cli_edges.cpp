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
}
