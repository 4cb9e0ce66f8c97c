// The tour as a whole: `demo list` and `demo all` name every demo in order, `demo all` passes,
// and demos that move data between processes pass over every transport.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "demo_run.hpp"

using demo_test::kTour;
using demo_test::matches;
using demo_test::run_demo;
namespace ft = ferry::testing;

namespace {

// `demo all` over one transport: every demo ok in the final table, in order, each with its
// header; the channel demo's endpoint follows the transport.
void check_tour_over(const std::string& transport, const std::string& channel_endpoint) {
  ft::LeakCheck leaks;
  const auto r = run_demo("all", {"-w", "2", "-t", transport});
  std::vector<std::string> rows;
  for (const auto& m : matches(r.out, R"(\n([a-z-]+) +(ok|FAIL) +[0-9.]+(?=\n))")) {
    rows.push_back(m[0]);
    CHECK_MESSAGE(m[1] == "ok", m[0]);
  }
  CHECK(rows == kTour);
  CHECK(r.out.find("\n23 demos, 0 failed\n") != std::string::npos);
  for (const auto& name : kTour)
    CHECK_MESSAGE(r.out.find("=== demo " + name + " ") != std::string::npos, name);
  CHECK(r.out.find("the worker connects to " + channel_endpoint) != std::string::npos);
  leaks.verify();
}

}  // namespace

TEST_SUITE("demos.all") {
  TEST_CASE("demo list names every demo of the tour, in order") {
    const auto r = ft::run(FERRY_COORDINATOR_EXE, {"demo", "list"});
    CHECK(r.status.code == 0);
    std::vector<std::string> listed;
    for (const auto& m : matches(r.out, R"((?:^|\n)([a-z-]+) +\S)"))
      listed.push_back(m[0]);
    CHECK(listed == kTour);
  }

  TEST_CASE("demo all passes over shm and its final table lists every demo as ok") {
    check_tour_over("shm", "shm://");
  }

  TEST_CASE("demo all passes over pipe and its final table lists every demo as ok") {
    check_tour_over("pipe", "pipe:");
  }

  TEST_CASE("demo all passes over zmq and its final table lists every demo as ok") {
    check_tour_over("zmq", "ipc://");
  }

  TEST_CASE("--workers sets how many processes a lesson uses") {
    ft::LeakCheck leaks;
    const auto race = run_demo("race", {"-w", "3"});
    CHECK(race.out.find("3 processes each add 1 to a shared Value 10000 times") !=
          std::string::npos);
    CHECK(race.out.find("counter = 30000 of 30000") != std::string::npos);
    const auto cpu = run_demo("cpu-bound", {"-w", "3"});
    CHECK(cpu.out.find("3 worker processes (ferry)") != std::string::npos);
    CHECK(cpu.out.find("3 threads, 1 process") != std::string::npos);
    leaks.verify();
  }
}
