// Actors placed on remote workers (ActorPlacement::remote) that joined over loopback TCP: state
// kept across calls in order, the worker kept from ordinary tasks while the actor lives and
// given back after, SIGKILL of that worker (ActorDied, restart on another remote worker), and
// the clear errors when no remote worker is free or the restarts are used up.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "ferry/ferry.hpp"
#include "ferry/shared/session.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;

namespace {

class Tally {
 public:
  explicit Tally(std::int64_t start) : n_(start) {}
  // Returns the running total: in call order, the k-th add(1) returns start + k.
  std::int64_t add(std::int64_t k) { return n_ += k; }
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

// An ordinary task: which process ran it.
std::int32_t where_ran(std::int32_t) {
  return static_cast<std::int32_t>(::getpid());
}
// An ordinary task that holds its worker until `gate` is set (after setting `started`).
std::int32_t hold(std::string started, std::string gate) {
  ferry::Event::open(started).value().set();
  (void)ferry::Event::open(gate).value().wait();
  return static_cast<std::int32_t>(::getpid());
}

std::string unique(const char* what) {
  static int n = 0;
  return std::string("ractors-") + what + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(++n);
}

ferry::PoolOptions remote_only() {
  ferry::PoolOptions o;
  o.workers = 0;
  o.listen = "tcp://127.0.0.1:0";
  o.heartbeat_interval = 200ms;
  o.heartbeat_timeout = 1000ms;
  o.startup_timeout = 20s;
  return o;
}

// This test binary as a remote worker: it has the actor's methods and the tasks above. In this
// session, so that it finds the test's named events (a worker on another host could not).
ft::Child join(ferry::Pool& pool, const std::string& name) {
  ft::SpawnOptions o;
  o.env.push_back("FERRY_SESSION=" + ferry::SessionId::current().str());
  return ft::spawn(ft::self_exe(),
                   {"--ferry-worker", "--connect", pool.listen_endpoint(), "--name", name}, o);
}

// Whether two `hold` tasks run at once (so two workers take ordinary tasks): both start
// within the timeout.
bool two_run_at_once(ferry::Pool& pool, std::chrono::milliseconds timeout) {
  const auto s1 = unique("s1"), s2 = unique("s2"), g = unique("gate");
  auto e1 = ferry::Event::create(s1).value();
  auto e2 = ferry::Event::create(s2).value();
  auto gate = ferry::Event::create(g).value();
  auto a = pool.submit(hold, s1, g);
  auto b = pool.submit(hold, s2, g);
  const bool both = e1.wait_for(timeout) && e2.wait_for(timeout);
  gate.set();
  const auto pa = a.get(), pb = b.get();
  return both && pa != pb;
}

const ferry::ActorOptions kRemote{.max_restarts = 2, .placement = ferry::ActorPlacement::remote};

}  // namespace

FERRY_ACTOR(Tally, add, pid, block);
FERRY_TASK(where_ran);
FERRY_TASK(hold);

TEST_SUITE("coordinator.remote_actors") {
  TEST_CASE(
      "a remote actor keeps its state in call order, and its worker takes no task until it ends") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool(remote_only());
      auto a = join(pool, "alpha");
      auto b = join(pool, "beta");
      REQUIRE(pool.wait_workers(2, 20s));
      const std::set<pid_t> workers{a.pid(), b.pid()};
      pid_t actor_pid = 0;
      CHECK(pool.size() == 2);
      {
        auto t = pool.actor<Tally>(kRemote, 100);
        REQUIRE(t.wait_ready(20s));
        actor_pid = t.pid();
        CHECK(pool.size() == 1);  // the actor's worker is not a task slot
        CHECK(workers.count(actor_pid) == 1);
        // Calls and ordinary tasks interleaved: the calls see each other's effects in order,
        // and no ordinary task lands on the actor's worker.
        std::vector<ferry::Future<std::int64_t>> calls;
        std::vector<ferry::Future<std::int32_t>> tasks;
        for (int i = 0; i < 200; ++i) {
          calls.push_back(t.call(&Tally::add, 1));
          tasks.push_back(pool.submit(where_ran, i));
        }
        bool in_order = true;
        for (std::size_t i = 0; i < calls.size(); ++i) {
          in_order = in_order && calls[i].get() == 101 + static_cast<std::int64_t>(i);
        }
        CHECK(in_order);
        std::set<pid_t> ran;
        for (auto& f : tasks)
          ran.insert(f.get());
        CHECK(ran.count(actor_pid) == 0);
        CHECK(ran.size() == 1);
        CHECK(t.call(&Tally::pid).get() == actor_pid);
        // One worker serves tasks: two cannot run at once.
        CHECK_FALSE(two_run_at_once(pool, 500ms));
      }
      // The handle is gone: its worker serves ordinary tasks again.
      CHECK(two_run_at_once(pool, 20s));
      CHECK(pool.size() == 2);
      pool.shutdown();
      ft::expect_exit(a, 0);
      ft::expect_exit(b, 0);
    }
    leaks.verify();
  }

  TEST_CASE("SIGKILL of its remote worker: calls fail with ActorDied, it restarts on another") {
    ft::LeakCheck leaks;
    {
      const auto started_name = unique("started"), gate_name = unique("gate");
      auto started = ferry::Event::create(started_name).value();
      auto gate = ferry::Event::create(gate_name).value();
      ferry::Pool pool(remote_only());
      auto a = join(pool, "alpha");
      auto b = join(pool, "beta");
      REQUIRE(pool.wait_workers(2, 20s));
      auto t = pool.actor<Tally>(kRemote, 10);
      CHECK(t.call(&Tally::add, 5).get() == 15);
      const pid_t first = t.pid();
      auto running = t.call(&Tally::block, started_name, gate_name);
      auto queued = t.call(&Tally::add, 1);  // behind the running one
      REQUIRE(started.wait_for(20s));
      ft::Child& victim = a.pid() == first ? a : b;
      ft::Child& other = a.pid() == first ? b : a;
      victim.kill(SIGKILL);
      REQUIRE(victim.wait_for(20s).has_value());
      for (auto* f : {&running, &queued}) {
        try {
          const auto v = f->get();
          FAIL("expected ActorDied, got " << v);
        } catch (const ferry::ActorDied& e) {
          const std::string what = e.what();
          CHECK(what.find("ActorDied") == 0);
          CHECK(what.find("remote worker") != std::string::npos);
          CHECK(what.find("restarted on another remote worker") != std::string::npos);
        }
      }
      REQUIRE(t.wait_restarted(1, 20s));
      CHECK(t.restarts() == 1);
      CHECK(t.pid() == other.pid());
      // Fresh state from the constructor's arguments, on the other worker.
      CHECK(t.call(&Tally::add, 5).get() == 15);
      CHECK(t.call(&Tally::pid).get() == other.pid());
      // A third worker joins: ordinary tasks go there, never to the actor's.
      auto c = join(pool, "gamma");
      REQUIRE(pool.wait_workers(2, 20s));
      for (int i = 0; i < 50; ++i)
        CHECK(pool.submit(where_ran, i).get() == c.pid());
      pool.shutdown();
      ft::expect_exit(other, 0);
      ft::expect_exit(c, 0);
    }
    leaks.verify();
  }

  TEST_CASE("its restarts used up, or no remote worker to restart on: ActorDied names why") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool(remote_only());
      auto a = join(pool, "alpha");
      REQUIRE(pool.wait_workers(1, 20s));
      auto t = pool.actor<Tally>(
          ferry::ActorOptions{.max_restarts = 0, .placement = ferry::ActorPlacement::remote}, 1);
      CHECK(t.call(&Tally::add, 1).get() == 2);
      a.kill(SIGKILL);
      REQUIRE(a.wait_for(20s).has_value());
      CHECK_FALSE(t.wait_restarted(1, 20s));
      try {
        (void)t.call(&Tally::add, 1).get();
        FAIL("expected ActorDied");
      } catch (const ferry::ActorDied& e) {
        const std::string what = e.what();
        CHECK(what.find("max_restarts (0)") != std::string::npos);
        CHECK(what.find("remote worker") != std::string::npos);
      }
      // With a restart allowed but no worker left to place it on within its start-up timeout.
      auto b = join(pool, "beta");
      REQUIRE(pool.wait_workers(1, 20s));
      auto u = pool.actor<Tally>(ferry::ActorOptions{.max_restarts = 1,
                                                     .startup_timeout = 300ms,
                                                     .placement = ferry::ActorPlacement::remote},
                                 1);
      REQUIRE(u.wait_ready(20s));
      b.kill(SIGKILL);
      REQUIRE(b.wait_for(20s).has_value());
      CHECK_FALSE(u.wait_restarted(1, 20s));
      try {
        (void)u.call(&Tally::add, 1).get();
        FAIL("expected ActorDied");
      } catch (const ferry::ActorDied& e) {
        CHECK(std::string(e.what()).find("no free remote worker to restart it on") !=
              std::string::npos);
      }
    }
    leaks.verify();
  }

  TEST_CASE("no free remote worker at creation: a clear error after the start-up timeout") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool(remote_only());
      auto opt = kRemote;
      opt.startup_timeout = 200ms;
      try {
        (void)pool.actor<Tally>(opt, 1);
        FAIL("expected ferry::Exception");
      } catch (const ferry::Exception& e) {
        const std::string what = e.what();
        CHECK(what.find("no free remote worker") != std::string::npos);
        CHECK(what.find("0 remote worker(s) joined") != std::string::npos);
        CHECK(what.find("ferry-worker --connect") != std::string::npos);
      }
      // A worker on its way: the actor waits for it to join (kRemote: the pool's 20 s). Then
      // it is held by this first actor, and a second one has none.
      auto a = join(pool, "alpha");
      auto first = pool.actor<Tally>(kRemote, 1);
      REQUIRE(first.wait_ready(20s));
      CHECK(first.pid() == a.pid());
      CHECK_THROWS_WITH_AS((void)pool.actor<Tally>(opt, 1), doctest::Contains("1 held by actors"),
                           ferry::Exception);
      CHECK(first.call(&Tally::add, 1).get() == 2);
      pool.shutdown();
      ft::expect_exit(a, 0);
    }
    {
      // A pool that remote workers cannot join.
      ferry::Pool local({.workers = 1});
      CHECK_THROWS_WITH_AS((void)local.actor<Tally>(kRemote, 1),
                           doctest::Contains("PoolOptions::listen"), ferry::Exception);
    }
    leaks.verify();
  }
}
