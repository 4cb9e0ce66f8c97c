// Actors (FERRY_ACTOR, Pool::actor, ActorDied) with real worker processes: call order under
// concurrency, restarts after SIGKILL, restarts used up, and the process's end with its handle
// and with its pool.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ferry/ferry.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;

namespace {

// Records every call it gets, in the order it ran them.
class Recorder {
 public:
  std::int64_t note(std::int32_t thread, std::int32_t seq) {
    log_.emplace_back(thread, seq);
    return static_cast<std::int64_t>(log_.size());
  }
  std::vector<std::pair<std::int32_t, std::int32_t>> log() const { return log_; }
  std::int32_t pid() const { return static_cast<std::int32_t>(::getpid()); }
  std::int64_t unnamed() const { return 0; }  // not given to FERRY_ACTOR

 private:
  std::vector<std::pair<std::int32_t, std::int32_t>> log_;
};

class Counter {
 public:
  explicit Counter(std::int64_t start) : n_(start) {
    if (start < 0) throw std::invalid_argument("a counter starts at 0 or more");
  }
  std::int64_t add(std::int64_t k) { return n_ += k; }
  std::int64_t get() const noexcept { return n_; }
  std::int32_t pid() const { return static_cast<std::int32_t>(::getpid()); }
  // Sets `started`, then waits for `gate`: a call that is surely running.
  std::int64_t block(const std::string& started, const std::string& gate) {
    ferry::Event::open(started).value().set();
    (void)ferry::Event::open(gate).value().wait();
    return n_;
  }

 private:
  std::int64_t n_;
};

// Whether pid is gone (reaped: not even a zombie is left).
bool gone(pid_t pid) {
  return ::kill(pid, 0) != 0 && errno == ESRCH;
}

std::string unique(const char* what) {
  static int n = 0;
  return std::string("actors-") + what + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(++n);
}

}  // namespace

FERRY_ACTOR(Recorder, note, log, pid);
FERRY_ACTOR(Counter, add, get, pid, block);

TEST_SUITE("coordinator.actors") {
  TEST_CASE("calls from several threads run one at a time in each thread's order, each once") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 2, .transport = ferry::Transport::shm});
      auto rec = pool.actor<Recorder>();
      REQUIRE(rec.wait_ready(30s));
      constexpr int kThreads = 4, kCalls = 200;
      std::vector<std::vector<ferry::Future<std::int64_t>>> futures(kThreads);
      std::vector<std::thread> threads;
      for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
          for (int i = 0; i < kCalls; ++i)
            futures[static_cast<std::size_t>(t)].push_back(rec.call(&Recorder::note, t, i));
        });
      }
      for (auto& th : threads)
        th.join();
      // Each call's result is the log's length when it ran: within a thread, increasing.
      for (int t = 0; t < kThreads; ++t) {
        std::int64_t last = 0;
        for (auto& f : futures[static_cast<std::size_t>(t)]) {
          const auto at = f.get();
          CHECK(at > last);
          last = at;
        }
      }
      const auto log = rec.call(&Recorder::log).get();
      REQUIRE(log.size() == std::size_t{kThreads * kCalls});
      std::map<std::int32_t, std::int32_t> next;
      for (auto [t, seq] : log) {
        CHECK(seq == next[t]);  // in order, none twice, none missing
        ++next[t];
      }
      for (int t = 0; t < kThreads; ++t)
        CHECK(next[t] == kCalls);
      // Its own process, not one of the pool's task slots.
      const pid_t pid = rec.call(&Recorder::pid).get();
      CHECK(pid == rec.pid());
      for (const auto& w : pool.stats().workers)
        CHECK(w.pid != pid);
      CHECK(pool.size() == 2);
    }
    leaks.verify();
  }

  TEST_CASE("a SIGKILLed actor fails its calls with ActorDied, restarts fresh, later calls work") {
    ft::LeakCheck leaks;
    for (auto transport : {ferry::Transport::shm, ferry::Transport::zmq}) {
      CAPTURE(ferry::transport_name(transport));
      const auto started_name = unique("started"), gate_name = unique("gate");
      auto started = ferry::Event::create(started_name).value();
      auto gate = ferry::Event::create(gate_name).value();
      ferry::Pool pool({.workers = 1, .transport = transport});
      auto c = pool.actor<Counter>(ferry::ActorOptions{.max_restarts = 2}, 10);
      CHECK(c.call(&Counter::add, 5).get() == 15);
      const pid_t first = c.call(&Counter::pid).get();
      auto running = c.call(&Counter::block, started_name, gate_name);
      auto queued = c.call(&Counter::add, 1);  // sent behind the running one
      REQUIRE(started.wait_for(30s));
      REQUIRE(::kill(first, SIGKILL) == 0);
      for (auto* f : {&running, &queued}) {
        try {
          const auto v = f->get();
          FAIL("expected ActorDied, got " << v << (f == &running ? " (running)" : " (queued)"));
        } catch (const ferry::ActorDied& e) {
          const std::string what = e.what();
          CHECK(what.find("ActorDied") == 0);
          CHECK(what.find("SIGKILL") != std::string::npos);
          CHECK(what.find("restart 1 of at most 2") != std::string::npos);
          CHECK(e.info().signal == SIGKILL);
        }
      }
      REQUIRE(c.wait_restarted(1, 30s));
      CHECK(c.restarts() == 1);
      // Fresh state from the constructor's arguments, in a new process.
      CHECK(c.call(&Counter::add, 5).get() == 15);
      const pid_t second = c.call(&Counter::pid).get();
      CHECK(second != first);
      CHECK(second == c.pid());
      CHECK(gone(first));
    }
    leaks.verify();
  }

  TEST_CASE("once its restarts are used up, every call fails with ActorDied naming the cause") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 1, .transport = ferry::Transport::pipe});
      auto c = pool.actor<Counter>(ferry::ActorOptions{.max_restarts = 1}, 0);
      REQUIRE(c.wait_ready(30s));
      REQUIRE(::kill(c.call(&Counter::pid).get(), SIGKILL) == 0);
      REQUIRE(c.wait_restarted(1, 30s));
      const pid_t second = c.call(&Counter::pid).get();
      REQUIRE(::kill(second, SIGKILL) == 0);
      CHECK_FALSE(c.wait_restarted(2, 30s));  // never: restarts are used up
      for (int i = 0; i < 3; ++i) {
        try {
          c.call(&Counter::add, 1).get();
          FAIL("expected ActorDied");
        } catch (const ferry::ActorDied& e) {
          const std::string what = e.what();
          CHECK(what.find("SIGKILL") != std::string::npos);
          CHECK(what.find("max_restarts (1) are used up") != std::string::npos);
          CHECK(e.info().signal == SIGKILL);
        }
      }
      CHECK(c.restarts() == 1);
      CHECK(c.pid() == 0);
      CHECK(gone(second));
    }
    leaks.verify();
  }

  TEST_CASE("a constructor that throws is a death too: ActorDied names what it threw") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 1, .transport = ferry::Transport::shm});
      auto c = pool.actor<Counter>(ferry::ActorOptions{.max_restarts = 0}, -1);
      try {
        c.call(&Counter::get).get();
        FAIL("expected ActorDied");
      } catch (const ferry::ActorDied& e) {
        CHECK(std::string(e.what()).find("its constructor threw std::invalid_argument: a counter "
                                         "starts at 0 or more") != std::string::npos);
      }
    }
    leaks.verify();
  }

  TEST_CASE("the handle's end finishes its calls and reaps the process") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 1, .transport = ferry::Transport::shm});
      pid_t pid = 0;
      std::vector<ferry::Future<std::int64_t>> sums;
      {
        auto c = pool.actor<Counter>(std::int64_t{1});
        pid = c.call(&Counter::pid).get();
        for (int i = 0; i < 50; ++i)
          sums.push_back(c.call(&Counter::add, 1));
        auto moved = std::move(c);  // the handle moves; the actor stays
        CHECK(moved.valid());
        CHECK_FALSE(c.valid());
      }
      CHECK(gone(pid));
      CHECK(sums.back().get() == 51);  // the calls made before the end ran
      CHECK(pool.submit(ferry::builtin::square, 7).get() == 49);  // the pool is untouched
    }
    leaks.verify();
  }

  TEST_CASE("pool shutdown stops live actors, whose later calls fail, the handle staying usable") {
    ft::LeakCheck leaks;
    {
      const auto started_name = unique("started"), gate_name = unique("gate");
      auto started = ferry::Event::create(started_name).value();
      auto gate = ferry::Event::create(gate_name).value();
      std::optional<ferry::Actor<Counter>> kept;
      pid_t a = 0, b = 0;
      {
        ferry::Pool pool({.workers = 1, .transport = ferry::Transport::zmq});
        auto c1 = pool.actor<Counter>(1);
        kept.emplace(pool.actor<Counter>(2));
        a = c1.call(&Counter::pid).get();
        b = kept->call(&Counter::pid).get();
        auto blocked = c1.call(&Counter::block, started_name, gate_name);
        REQUIRE(started.wait_for(30s));
        pool.shutdown(ferry::ShutdownMode::cancel);
        CHECK(gone(a));
        CHECK(gone(b));
        CHECK_THROWS_AS(blocked.get(), ferry::TaskFailure);
        CHECK_THROWS_AS(c1.call(&Counter::get).get(), ferry::Cancelled);
      }
      CHECK_THROWS_AS(kept->call(&Counter::get).get(), ferry::Cancelled);
      kept.reset();
    }
    leaks.verify();
  }

  TEST_CASE("a method FERRY_ACTOR did not name is refused, naming the class") {
    ferry::Pool pool({.workers = 1, .transport = ferry::Transport::pipe});
    auto r = pool.actor<Recorder>();
    CHECK_THROWS_WITH_AS(r.call(&Recorder::unnamed),
                         doctest::Contains("Actor<Recorder>::call: not a method FERRY_ACTOR"),
                         ferry::Exception);
    CHECK(r.call(&Recorder::note, 0, 0).get() == 1);
  }
}
