// `ferry-bench remote --quick --json` prints every remote figure DESIGN.md names, each
// positive (Dask's too when `import distributed` works here), and leaves nothing behind. Not a
// speed test: the targets are ferry-bench's business, not ctest's.
#include <doctest/doctest.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "bench_json.hpp"
#include "ferry/shared/session.hpp"
#include "testing.hpp"

namespace {

// The same interpreters ferry-bench tries: python3 on PATH, then Debian's.
bool distributed_importable() {
  for (const auto& py : {bench_test::on_path("python3"), std::string("/usr/bin/python3")}) {
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
    const auto [r, got] = bench_test::run_quick_json(FERRY_BENCH_EXE, "remote");

    std::vector<std::string> expected{"baseline.raw-zmq-tcp-reqrep.rtt_p50_us",
                                      "baseline.raw-zmq-tcp-reqrep.rtt_p99_us",
                                      "remote.tcp.detect_ms",
                                      "remote.tcp.detect_timeout_ratio",
                                      "remote.tcp.heartbeat_timeout_ms",
                                      "remote.tcp.object_served_per_host",
                                      "remote.tcp.object_read_ms",
                                      "remote.tcp.object_served_private",
                                      "remote.tcp.object_read_private_ms"};
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
    bench_test::check_positive(got, expected);
    leaks.verify();
  }
#endif
}
