// `ferry-bench pool --quick --json` prints every figure DESIGN.md names, each positive, and
// leaves nothing behind. Not a speed test: speed is ferry-bench's business, not ctest's.
#include <doctest/doctest.h>
#include <stdlib.h>

#include <string>
#include <vector>

#include "bench_json.hpp"
#include "ferry/shared/session.hpp"
#include "testing.hpp"

TEST_SUITE("cli.bench_pool") {
#ifdef FERRY_BENCH_EXE
  TEST_CASE("ferry-bench pool --quick --json prints every pool and Python figure, positive") {
    // ferry-bench names its segments after our session, so LeakCheck sees what it leaves.
    ::setenv(ferry::kSessionEnv, ferry::SessionId::current().str().c_str(), 1);
    ferry::testing::LeakCheck leaks;
    const auto [r, got] = bench_test::run_quick_json(FERRY_BENCH_EXE, "pool");

    std::vector<std::string> expected{"pool.startup_ms.4",
                                      "baseline.raw-procs.count_primes_speedup_2w"};
    for (const char* t : {"pipe", "shm", "zmq"}) {
      for (const char* m :
           {"submit_tasks_per_s", "map_items_per_s", "apply_rtt_p50_us", "startup_ms.4",
            "count_primes_ms_1w", "count_primes_ms_2w", "count_primes_speedup_2w"}) {
        expected.push_back(std::string("pool.") + t + "." + m);
      }
    }
    if (!bench_test::on_path("python3").empty()) {
      for (const char* m : {"submit_tasks_per_s", "map_items_per_s", "apply_rtt_p50_us",
                            "startup_ms.4", "count_primes_speedup_2w"}) {
        expected.push_back(std::string("peer.python_mp.") + m);
      }
      for (const char* m :
           {"submit_tasks_per_s", "map_items_per_s", "apply_rtt_p50_us", "startup_ms.4"}) {
        expected.push_back(std::string("peer.python_futures.") + m);
      }
    } else {
      CHECK_MESSAGE(r.err.find("python3 is not on PATH") != std::string::npos, r.err);
    }
    bench_test::check_positive(got, expected);
    leaks.verify();
  }
#endif
}
