#include <doctest/doctest.h>

#include "testing.hpp"

using ferry::testing::run;

TEST_SUITE("cli.commands") {
  TEST_CASE("every executable prints usage for --help and exits 0") {
    std::vector<std::string> exes{FERRY_COORDINATOR_EXE, FERRY_WORKER_EXE};
#ifdef FERRY_BENCH_EXE
    exes.push_back(FERRY_BENCH_EXE);
#endif
    for (const auto& exe : exes) {
      auto r = run(exe, {"--help"});
      CHECK_MESSAGE(r.status.code == 0, exe);
      CHECK_MESSAGE(r.out.find("Usage") != std::string::npos, exe << ": " << r.out);
    }
  }

  TEST_CASE("an unknown option exits 2 with a message naming it") {
    std::vector<std::string> exes{FERRY_COORDINATOR_EXE, FERRY_WORKER_EXE};
#ifdef FERRY_BENCH_EXE
    exes.push_back(FERRY_BENCH_EXE);
#endif
    for (const auto& exe : exes) {
      auto r = run(exe, {"--no-such-option"});
      CHECK_MESSAGE(r.status.code == 2, exe);
      CHECK_MESSAGE(r.err.find("--no-such-option") != std::string::npos, exe << ": " << r.err);
    }
  }

  TEST_CASE("a bad option value exits 2") {
    auto r = run(FERRY_COORDINATOR_EXE, {"-t", "carrier-pigeon", "demo", "list"});
    CHECK(r.status.code == 2);
    CHECK(r.err.find("carrier-pigeon") != std::string::npos);
    auto w = run(FERRY_WORKER_EXE, {"--connect", "smoke://signal"});
    CHECK(w.status.code == 2);
    CHECK(w.err.find("smoke://signal") != std::string::npos);
  }

  TEST_CASE("ferry-coordinator without a command is a usage error") {
    auto r = run(FERRY_COORDINATOR_EXE, {});
    CHECK(r.status.code == 2);
  }

  TEST_CASE("demo with an unknown name is a usage error naming it") {
    auto r = run(FERRY_COORDINATOR_EXE, {"demo", "no-such-demo"});
    CHECK(r.status.code == 2);
    CHECK(r.err.find("no-such-demo") != std::string::npos);
  }

  TEST_CASE("cleanup reports what it removed") {
    auto r = run(FERRY_COORDINATOR_EXE, {"cleanup"});
    CHECK(r.status.code == 0);
    CHECK(r.out.find("stale segment(s) removed") != std::string::npos);
  }
}
