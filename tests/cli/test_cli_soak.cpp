// Soak: `map square --range 0:50000 --chunksize 1` again and again for a while on each
// transport, while a random worker is SIGKILLed every 30-70 ms. The coordinator must never
// crash and every run's output must be exactly the squares, in order.
//
// FERRY_SOAK_SECONDS sets the time per transport (default 120). Label `soak`: run in the plain
// stage only (the sanitizer stages would take far longer for the same schedules).
#include <dirent.h>
#include <doctest/doctest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ferry/shared/session.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;

namespace {

// Children of pid, whichever of its threads spawned them.
std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> out;
  const std::string task_dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(task_dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream in(task_dir + "/" + e->d_name + "/children");
    pid_t c;
    while (in >> c)
      out.push_back(c);
  }
  ::closedir(d);
  return out;
}

std::chrono::seconds soak_time() {
  const char* s = std::getenv("FERRY_SOAK_SECONDS");
  return std::chrono::seconds(s ? std::atoi(s) : 120);
}

void soak(const char* t) {
  ft::LeakCheck leaks;
  std::string expected;
  for (long i = 0; i < 50000; ++i)
    expected += std::to_string(i * i) + "\n";
  std::mt19937 rng(20261129);
  int runs = 0, kills = 0;
  const auto until = std::chrono::steady_clock::now() + soak_time();
  do {
    // Output to a pipe read by a thread; the coordinator is this test's only child.
    ft::PipeFds out;
    ft::SpawnOptions o;
    o.stdout_fd = out.w;
    o.env.push_back(std::string(ferry::kSessionEnv) + "=" + ferry::SessionId::current().str());
    auto c = ft::spawn(FERRY_COORDINATOR_EXE,
                       {"-w", "4", "-t", t, "--max-retries", "1000", "--no-progress", "map",
                        "square", "--range", "0:50000", "--chunksize", "1"},
                       o);
    out.close_w();
    std::string got;
    std::thread reader([&] {
      char buf[65536];
      ssize_t n;
      while ((n = ::read(out.r, buf, sizeof buf)) > 0)
        got.append(buf, static_cast<std::size_t>(n));
    });
    std::optional<ft::ExitStatus> st;
    while (!(st = c.wait_for(std::chrono::milliseconds(30 + rng() % 41)))) {
      auto kids = children_of(c.pid());
      if (kids.empty()) continue;
      ::kill(kids[rng() % kids.size()], SIGKILL);
      ++kills;
    }
    reader.join();
    ++runs;
    REQUIRE(st->exited());  // the coordinator never crashes
    CHECK(st->code == 0);
    CHECK(got == expected);
    if (st->code != 0 || got != expected) break;
  } while (std::chrono::steady_clock::now() < until);
  MESSAGE(std::string(t) << ": " << runs << " runs, " << kills << " workers killed");
  CHECK(kills > 0);
  leaks.verify();
}

}  // namespace

TEST_SUITE("cli.soak") {
  TEST_CASE("pipe: workers SIGKILLed every 30-70 ms while a map runs: no crash, exact output") {
    soak("pipe");
  }
  TEST_CASE("shm: workers SIGKILLed every 30-70 ms while a map runs: no crash, exact output") {
    soak("shm");
  }
  TEST_CASE("zmq: workers SIGKILLed every 30-70 ms while a map runs: no crash, exact output") {
    soak("zmq");
  }
}
