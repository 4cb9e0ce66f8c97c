// `ferry-bench remote --quick --json` prints every remote figure DESIGN.md names, each
// positive (Dask's too when `import distributed` works here), and leaves nothing behind. Not a
// speed test: the targets are ferry-bench's business, not ctest's.
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

std::string on_path(const std::string& prog) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const auto cand = (dir.empty() ? "." : dir) + "/" + prog;
    if (::access(cand.c_str(), X_OK) == 0) return cand;
  }
  return {};
}

// The same interpreters ferry-bench tries: python3 on PATH, then Debian's.
bool distributed_importable() {
  for (const auto& py : {on_path("python3"), std::string("/usr/bin/python3")}) {
    if (py.empty() || ::access(py.c_str(), X_OK) != 0) continue;
    auto r = ferry::testing::run(py, {"-c", "import distributed"}, std::chrono::seconds(60));
    if (!r.timed_out && r.status.code == 0) return true;
  }
  return false;
}

}  // namespace

TEST_SUITE("cli.bench_remote") {
#ifdef FERRY_BENCH_EXE
  TEST_CASE("ferry-bench remote --quick --json prints every remote figure, positive") {
    ::setenv(ferry::kSessionEnv, ferry::SessionId::current().str().c_str(), 1);
    const bool dask = distributed_importable();
    ferry::testing::LeakCheck leaks;
    auto r = ferry::testing::run(FERRY_BENCH_EXE, {"remote", "--quick", "--json"},
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

    std::vector<std::string> expected{"baseline.raw-zmq-tcp-reqrep.rtt_p50_us",
                                      "baseline.raw-zmq-tcp-reqrep.rtt_p99_us",
                                      "remote.tcp.detect_ms", "remote.tcp.detect_timeout_ratio",
                                      "remote.tcp.heartbeat_timeout_ms"};
    for (const char* t : {"remote.tcp.", "remote.tcp_curve."}) {
      for (const char* m : {"submit_tasks_per_s", "apply_rtt_p50_us", "apply_rtt_p99_us"}) {
        expected.push_back(std::string(t) + m);
      }
    }
    if (dask) {
      for (const char* m : {"submit_tasks_per_s", "apply_rtt_p50_us", "apply_rtt_p99_us"}) {
        expected.push_back(std::string("peer.dask.") + m);
      }
    } else {
      CHECK_MESSAGE(r.err.find("Dask not measured") != std::string::npos, r.err);
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
