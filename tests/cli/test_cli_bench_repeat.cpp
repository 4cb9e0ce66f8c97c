// `ferry-bench --repeat N` runs the suites N times: each figure is the median of its runs, with
// min <= median <= max and runs = N, in --json and in the text table. Uses the sync suite, the
// shortest. Not a speed test.
#include <doctest/doctest.h>
#include <stdlib.h>

#include <string>

#include "bench_json.hpp"
#include "ferry/shared/session.hpp"
#include "testing.hpp"

TEST_SUITE("cli.bench_repeat") {
#ifdef FERRY_BENCH_EXE
  TEST_CASE("--repeat 3 --json: every figure is a median of 3 runs within its min and max") {
    ::setenv(ferry::kSessionEnv, ferry::SessionId::current().str().c_str(), 1);
    ferry::testing::LeakCheck leaks;
    const auto b = bench_test::run_quick_json(FERRY_BENCH_EXE, "sync", {"--repeat", "3"});
    const auto spread = bench_test::spread_of(b.result.out);
    REQUIRE_FALSE(spread.empty());
    bool some_spread = false;  // three timed runs of anything differ somewhere
    for (const auto& [name, f] : spread) {
      CHECK_MESSAGE(f.runs == 3, name << " runs = " << f.runs);
      CHECK_MESSAGE(f.min <= f.value, name << ": min " << f.min << " > median " << f.value);
      CHECK_MESSAGE(f.value <= f.max, name << ": median " << f.value << " > max " << f.max);
      some_spread = some_spread || f.min < f.max;
    }
    CHECK(some_spread);
    CHECK(b.result.err.find("run 3 of 3") != std::string::npos);
    leaks.verify();
  }

  TEST_CASE("one run has min = max = value and runs = 1, and the text table a spread for N > 1") {
    ::setenv(ferry::kSessionEnv, ferry::SessionId::current().str().c_str(), 1);
    ferry::testing::LeakCheck leaks;
    const auto b = bench_test::run_quick_json(FERRY_BENCH_EXE, "sync");
    const auto spread = bench_test::spread_of(b.result.out);
    REQUIRE_FALSE(spread.empty());
    for (const auto& [name, f] : spread) {
      CHECK_MESSAGE(f.runs == 1, name);
      CHECK(f.min == f.value);
      CHECK(f.max == f.value);
    }
    const auto text = ferry::testing::run(FERRY_BENCH_EXE, {"sync", "--quick", "--repeat", "2"},
                                          std::chrono::seconds(110));
    REQUIRE_FALSE(text.timed_out);
    CHECK_MESSAGE(text.status.code == 0, text.err);
    CHECK(text.out.find("median") != std::string::npos);
    CHECK(text.out.find("[min..max] (runs)") != std::string::npos);
    CHECK(text.out.find("(2)") != std::string::npos);
    leaks.verify();
  }

  TEST_CASE("--repeat 0 is a usage error naming the option") {
    const auto r =
        ferry::testing::run(FERRY_BENCH_EXE, {"sync", "--repeat", "0"}, std::chrono::seconds(30));
    REQUIRE_FALSE(r.timed_out);
    CHECK(r.status.code == 2);
    CHECK_MESSAGE(r.err.find("--repeat") != std::string::npos, r.err);
  }
#endif
}
