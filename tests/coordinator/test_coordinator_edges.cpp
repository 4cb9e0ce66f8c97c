// Edges of the pool found by trying it as a new user would and attacking it black-box: early
// submissions, oversized arguments, crash tasks next to healthy ones, forged results.
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ranges>
#include <string>
#include <thread>
#include <vector>

#include "ferry/ferry.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;
using ferry::builtin::square;

namespace {

// The consumer waits (bounded) for the producer's event; true if it came.
int consume(std::string event) {
  auto e = ferry::Event::open(event).value();
  return e.wait_for(std::chrono::seconds(5)) ? 1 : 0;
}
int produce(std::string event) {
  ferry::Event::open(event).value().set();
  return 1;
}
std::int64_t arg_length(std::string s) {
  return static_cast<std::int64_t>(s.size());
}

int peer_fail(const std::string& what) {
  std::fprintf(stderr, "peer: %s\n", what.c_str());
  return 2;
}

bool any_ferry_segment() {
  bool found = false;
  if (DIR* d = ::opendir("/dev/shm")) {
    while (const dirent* e = ::readdir(d))
      found = found || std::string_view(e->d_name).starts_with("ferry.");
    ::closedir(d);
  }
  return found;
}

}  // namespace

// In a mount namespace of its own, a 4 MiB /dev/shm with about 1 MiB free: a pool on shm
// cannot reserve its workers' 2 MiB of rings (reserved after each worker is spawned). Its
// tasks must fail Rejected naming the full /dev/shm and the segment; nothing dies of SIGBUS
// and nothing is left in /dev/shm. Exits 77 when the namespace or the mount cannot be made.
FERRY_TEST_PEER(pool_full_shm) {
  if (::unshare(CLONE_NEWNS) != 0) return 77;
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return 77;
  if (::mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=1777") != 0) {
    return 77;
  }
  const int fd = ::open("/dev/shm/filler", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  const std::vector<char> block(std::size_t{3} << 20, 'x');
  if (fd < 0 || ::write(fd, block.data(), block.size()) != static_cast<ssize_t>(block.size())) {
    return peer_fail("cannot fill /dev/shm");
  }
  ::close(fd);
  {
    ferry::Pool pool({.workers = 2, .transport = ferry::Transport::shm});
    auto f = pool.submit(square, 7);
    try {
      (void)f.get();
      return peer_fail("a task ran without room for any worker's channel");
    } catch (const ferry::Rejected& e) {
      const std::string what = e.what();
      std::fprintf(stderr, "peer: %s\n", what.c_str());
      for (const char* part : {"/dev/shm is full", "/dev/shm/ferry.", " bytes"}) {
        if (what.find(part) == std::string::npos)
          return peer_fail(std::string("no '") + part + "'");
      }
    }
  }
  if (any_ferry_segment()) return peer_fail("a segment was left in /dev/shm");
  ::unlink("/dev/shm/filler");
  return 0;
}

FERRY_TASK(consume);
FERRY_TASK(produce);
FERRY_TASK(arg_length);

TEST_SUITE("coordinator.edges") {
  TEST_CASE(
      "tasks submitted right after construction are spread: a consumer does not wait "
      "behind its producer") {
    ft::LeakCheck leaks;
    for (auto t : {ferry::Transport::pipe, ferry::Transport::shm, ferry::Transport::zmq}) {
      CAPTURE(ferry::transport_name(t));
      auto ev = ferry::Event::create("edges-pc").value();
      ferry::Pool pool({.workers = 2, .transport = t});  // no wait_ready(): submit at once
      const auto t0 = std::chrono::steady_clock::now();
      auto consumer = pool.submit(consume, std::string("edges-pc"));
      auto producer = pool.submit(produce, std::string("edges-pc"));
      CHECK(producer.get() == 1);
      CHECK(consumer.get() == 1);  // false: it waited 5 s on the worker the producer queued behind
      CHECK(std::chrono::steady_clock::now() - t0 < 4s);
    }
    leaks.verify();
  }

  TEST_CASE(
      "without shared-memory objects, an argument over the frame limit is Rejected at submit, "
      "naming size and limit") {
    ft::LeakCheck leaks;
    for (auto t : {ferry::Transport::pipe, ferry::Transport::shm, ferry::Transport::zmq}) {
      CAPTURE(ferry::transport_name(t));
      ferry::Pool pool({.workers = 1, .transport = t, .object_threshold = 0});
      auto big = pool.submit(arg_length, std::string(70'000'000, 'x'));
      REQUIRE(big.wait_for(20s));  // never a hang
      try {
        big.get();
        FAIL("expected Rejected");
      } catch (const ferry::Rejected& e) {
        const std::string what = e.what();
        CHECK(what.find("FrameTooLarge") != std::string::npos);
        CHECK(what.find("7000000") != std::string::npos);  // its size (encoded: a little more)
        CHECK(what.find(std::to_string(ferry::kDefaultMaxFrame - 64)) != std::string::npos);
      }
      CHECK(pool.apply(arg_length, std::string(1000, 'y')) == 1000);
      CHECK(pool.stats().worker_deaths == 0);
    }
    leaks.verify();
  }

  TEST_CASE("a full /dev/shm fails a shm pool's tasks Rejected, naming it, with nothing left") {
    ft::LeakCheck leaks;
    {
      auto peer = ft::spawn_peer("pool_full_shm");
      auto ex = peer.wait_for(60s);
      REQUIRE(ex);
      if (ex->code == 77) {
        MESSAGE("skipped: cannot mount a private tmpfs on /dev/shm here (needs CAP_SYS_ADMIN)");
      } else {
        CHECK(ex->signal == 0);  // no SIGBUS
        CHECK(ex->code == 0);
      }
    }
    leaks.verify();
  }

  TEST_CASE("crash tasks do not charge the healthy tasks that finished beside them") {
    ft::LeakCheck leaks;
    for (auto t : {ferry::Transport::pipe, ferry::Transport::shm, ferry::Transport::zmq}) {
      CAPTURE(ferry::transport_name(t));
      ferry::Pool pool({.workers = 4, .transport = t, .max_retries = 3});
      std::vector<ferry::Future<std::int64_t>> squares;
      std::vector<ferry::Future<std::int64_t>> crashes;
      for (int i = 0; i < 196; ++i) {
        if (i % 19 == 5 && crashes.size() < 10) {
          crashes.push_back(pool.submit(ferry::builtin::crash, i));
        } else {
          squares.push_back(pool.submit(square, i));
        }
      }
      REQUIRE(crashes.size() == 10);
      REQUIRE(squares.size() == 186);
      int ok = 0;
      for (auto& f : squares) {
        try {
          (void)f.get();
          ++ok;
        } catch (const ferry::TaskFailure& e) {
          MESSAGE(std::string(e.what()));
        }
      }
      CHECK(ok == 186);
      for (auto& f : crashes)
        CHECK_THROWS_AS(f.get(), ferry::WorkerDied);
    }
    leaks.verify();
  }
}
