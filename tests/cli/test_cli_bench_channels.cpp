// `ferry-bench channels --quick --json` prints every channel and baseline figure, positive, and
// Open MPI's (peer.mpi.sm.*) when mpirun is on PATH and the MPI peer was built; otherwise a
// line on stderr saying why the peer was skipped. Leaves nothing behind. Not a speed test.
#include <doctest/doctest.h>
#include <stdlib.h>

#include <string>
#include <vector>

#include "bench_json.hpp"
#include "ferry/shared/session.hpp"
#include "testing.hpp"

TEST_SUITE("cli.bench_channels") {
#ifdef FERRY_BENCH_EXE
  TEST_CASE("ferry-bench channels --quick --json: ferry, raw peers and Open MPI in one run") {
    ::setenv(ferry::kSessionEnv, ferry::SessionId::current().str().c_str(), 1);
    ferry::testing::LeakCheck leaks;
    // A twentieth of --quick's counts: every transport and peer still runs its ping-pong and
    // stream at each size, in seconds rather than minutes on a loaded 2-core machine.
    ::setenv("FERRY_BENCH_CHANNEL_DIVISOR", "20", 1);
    const auto [r, got] =
        bench_test::run_quick_json(FERRY_BENCH_EXE, "channels", {}, std::chrono::seconds(200));
    ::unsetenv("FERRY_BENCH_CHANNEL_DIVISOR");

    std::vector<std::string> expected;
    const auto add = [&](const std::string& prefix) {
      for (const char* m : {"rtt_p50_us", "rtt_p99_us", "msgs_per_s", "gb_per_s"}) {
        for (const char* b : {"64", "1024", "1048576"})
          expected.push_back(prefix + "." + m + "." + b);
      }
    };
    for (const char* t : {"pipe", "shm", "zmq-ipc", "zmq-tcp"})
      add(std::string("channel.") + t);
    for (const char* t : {"raw-pipe", "raw-zmq-ipc", "raw-zmq-tcp", "boost-mq"})
      add(std::string("baseline.") + t);
    const bool mpirun = !bench_test::on_path("mpirun").empty();
#ifdef FERRY_BENCH_MPI_PEER_BUILT
    if (mpirun) {
      add("peer.mpi.sm");
    } else {
      MESSAGE("mpirun is not on PATH: Open MPI's figures are not expected");
      CHECK_MESSAGE(r.err.find("mpirun is not on PATH") != std::string::npos, r.err);
    }
#else
    MESSAGE("ferry-bench-mpi-peer was not built (no MPI at configure time)");
    CHECK_MESSAGE(r.err.find(mpirun ? "ferry-bench-mpi-peer was not built"
                                    : "mpirun is not on PATH") != std::string::npos,
                  r.err);
#endif
    bench_test::check_positive(got, expected);
    if (!mpirun) {
      for (const auto& [name, v] : got)
        CHECK_MESSAGE(name.rfind("peer.mpi.", 0) != 0, "unexpected " << name);
    }
    leaks.verify();
  }
#endif
}
