// The sync primitives under contention from several threads of one process (run under TSan:
// label "threads"). The threads share one handle per primitive: ThreadSanitizer keys a mutex
// by its address, and two handles map the same segment at two addresses.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <thread>
#include <vector>

#include "ferry/ipc/sync.hpp"
#include "testing.hpp"

using namespace ferry;
using namespace ferry::ipc;
using namespace std::chrono_literals;

namespace {
constexpr int kThreads = 4;

template <class F>
void run_threads(int n, F f) {
  std::vector<std::thread> ts;
  for (int i = 0; i < n; ++i)
    ts.emplace_back(f, i);
  for (auto& t : ts)
    t.join();
}
}  // namespace

TEST_SUITE("ipc.sync.threads") {
  TEST_CASE("a Lock makes 4 threads' increments of a plain counter exact") {
    testing::LeakCheck leaks;
    {
      auto lock = Lock::create("lock");
      REQUIRE(lock);
      std::int64_t counter = 0;  // protected by the Lock only
      constexpr int kPer = 20000;
      std::atomic<int> failures{0};
      run_threads(kThreads, [&](int) {
        for (int i = 0; i < kPer; ++i) {
          auto g = lock->guard();
          if (!g) {
            ++failures;
            return;
          }
          ++counter;
        }
      });
      CHECK(failures == 0);
      CHECK(counter == kThreads * kPer);
    }
    leaks.verify();
  }

  TEST_CASE("an RLock re-entered by 4 threads stays exclusive and counts depth per owner") {
    testing::LeakCheck leaks;
    {
      auto lock = RLock::create("rlock");
      REQUIRE(lock);
      std::int64_t counter = 0;
      std::atomic<int> failures{0};
      run_threads(kThreads, [&](int) {
        for (int i = 0; i < 5000; ++i) {
          auto outer = lock->guard();
          auto inner = lock->guard();
          if (!outer || !inner || lock->depth() != 2) ++failures;
          ++counter;
        }
        if (lock->depth() != 0) ++failures;
      });
      CHECK(failures == 0);
      CHECK(counter == kThreads * 5000);
    }
    leaks.verify();
  }

  TEST_CASE("a Semaphore of 2 never lets more than 2 of 4 threads in at once") {
    testing::LeakCheck leaks;
    {
      auto sem = Semaphore::create("sem", 2);
      REQUIRE(sem);
      std::atomic<int> inside{0}, most{0}, failures{0};
      run_threads(kThreads, [&](int) {
        for (int i = 0; i < 3000; ++i) {
          auto g = sem->guard(Deadline::after(30s));
          if (!g) {
            ++failures;
            return;
          }
          const int now = ++inside;
          int m = most.load();
          while (now > m && !most.compare_exchange_weak(m, now)) {
          }
          --inside;
        }
      });
      CHECK(failures == 0);
      CHECK(most.load() <= 2);
      CHECK(most.load() >= 1);
      CHECK(sem->value() == 2);
    }
    leaks.verify();
  }

  TEST_CASE("a Condition hands 10000 items from 2 producer threads to 2 consumer threads") {
    testing::LeakCheck leaks;
    {
      auto cond = Condition::create("cond");
      REQUIRE(cond);
      std::deque<int> q;  // protected by the condition's lock
      int produced_done = 0;
      std::int64_t sum = 0;
      constexpr int kPerProducer = 5000;
      std::atomic<int> failures{0};
      run_threads(4, [&](int id) {
        if (id < 2) {
          for (int i = 1; i <= kPerProducer; ++i) {
            auto g = cond->lock();
            if (!g) {
              ++failures;
              return;
            }
            if (!cond->wait(
                    *g, [&] { return q.size() < 16; }, Deadline::after(30s)))
              ++failures;
            q.push_back(i);
            cond->notify_all();
          }
          auto g = cond->lock();
          ++produced_done;
          cond->notify_all();
        } else {
          for (;;) {
            auto g = cond->lock();
            if (!g) {
              ++failures;
              return;
            }
            if (!cond->wait(
                    *g, [&] { return !q.empty() || produced_done == 2; }, Deadline::after(30s))) {
              ++failures;
              return;
            }
            if (q.empty()) return;
            sum += q.front();
            q.pop_front();
            cond->notify_all();
          }
        }
      });
      CHECK(failures == 0);
      CHECK(sum == 2LL * kPerProducer * (kPerProducer + 1) / 2);
    }
    leaks.verify();
  }

  TEST_CASE("a Barrier of 4 keeps 4 threads in step for 200 rounds") {
    testing::LeakCheck leaks;
    {
      auto bar = Barrier::create("bar", kThreads);
      REQUIRE(bar);
      constexpr int kRounds = 200;
      std::vector<std::atomic<int>> round_of(kThreads);
      std::atomic<int> failures{0};
      run_threads(kThreads, [&](int id) {
        for (int r = 0; r < kRounds; ++r) {
          round_of[static_cast<std::size_t>(id)].store(r);
          if (!bar->wait(Deadline::after(30s))) {
            ++failures;
            return;
          }
          // Everyone has reached round r (nobody can be past r+1's barrier yet).
          for (auto& other : round_of) {
            const int o = other.load();
            if (o != r && o != r + 1) ++failures;
          }
          if (!bar->wait(Deadline::after(30s))) {
            ++failures;
            return;
          }
        }
      });
      CHECK(failures == 0);
      CHECK_FALSE(bar->broken());
    }
    leaks.verify();
  }

  TEST_CASE("an Event set by one thread wakes 3 waiting threads") {
    testing::LeakCheck leaks;
    {
      auto ev = Event::create("ev");
      REQUIRE(ev);
      std::atomic<int> woke{0};
      std::vector<std::thread> ts;
      for (int i = 0; i < 3; ++i)
        ts.emplace_back([&] {
          if (ev->wait(Deadline::after(30s))) ++woke;
        });
      ev->set();
      for (auto& t : ts)
        t.join();
      CHECK(woke == 3);
    }
    leaks.verify();
  }
}
