// A task frame the coordinator cannot build: the thread sending a worker's outbox copies each
// task's arguments into its frame, and that copy can fail (std::bad_alloc). This binary
// replaces operator new so a test can make the next allocation of at least N bytes fail, at the
// one place a task's arguments are copied: the frame.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <new>
#include <string>
#include <tuple>

#include "ferry/ferry.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;

namespace {

std::atomic<std::size_t> g_fail_from{0};  // 0: no allocation fails
std::atomic<int> g_failed{0};

std::int64_t arg_length(std::string s) {
  return static_cast<std::int64_t>(s.size());
}

}  // namespace

void* operator new(std::size_t n) {
  std::size_t from = g_fail_from.load(std::memory_order_relaxed);
  if (from != 0 && n >= from && g_fail_from.compare_exchange_strong(from, 0)) {
    g_failed.fetch_add(1);
    throw std::bad_alloc();
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}

FERRY_TASK(arg_length);

TEST_SUITE("coordinator.frame_alloc") {
  // Before: the exception left the worker's outbox marked as sending, so no frame reached that
  // worker again (every later task waited forever), and submit threw bad_alloc for a task it
  // had accepted.
  TEST_CASE(
      "a task whose frame cannot be built fails alone, Rejected, and its worker still runs "
      "the next ones") {
    ft::LeakCheck leaks;
    {
      ferry::PoolOptions o;
      o.workers = 1;
      o.transport = ferry::Transport::pipe;
      o.object_threshold = 0;  // the arguments travel in the frame
      ferry::Pool pool(o);
      REQUIRE(pool.wait_ready(20s));
      constexpr std::size_t kBig = std::size_t{8} << 20;
      ferry::Bytes args = ferry::encode_value(std::tuple<std::string>(std::string(kBig, 'x')));
      g_fail_from = kBig;  // the frame holds the arguments and more
      ferry::FutureBase f;
      CHECK_NOTHROW(f = pool.submit_encoded("arg_length", std::move(args)));
      g_fail_from = 0;
      CHECK(g_failed.load() == 1);
      REQUIRE(f.valid());
      REQUIRE(f.wait_for(20s));
      const auto failure = f.failure();
      REQUIRE(failure);
      CHECK(failure->kind == ferry::FailureKind::rejected);
      CHECK(failure->message.find("task frame could not be built") != std::string::npos);
      CHECK(failure->message.find("bad_alloc") != std::string::npos);
      // The same worker (the only one) takes the next tasks.
      for (int i = 0; i < 3; ++i) {
        auto next = pool.submit(arg_length, std::string(static_cast<std::size_t>(i), 'y'));
        REQUIRE(next.wait_for(20s));
        CHECK(next.get() == i);
      }
      CHECK(pool.stats().worker_deaths == 0);
      pool.shutdown(ferry::ShutdownMode::drain);
    }
    leaks.verify();
  }
}
