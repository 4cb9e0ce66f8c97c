// ferry-coordinator under exhausted resources: too few file descriptors, no room for threads.
// Each run must end with the right output or a clear message and a failure status: never a
// hang, an abort, or anything left behind.
#include <doctest/doctest.h>

#include <chrono>
#include <string>

#include "ferry/shared/session.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;

namespace {

std::string squares(int n) {
  std::string s;
  for (int i = 0; i < n; ++i)
    s += std::to_string(i * i) + "\n";
  return s;
}

// Runs the coordinator under `limit` (a ulimit option and value), in this test's session so
// LeakCheck sees its segments.
ft::RunResult run_limited(const std::string& limit, const std::string& transport) {
  const std::string cmd = "ulimit " + limit + " && " + std::string(ferry::kSessionEnv) + "=" +
                          ferry::SessionId::current().str() + " exec " + FERRY_COORDINATOR_EXE +
                          " -w 8 -t " + transport +
                          " --no-progress map square --range 0:100 --chunksize 4";
  return ft::run("/bin/sh", {"-c", cmd}, 60s);
}

// The run either did the job or said why it could not, naming the resource.
void check_clean(const ft::RunResult& r, std::initializer_list<std::string_view> resource_words) {
  CAPTURE(r.err);
  REQUIRE_FALSE(r.timed_out);
  REQUIRE(r.status.exited());  // no abort, no signal
  if (r.status.code == 0) {
    CHECK(r.out == squares(100));
  } else {
    CHECK(r.status.code == 1);
    bool named = false;
    for (auto w : resource_words)
      named = named || r.err.find(w) != std::string::npos;
    CHECK(named);
  }
  CHECK(r.err.find("terminate called") == std::string::npos);
}

}  // namespace

TEST_SUITE("cli.limits") {
  TEST_CASE(
      "ulimit -n 16..32 with 8 workers: the job runs on the workers that fit, or fails "
      "saying so") {
    ft::LeakCheck leaks;
    for (const char* t : {"pipe", "shm", "zmq"}) {
      for (int n = 16; n <= 32; n += 2) {
        CAPTURE(t);
        CAPTURE(n);
        auto r = run_limited("-n " + std::to_string(n), t);
        check_clean(r, {"open files"});
        // Fewer workers than asked is said once.
        const auto said = r.err.find("local worker(s): cannot start more");
        if (said != std::string::npos) {
          CHECK(r.err.find("local worker(s): cannot start more", said + 1) == std::string::npos);
        }
      }
    }
    leaks.verify();
  }

  TEST_CASE("no address space for more threads: the pool runs with the workers it could serve") {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    MESSAGE("skipped: sanitizers reserve more address space than any ulimit -v here allows");
#else
    ft::LeakCheck leaks;
    bool shrank = false;
    for (int kib = 30000; kib <= 170000; kib += 10000) {
      CAPTURE(kib);
      auto r = run_limited("-v " + std::to_string(kib), "shm");
      check_clean(r, {"Resource temporarily unavailable", "Cannot allocate memory", "bad_alloc"});
      shrank = shrank || r.err.find("no thread for it") != std::string::npos;
    }
    CHECK(shrank);  // the limits above do reach thread creation on this build
    leaks.verify();
#endif
  }
}
