// Futures that compose: then, on_done, wait_any, wait_all, as_completed over mixed types and
// with a timeout, and per-call limits (ferry::with), with real worker processes.
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <ranges>
#include <set>
#include <string>
#include <thread>

#include "ferry/ferry.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;

namespace {

std::int64_t twice(std::int64_t x) {
  return 2 * x;
}
std::string shout(std::string s) {
  for (auto& c : s)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}
std::int64_t refuse(std::int64_t x) {
  throw std::domain_error("refused " + std::to_string(x));
}
// Blocks until the named event is set (so a test decides when it finishes), then returns x.
std::int64_t hold(std::string event, std::int64_t x) {
  auto e = ferry::Event::open(event).value();
  (void)e.wait();
  return x;
}
std::int32_t worker_pid(std::int32_t) {
  return static_cast<std::int32_t>(::getpid());
}
// Exits abruptly the first time (marker file absent), succeeds when re-run.
std::int64_t die_once(std::string marker) {
  if (::access(marker.c_str(), F_OK) != 0) {
    if (FILE* f = std::fopen(marker.c_str(), "w")) std::fclose(f);
    ::_exit(9);
  }
  return 7;
}

std::int64_t squared(std::int64_t x) {
  if (x == -1) throw std::invalid_argument("no square for -1");
  return x * x;
}
std::int64_t plus(std::int64_t a, std::int64_t b) {
  return a + b;
}
std::int64_t add2(std::int64_t a, std::int64_t b) {
  return a + b;
}
std::int64_t minus(std::int64_t a, std::int64_t b) {
  return a - b;
}

struct NotSerializable {  // a continuation's value is kept as it is: it needs no encoding
  std::unique_ptr<int> p;
  std::string text;
};

}  // namespace

FERRY_TASK(twice);
FERRY_TASK(shout);
FERRY_TASK(refuse);
FERRY_TASK(hold);
FERRY_TASK(worker_pid);
FERRY_TASK(die_once);
FERRY_TASK(squared);
FERRY_TASK(add2);
FERRY_COMBINE(squared, plus);

TEST_SUITE("coordinator.compose") {
  TEST_CASE("then chains run on the pool's callback thread, not the caller's, and keep values") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 2, .transport = ferry::Transport::shm});
      const auto caller = std::this_thread::get_id();
      std::atomic<bool> other_thread{false};
      auto f = pool.submit(twice, 21)
                   .then([&](std::int64_t v) {
                     other_thread = std::this_thread::get_id() != caller;
                     return std::to_string(v);
                   })
                   .then([](const std::string& s) { return s + "!"; });
      CHECK(f.get() == "42!");
      CHECK(other_thread.load());

      // A value the wire could not carry: then() keeps it as it is.
      auto g = pool.submit(shout, std::string("abc")).then([](std::string s) {
        return std::make_shared<NotSerializable>(
            NotSerializable{std::make_unique<int>(3), std::move(s)});
      });
      CHECK(g.get()->text == "ABC");
      CHECK(*g.get()->p == 3);
      // Void tasks chain too: fn takes nothing.
      auto v = pool.submit(twice, 1).then([](std::int64_t) {}).then([] { return 5; });
      CHECK(v.get() == 5);
    }
    leaks.verify();
  }

  TEST_CASE(
      "a failed task fails its continuation the same way, a throwing one is ContinuationError") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 1, .transport = ferry::Transport::pipe});
      std::atomic<int> ran{0};
      auto f = pool.submit(refuse, 3).then([&](std::int64_t x) {
        ++ran;
        return x;
      });
      CHECK_THROWS_AS(f.get(), ferry::RemoteError);
      CHECK(f.failure()->message.find("refused 3") != std::string::npos);
      CHECK(ran == 0);

      auto g = pool.submit(twice, 2).then(
          [](std::int64_t) -> int { throw std::out_of_range("too big"); });
      try {
        g.get();
        FAIL("expected ContinuationError");
      } catch (const ferry::ContinuationError& e) {
        CHECK(e.info().type == "std::out_of_range");
        CHECK(e.info().message == "too big");
        CHECK(std::string(e.what()).find("ContinuationError") == 0);
      }
      // Taking the Future itself lets the continuation look at the failure and recover.
      auto h = pool.submit(refuse, 4).then([](const ferry::Future<std::int64_t>& prev) {
        return prev.failure().has_value() ? -1 : prev.get();
      });
      CHECK(h.get() == -1);
    }
    leaks.verify();
  }

  TEST_CASE("a continuation may submit to the pool and wait, without stalling the results") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 2, .transport = ferry::Transport::zmq});
      auto f = pool.submit(twice, 5).then([&pool](std::int64_t v) {
        return pool.submit(twice, v).get();  // a round trip from the callback thread
      });
      CHECK(f.get() == 20);
    }
    leaks.verify();
  }

  TEST_CASE("on_done is called once per callback, also when registered after completion") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 2, .transport = ferry::Transport::shm});
      std::promise<std::int64_t> got;
      auto f = pool.submit(twice, 8);
      f.on_done([&](const ferry::Future<std::int64_t>& d) { got.set_value(d.get()); });
      auto fut = got.get_future();
      REQUIRE(fut.wait_for(20s) == std::future_status::ready);
      CHECK(fut.get() == 16);
      // Already finished: still called (on the callback thread), exactly once.
      std::atomic<int> calls{0};
      std::promise<void> second;
      f.on_done([&](const ferry::FutureBase&) {
        ++calls;
        second.set_value();
      });
      REQUIRE(second.get_future().wait_for(20s) == std::future_status::ready);
      // A throwing callback is reported as an event and does not stop the others.
      std::promise<void> third;
      f.on_done([](const ferry::FutureBase&) { throw std::runtime_error("callback fails"); });
      f.on_done([&](const ferry::FutureBase&) { third.set_value(); });
      REQUIRE(third.get_future().wait_for(20s) == std::future_status::ready);
      pool.shutdown();
      CHECK(calls == 1);
    }
    leaks.verify();
  }

  TEST_CASE(
      "wait_any returns the finished one and times out while none has, wait_all waits for all") {
    ft::LeakCheck leaks;
    {
      const std::string gate = "compose-gate-" + std::to_string(::getpid());
      auto event = ferry::Event::create(gate).value();
      ferry::Pool pool({.workers = 3, .transport = ferry::Transport::shm});
      REQUIRE(pool.wait_ready(20s));
      std::vector<ferry::Future<std::int64_t>> held{pool.submit(hold, gate, 1),
                                                    pool.submit(hold, gate, 2)};
      CHECK_FALSE(ferry::wait_any(held, 200ms).has_value());
      CHECK_FALSE(ferry::wait_all(held, 50ms));
      // Mixed result types through FutureBase: the quick string task finishes first.
      auto quick = pool.submit(shout, std::string("x"));
      auto first = ferry::wait_any({held[0], held[1], quick}, 20s);
      REQUIRE(first.has_value());
      CHECK(*first == 2);
      // Repeated timed waits leave no listeners behind on unfinished tasks.
      for (int i = 0; i < 1000; ++i)
        CHECK_FALSE(ferry::wait_any(held, 0ms).has_value());
      event.set();
      CHECK(ferry::wait_all(held, 20s));
      CHECK(ferry::wait_any(held) < 2);
      CHECK(held[0].get() + held[1].get() == 3);
      std::vector<ferry::Future<int>> none;
      CHECK_FALSE(ferry::wait_any(none, 1ms).has_value());
      CHECK_THROWS_AS(ferry::wait_any(none), std::invalid_argument);
      CHECK(ferry::wait_all(none, 1ms));
    }
    leaks.verify();
  }

  TEST_CASE("as_completed takes mixed result types and throws TimeoutError when time runs out") {
    ft::LeakCheck leaks;
    {
      const std::string gate = "compose-ac-" + std::to_string(::getpid());
      auto event = ferry::Event::create(gate).value();
      ferry::Pool pool({.workers = 2, .transport = ferry::Transport::pipe});
      REQUIRE(pool.wait_ready(20s));
      std::vector<ferry::FutureBase> mixed{pool.submit(shout, std::string("a")),
                                           pool.submit(twice, 4)};
      std::set<std::uint64_t> seen;
      auto it = ferry::as_completed(mixed, 20s);
      while (auto f = it.next())
        seen.insert(f->id());
      CHECK(seen.size() == 2);

      auto blocked = pool.submit(hold, gate, 9);
      auto slow = ferry::as_completed(std::vector{blocked}, 100ms);
      CHECK_THROWS_AS(slow.next(), ferry::TimeoutError);
      event.set();
      CHECK(blocked.get() == 9);
    }
    leaks.verify();
  }

  TEST_CASE("with() sets one task's retries and timeout, the others keep the pool's") {
    ft::LeakCheck leaks;
    {
      char tmpl[] = "/tmp/ferry-compose-XXXXXX";
      REQUIRE(::mkdtemp(tmpl) != nullptr);
      const std::string dir = tmpl;
      ferry::Pool pool({.workers = 2,
                        .transport = ferry::Transport::shm,
                        .max_retries = 3,
                        .task_timeout = std::chrono::milliseconds(0)});
      // No retries for this one: its worker's death is final.
      auto once = pool.submit(ferry::with({.max_retries = 0}), die_once, dir + "/a");
      try {
        once.get();
        FAIL("expected WorkerDied");
      } catch (const ferry::WorkerDied& e) {
        CHECK(e.info().max_attempts == 1);
      }
      // The pool's retries for the same task without with(): the re-run succeeds.
      CHECK(pool.submit(die_once, dir + "/b").get() == 7);

      // A timeout for this one only (the pool has none).
      const std::string gate = "compose-to-" + std::to_string(::getpid());
      auto event = ferry::Event::create(gate).value();
      auto timed = pool.submit(ferry::with({.timeout = 300ms, .max_retries = 0}), hold, gate, 1);
      try {
        timed.get();
        FAIL("expected TaskTimeout");
      } catch (const ferry::TaskTimeout& e) {
        CHECK(std::string(e.what()).find("300 ms") != std::string::npos);
      }
      event.set();
      CHECK(pool.submit(hold, gate, 2).get() == 2);
      std::filesystem::remove_all(dir);
    }
    leaks.verify();
  }

  TEST_CASE("map_reduce with combine_in_workers ships one partial per chunk, same answer") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 2, .transport = ferry::Transport::shm});
      std::int64_t expected = 0;
      for (std::int64_t i = 0; i < 1000; ++i)
        expected += i * i;
      const auto before = pool.stats().succeeded;
      auto sum =
          pool.map_reduce(squared, std::views::iota(std::int64_t{0}, std::int64_t{1000}),
                          std::int64_t{0}, plus, {.chunksize = 50, .combine_in_workers = true});
      CHECK(sum == expected);
      CHECK(pool.stats().succeeded - before == 20);  // 20 partials came back, not 1000 values
      // The same fold on the coordinator agrees.
      CHECK(pool.map_reduce(squared, std::views::iota(std::int64_t{0}, std::int64_t{1000}),
                            std::int64_t{0}, plus, {.chunksize = 50}) == expected);
      // An initial value is folded in once, on the coordinator, not once per chunk.
      CHECK(pool.map_reduce(squared, std::vector<std::int64_t>{1, 2, 3}, std::int64_t{100}, plus,
                            {.chunksize = 1, .combine_in_workers = true}) == 114);
      // A failing item fails the map_reduce with its error, after every chunk finished.
      CHECK_THROWS_AS(pool.map_reduce(squared, std::vector<std::int64_t>{1, -1, 3}, std::int64_t{0},
                                      plus, {.chunksize = 1, .combine_in_workers = true}),
                      ferry::RemoteError);
      // No FERRY_COMBINE for this pair: a clear error, before anything runs.
      try {
        (void)pool.map_reduce(squared, std::vector<std::int64_t>{1}, std::int64_t{0}, minus,
                              {.combine_in_workers = true});
        FAIL("expected an error");
      } catch (const ferry::Exception& e) {
        CHECK(std::string(e.what()).find("FERRY_COMBINE(squared, reduce)") != std::string::npos);
      }
    }
    leaks.verify();
  }

  TEST_CASE("task graphs: a Future argument makes the task wait in the pool, failures propagate") {
    ft::LeakCheck leaks;
    {
      const std::string gate = "compose-graph-" + std::to_string(::getpid());
      auto event = ferry::Event::create(gate).value();
      ferry::Pool pool({.workers = 2, .transport = ferry::Transport::zmq});
      // Level 1 waits on the gate; levels 2 and 3 are submitted at once, without waiting.
      auto a = pool.submit(hold, gate, std::int64_t{3});
      auto b = pool.submit(twice, a);            // 6
      auto c = pool.submit(add2, a, b);          // 9
      auto bad = pool.submit(refuse, a);         // fails
      auto after_bad = pool.submit(twice, bad);  // DependencyFailed
      auto last = pool.submit(add2, after_bad, c);
      CHECK_FALSE(c.ready());
      CHECK_FALSE(ferry::wait_any({b, c, after_bad}, 100ms).has_value());
      event.set();
      CHECK(c.get() == 9);
      try {
        after_bad.get();
        FAIL("expected DependencyFailed");
      } catch (const ferry::DependencyFailed& e) {
        const std::string what = e.what();
        CHECK(what.find("DependencyFailed") == 0);
        CHECK(what.find("task " + std::to_string(bad.id())) != std::string::npos);
        CHECK(what.find("refused 3") != std::string::npos);
      }
      CHECK_THROWS_AS(last.get(), ferry::DependencyFailed);
    }
    leaks.verify();
  }

  TEST_CASE("task graphs: cancelling a waiting task or its dependency cancels what depends on it") {
    ft::LeakCheck leaks;
    {
      const std::string gate = "compose-cancel-" + std::to_string(::getpid());
      auto event = ferry::Event::create(gate).value();
      ferry::Pool pool({.workers = 2, .transport = ferry::Transport::pipe});
      auto a = pool.submit(hold, gate, std::int64_t{1});
      auto b = pool.submit(twice, a);
      auto c = pool.submit(twice, b);
      CHECK(b.cancel());  // waiting: dropped at once
      CHECK_THROWS_AS(b.get(), ferry::Cancelled);
      CHECK_THROWS_AS(c.get(), ferry::Cancelled);
      auto d = pool.submit(twice, a);
      CHECK(a.cancel());
      CHECK_THROWS_AS(d.get(), ferry::Cancelled);
      event.set();
    }
    leaks.verify();
  }

  TEST_CASE("task graphs: the pool's drain runs waiting tasks, their futures outlive the pool") {
    ft::LeakCheck leaks;
    ferry::Future<std::int64_t> tail;
    {
      ferry::Pool pool({.workers = 2, .transport = ferry::Transport::shm});
      auto x = pool.submit(twice, 1);
      for (int i = 0; i < 20; ++i)
        x = pool.submit(twice, x);
      tail = x;
    }  // the destructor drains, waiting tasks included
    REQUIRE(tail.ready());
    CHECK(tail.get() == (std::int64_t{1} << 21));
    leaks.verify();
  }
}
