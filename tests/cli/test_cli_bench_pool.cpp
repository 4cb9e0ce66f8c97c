// `ferry-bench pool --quick --json` prints every figure DESIGN.md names, each positive, and
// leaves nothing behind. Not a speed test: speed is ferry-bench's business, not ctest's.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "ferry/shared/session.hpp"
#include "testing.hpp"

namespace {

bool python3_on_path() {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (::access(((dir.empty() ? "." : dir) + "/python3").c_str(), X_OK) == 0) return true;
  }
  return false;
}

}  // namespace

TEST_SUITE("cli.bench_pool") {
#ifdef FERRY_BENCH_EXE
  TEST_CASE("ferry-bench pool --quick --json prints every pool and Python figure, positive") {
    // ferry-bench names its segments after our session, so LeakCheck sees what it leaves.
    ::setenv(ferry::kSessionEnv, ferry::SessionId::current().str().c_str(), 1);
    ferry::testing::LeakCheck leaks;
    auto r = ferry::testing::run(FERRY_BENCH_EXE, {"pool", "--quick", "--json"},
                                 std::chrono::seconds(110));
    REQUIRE_MESSAGE(!r.timed_out, r.err);
    REQUIRE_MESSAGE(r.status.code == 0, r.err);

    std::map<std::string, double> got;
    std::istringstream lines(r.out);
    for (std::string line; std::getline(lines, line);) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      REQUIRE_MESSAGE(!j.is_discarded(), "not JSON: " << line);
      REQUIRE(j.contains("unit"));
      got[j.at("name").get<std::string>()] = j.at("value").get<double>();
    }

    std::vector<std::string> expected{"pool.startup_ms.4",
                                      "baseline.raw-procs.count_primes_speedup_2w"};
    for (const char* t : {"pipe", "shm", "zmq"}) {
      for (const char* m :
           {"submit_tasks_per_s", "map_items_per_s", "apply_rtt_p50_us", "startup_ms.4",
            "count_primes_ms_1w", "count_primes_ms_2w", "count_primes_speedup_2w"}) {
        expected.push_back(std::string("pool.") + t + "." + m);
      }
    }
    if (python3_on_path()) {
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
    for (const auto& name : expected) {
      auto it = got.find(name);
      CHECK_MESSAGE(it != got.end(), "missing " << name);
      if (it != got.end()) CHECK_MESSAGE(it->second > 0, name << " = " << it->second);
    }
    leaks.verify();
  }
#endif
}
