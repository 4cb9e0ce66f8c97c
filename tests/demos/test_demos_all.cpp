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

TEST_SUITE("demos.all") {
  TEST_CASE("demo list names every demo of the tour, in order") {
    const auto r = ft::run(FERRY_COORDINATOR_EXE, {"demo", "list"});
    CHECK(r.status.code == 0);
    std::vector<std::string> listed;
    for (const auto& m : matches(r.out, R"((?:^|\n)([a-z-]+) +\S)"))
      listed.push_back(m[0]);
    CHECK(listed == kTour);
  }

  TEST_CASE("demo all passes and its final table lists every demo as ok") {
    ft::LeakCheck leaks;
    const auto r = run_demo("all");
    std::vector<std::string> rows;
    for (const auto& m : matches(r.out, R"(\n([a-z-]+) +(ok|FAIL) +[0-9.]+(?=\n))")) {
      rows.push_back(m[0]);
      CHECK_MESSAGE(m[1] == "ok", m[0]);
    }
    CHECK(rows == kTour);
    CHECK(r.out.find("\n20 demos, 0 failed\n") != std::string::npos);
    for (const auto& name : kTour)
      CHECK_MESSAGE(r.out.find("=== demo " + name + " ") != std::string::npos, name);
    leaks.verify();
  }

  TEST_CASE("demos that move data between processes pass over each transport") {
    ft::LeakCheck leaks;
    for (const char* transport : {"pipe", "shm", "zmq"}) {
      for (const char* demo : {"pipe", "channel", "queue", "supervisor", "distributed"}) {
        CAPTURE(transport);
        CAPTURE(demo);
        const auto r = run_demo(demo, {"-w", "2", "-t", transport});
        if (std::string(demo) == "channel") {
          const std::string kind = transport == std::string("shm")   ? "shm://"
                                   : transport == std::string("zmq") ? "ipc://"
                                                                     : "pipe:";
          CHECK(r.out.find("the worker connects to " + kind) != std::string::npos);
        }
      }
    }
    leaks.verify();
  }
}
