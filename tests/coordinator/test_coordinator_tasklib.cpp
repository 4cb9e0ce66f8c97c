// Task libraries (ferry_add_task_library) and per-task routing: a library loaded by a pool and
// its self-exec workers, by stock ferry-worker --tasks and by ferry-coordinator --tasks; pools
// mixing workers that serve different tasks; the errors of a library that cannot be loaded.
//
// This binary links library A directly (as a user program that calls its tasks by pointer
// does) and names it in PoolOptions::task_libraries, so its pools know A's tasks.
#include <doctest/doctest.h>
#include <unistd.h>

#include <mutex>
#include <set>
#include <vector>

#include "ferry/ferry.hpp"
#include "tasks_a.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;

namespace {

using ft::Events;

// A pool of remote workers only (ferry-worker processes this test starts), knowing library A.
ferry::PoolOptions remote_only(Events& ev) {
  ferry::PoolOptions o;
  o.workers = 0;
  o.listen = "tcp://127.0.0.1:0";
  o.heartbeat_interval = 200ms;
  o.heartbeat_timeout = 2000ms;
  o.on_event = ev.sink();
  o.task_libraries = {FERRY_TASKS_A};
  return o;
}

ft::Child start_worker(const std::string& endpoint, std::vector<std::string> extra) {
  std::vector<std::string> args{"--connect", endpoint};
  args.insert(args.end(), extra.begin(), extra.end());
  return ft::spawn(FERRY_WORKER_EXE, args);
}

template <class F>
std::string rejected_text(F&& f) {
  try {
    (void)f.get();
  } catch (const ferry::Rejected& e) {
    return e.what();
  }
  return "(not rejected)";
}

bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

TEST_SUITE("coordinator.tasklib") {
  TEST_CASE(
      "load_library: a missing file, a plain .so and another protocol's library are "
      "refused, naming the file and the reason") {
    auto& reg = ferry::TaskRegistry::instance();
    auto missing = reg.load_library("/nonexistent/libnothing.so");
    REQUIRE_FALSE(missing);
    CHECK(contains(missing.error().detail, "/nonexistent/libnothing.so"));
    CHECK(contains(missing.error().detail, "No such file"));

    auto plain = reg.load_library(FERRY_TEST_NOT_A_LIBRARY);
    REQUIRE_FALSE(plain);
    CHECK(contains(plain.error().detail, FERRY_TEST_NOT_A_LIBRARY));
    CHECK(contains(plain.error().detail, "not a ferry task library"));

    auto old = reg.load_library(FERRY_TEST_OLD_PROTOCOL);
    REQUIRE_FALSE(old);
    CHECK(contains(old.error().detail, FERRY_TEST_OLD_PROTOCOL));
    CHECK(contains(old.error().detail,
                   "protocol 2, this program speaks " + std::to_string(ferry::kProtocolVersion)));
    CHECK(reg.libraries().empty());  // nothing half-loaded

    // B's lib_triple is a different function from A's (linked into this binary).
    REQUIRE(reg.load_library(FERRY_TASKS_A));
    auto clash = reg.load_library(FERRY_TASKS_B);
    REQUIRE_FALSE(clash);
    CHECK(contains(clash.error().detail, "task 'lib_triple' is already registered"));
    CHECK(reg.libraries().size() == 1);
  }

  TEST_CASE(
      "a pool with task_libraries runs the library's tasks, struct results included, on "
      "its self-exec workers") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 2, .task_libraries = {FERRY_TASKS_A}});
      CHECK(pool.apply(tasklib::lib_triple, 14) == 42);
      const auto d =
          pool.apply(tasklib::digest, std::string("xs"), std::vector<std::int64_t>{1, 2, 3});
      CHECK(d.name == "xs");
      CHECK(d.sum == 6);
      CHECK(d.count == 3);
      const auto m = pool.apply(tasklib::merge, d, d);
      CHECK(m.sum == 12);
      const auto tripled = pool.map(tasklib::lib_triple, std::vector<std::int64_t>{1, 2, 3});
      CHECK(tripled == std::vector<std::int64_t>{3, 6, 9});
      CHECK(pool.apply(ferry::builtin::square, 9) == 81);
    }
    leaks.verify();
  }

  TEST_CASE(
      "a pool mixing a worker that has the library and one that has not sends the "
      "library's tasks to the first only, built-in tasks to both") {
    ft::LeakCheck leaks;
    Events ev;
    {
      ferry::Pool pool(remote_only(ev));
      const std::string ep = pool.listen_endpoint();
      auto alpha = start_worker(ep, {"--tasks", FERRY_TASKS_A, "--name", "alpha"});
      auto beta = start_worker(ep, {"--name", "beta"});
      REQUIRE(pool.wait_workers(2, 30s));
      std::vector<std::int64_t> items(200);
      const auto pids = pool.map(tasklib::lib_pid, items, 1);
      CHECK(std::set<std::int64_t>(pids.begin(), pids.end()) ==
            std::set<std::int64_t>{alpha.pid()});
      // Slow built-in tasks, more than one worker can hold: both take some.
      std::vector<ferry::Future<std::int64_t>> naps;
      for (int i = 0; i < 8; ++i)
        naps.push_back(pool.submit(ferry::builtin::sleep_ms, 50));
      for (auto& f : naps)
        CHECK(f.get() == 50);
      std::uint64_t alpha_tasks = 0, beta_tasks = 0;
      for (const auto& w : pool.stats().workers) {
        if (w.name == "alpha") alpha_tasks = w.tasks;
        if (w.name == "beta") beta_tasks = w.tasks;
      }
      CHECK(alpha_tasks >= 200);
      CHECK(beta_tasks > 0);
      pool.shutdown();
      for (auto* w : {&alpha, &beta})
        ft::expect_exit(*w, 0);
    }
    leaks.verify();
  }

  TEST_CASE("a task no worker serves fails at submit with Rejected naming the task") {
    ft::LeakCheck leaks;
    Events ev;
    {
      ferry::Pool pool(remote_only(ev));
      auto beta = start_worker(pool.listen_endpoint(), {"--name", "beta"});
      REQUIRE(pool.wait_workers(1, 30s));
      auto f = pool.submit(tasklib::lib_triple, 1);
      CHECK(f.wait_for(0ms));  // failed at submit, not queued
      const std::string what = rejected_text(f);
      CHECK(contains(what, "no worker serves task 'lib_triple' (long) -> long"));
      CHECK(contains(what, "--tasks"));
      CHECK(pool.apply(ferry::builtin::square, 3) == 9);  // the worker serves the rest
      pool.shutdown();
      ft::expect_exit(beta, 0);
    }
    leaks.verify();
  }

  TEST_CASE(
      "a worker whose library has another signature for a task is never given it, and "
      "the refusal names the task and both signatures") {
    ft::LeakCheck leaks;
    Events ev;
    {
      ferry::Pool pool(remote_only(ev));
      auto gamma =
          start_worker(pool.listen_endpoint(), {"--tasks", FERRY_TASKS_B, "--name", "gamma"});
      REQUIRE(pool.wait_workers(1, 30s));
      const std::string what = rejected_text(pool.submit(tasklib::lib_triple, 1));
      CHECK(contains(what,
                     "task 'lib_triple' has another signature there: worker "
                     "(std::string) -> std::string, this program (long) -> long"));
      CHECK(ev.has("it will not be given that task"));
      pool.shutdown();
      ft::expect_exit(gamma, 0);
    }
    leaks.verify();
  }

  TEST_CASE(
      "tasks queued before any worker joined wait, then fail as unserved when the first "
      "worker to join does not serve them") {
    ft::LeakCheck leaks;
    Events ev;
    {
      ferry::Pool pool(remote_only(ev));
      auto early = pool.submit(tasklib::lib_triple, 2);
      auto plain = pool.submit(ferry::builtin::square, 5);
      CHECK_FALSE(early.wait_for(0ms));  // nobody to decide yet: it waits
      auto beta = start_worker(pool.listen_endpoint(), {"--name", "beta"});
      CHECK(contains(rejected_text(early), "no worker serves task 'lib_triple'"));
      CHECK(plain.get() == 25);
      pool.shutdown();
      ft::expect_exit(beta, 0);
    }
    leaks.verify();
  }

  TEST_CASE("ferry-worker --tasks with a missing file exits 5, naming the file") {
    const auto r =
        ft::run(FERRY_WORKER_EXE,
                {"--tasks", "/nonexistent/libx.so", "--connect", "tcp://127.0.0.1:9"}, 30s);
    CHECK(r.status.code == 5);
    CHECK(contains(r.err, "task library /nonexistent/libx.so: cannot open it"));
  }

  TEST_CASE(
      "ferry-coordinator --tasks: tasks lists the library's tasks with readable "
      "signatures, map runs one, and a bad library is a usage error naming it") {
    ft::LeakCheck leaks;
    const auto list = ft::run(FERRY_COORDINATOR_EXE, {"--tasks", FERRY_TASKS_A, "tasks"}, 30s);
    CHECK(list.status.code == 0);
    CHECK(contains(list.out, "lib_triple"));
    CHECK(contains(list.out, "(long) -> long"));
    CHECK(contains(list.out, "digest"));
    CHECK(contains(list.out, "(std::string, std::vector<long>) -> tasklib::Digest"));
    const auto plain = ft::run(FERRY_COORDINATOR_EXE, {"tasks"}, 30s);
    CHECK_FALSE(contains(plain.out, "lib_triple"));
    CHECK_FALSE(contains(plain.out, "race_add"));  // the demos' tasks are in their own library

    const auto mapped = ft::run(
        FERRY_COORDINATOR_EXE,
        {"-w", "2", "--tasks", FERRY_TASKS_A, "map", "lib_triple", "--items", "1,2,3"}, 60s);
    INFO(mapped.err);
    CHECK(mapped.status.code == 0);
    CHECK(mapped.out == "3\n6\n9\n");

    const auto bad =
        ft::run(FERRY_COORDINATOR_EXE, {"--tasks", FERRY_TEST_NOT_A_LIBRARY, "tasks"}, 30s);
    CHECK(bad.status.code == 2);
    CHECK(contains(bad.err, FERRY_TEST_NOT_A_LIBRARY));
    CHECK(contains(bad.err, "not a ferry task library"));
    leaks.verify();
  }

  TEST_CASE("a folder given to --tasks loads every library in it") {
    auto& reg = ferry::TaskRegistry::instance();
    REQUIRE(reg.load_library(FERRY_TASKLIB_DIR));
    CHECK(reg.libraries().size() == 1);  // only libferry_test_tasks_a.so is in it
    reg.freeze();
    CHECK(reg.index_of("digest"));
  }
}
