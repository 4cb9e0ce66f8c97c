// The Scheduler's rules (coordinator/src/scheduler.hpp), without processes: one unit test per
// rule.
#include <doctest/doctest.h>

#include <algorithm>

#include "scheduler.hpp"

using namespace std::chrono_literals;
using namespace ferry::detail;

namespace {

const TimePoint T0 = TimePoint{} + std::chrono::hours(1);
constexpr std::size_t kCredit = 1 << 20;  // a transport buffer that never limits queueing

// One scheduler, a fake clock and the actions taken from it since the last look.
struct Sched {
  Scheduler s;
  TimePoint now = T0;
  explicit Sched(SchedulerConfig c) : s(c) {}

  Actions take() { return s.take(); }
  void submit(TaskId t, std::size_t bytes = 10) { s.submit(t, bytes, now); }
  void join(WorkerId w, unsigned slots = 1, std::size_t credit = kCredit) {
    s.worker_ready(w, false, slots, credit, now);
  }
  void start_local(WorkerId w, std::size_t credit = kCredit) {
    s.worker_started(w, now);
    s.worker_ready(w, true, 1, credit, now);
  }
};

std::vector<std::pair<WorkerId, TaskId>> sends_of(const Actions& a) {
  std::vector<std::pair<WorkerId, TaskId>> v;
  for (const Dispatch& d : a.sends)
    v.emplace_back(d.worker, d.task);
  return v;
}

const Failure* failure_of(const Actions& a, TaskId t) {
  for (const Failure& f : a.failures)
    if (f.task == t) return &f;
  return nullptr;
}

const Dispatch* send_of(const Actions& a, TaskId t) {
  for (const Dispatch& d : a.sends)
    if (d.task == t) return &d;
  return nullptr;
}

using Sends = std::vector<std::pair<WorkerId, TaskId>>;

}  // namespace

TEST_SUITE("coordinator.scheduler") {
  TEST_CASE(
      "window: has_room is false exactly while the window is full, and an outcome frees room") {
    SchedulerConfig c;
    c.window = 2;
    Sched x(c);
    x.join(1);
    CHECK(x.s.has_room());
    x.submit(1);
    x.submit(2);
    CHECK(x.s.in_system() == 2);
    CHECK_FALSE(x.s.has_room());
    x.take();
    CHECK(x.s.result(1, 1, x.now));
    const Actions a = x.take();
    CHECK(a.room_freed);
    CHECK(x.s.in_system() == 1);
    CHECK(x.s.has_room());
    // A closed pool has room: a submit fails at once rather than waiting.
    x.submit(3);
    CHECK_FALSE(x.s.has_room());
    x.s.close();
    CHECK(x.s.has_room());
  }

  TEST_CASE(
      "placement: the oldest pending task goes to the ready worker with the fewest in flight") {
    SchedulerConfig c;
    Sched x(c);
    for (TaskId t = 1; t <= 3; ++t)
      x.submit(t);
    CHECK(x.take().sends.empty());                       // no worker yet
    x.join(1, 2, 0);                                     // two slots, no room to queue beyond them
    CHECK(sends_of(x.take()) == Sends{{1, 1}, {1, 2}});  // oldest first
    x.join(2, 4, 0);
    CHECK(sends_of(x.take()) == Sends{{2, 3}});
    // w1 holds 2 tasks, w2 holds 1: a new task goes to w2, and then one more (a tie goes to w1).
    x.submit(4);
    CHECK(sends_of(x.take()) == Sends{{2, 4}});
    x.submit(5);
    CHECK(sends_of(x.take()) == Sends{{2, 5}});  // w1 is full (2 of 2 slots), w2 has room
    CHECK(x.s.result(1, 1, x.now));
    x.take();
    x.submit(6);
    CHECK(sends_of(x.take()) == Sends{{1, 6}});  // w1 now holds 1, w2 holds 3
  }

  TEST_CASE("placement: while a worker is still starting, nobody queues beyond its running slots") {
    SchedulerConfig c;
    c.local_workers = 2;
    c.prefetch = 8;
    Sched x(c);
    x.s.start();
    CHECK(x.take().spawns == 2);
    x.s.worker_started(1, x.now);
    x.s.worker_started(2, x.now);
    x.s.worker_ready(1, true, 1, kCredit, x.now);
    for (TaskId t = 1; t <= 4; ++t)
      x.submit(t);
    // w2 is still starting: w1 takes only what it can run, not the whole early burst.
    CHECK(sends_of(x.take()) == Sends{{1, 1}});
    CHECK(x.s.pending() == 3);
    x.s.worker_ready(2, true, 1, kCredit, x.now);
    // Now both queue (depth 2 before any service time is known), the least loaded first.
    CHECK(sends_of(x.take()) == Sends{{2, 2}, {1, 3}, {2, 4}});
  }

  TEST_CASE("prefetch=1: no task is queued behind a running one, from the first task on") {
    SchedulerConfig c;
    c.prefetch = 1;
    Sched x(c);
    x.join(1);
    for (TaskId t = 1; t <= 3; ++t)
      x.submit(t);
    CHECK(sends_of(x.take()) == Sends{{1, 1}});
    CHECK(x.s.result(1, 1, x.now));  // instant: the fastest service time there is
    CHECK(sends_of(x.take()) == Sends{{1, 2}});
    CHECK(x.s.inflight_of(1).size() == 1);
  }

  TEST_CASE("queue depth grows to prefetch with fast tasks and shrinks back with slow ones") {
    SchedulerConfig c;
    c.prefetch = 8;
    Sched x(c);
    x.join(1);
    for (TaskId t = 1; t <= 40; ++t)
      x.submit(t);
    CHECK(x.s.inflight_of(1).size() == 2);  // no service time measured yet: 2
    // Fast tasks (well under a millisecond each): about 1 ms of work is queued, at most prefetch.
    for (int i = 0; i < 3; ++i) {
      x.now += 10us;
      CHECK(x.s.result(1, x.s.inflight_of(1).front(), x.now));
    }
    CHECK(x.s.inflight_of(1).size() == 8);
    // Slow tasks (10 ms each): nothing is queued behind the running one any more.
    for (int i = 0; i < 20; ++i) {
      x.now += 10ms;
      CHECK(x.s.result(1, x.s.inflight_of(1).front(), x.now));
    }
    CHECK(x.s.inflight_of(1).size() == 1);
  }

  TEST_CASE("a death charges only the sole running task, and queued tasks go back uncharged") {
    SchedulerConfig c;
    c.max_retries = 1;
    c.prefetch = 4;
    Sched x(c);
    x.join(1);
    x.submit(1);
    x.submit(2);
    CHECK(sends_of(x.take()) == Sends{{1, 1}, {1, 2}});  // 1 runs, 2 is queued
    x.s.worker_gone(1, EndCause::lost, x.now);
    CHECK(x.take().failures.empty());
    CHECK(x.s.counters().worker_deaths == 1);
    CHECK(x.s.counters().retries == 1);
    x.join(2);
    Actions a = x.take();
    REQUIRE(send_of(a, 1) != nullptr);
    REQUIRE(send_of(a, 2) != nullptr);
    CHECK(send_of(a, 1)->attempt == 2);
    CHECK(send_of(a, 2)->attempt == 1);
    // Its second death while running alone is its last (max_retries 1).
    x.s.worker_gone(2, EndCause::lost, x.now);
    a = x.take();
    const Failure* f = failure_of(a, 1);
    REQUIRE(f != nullptr);
    CHECK(f->cause == FailCause::worker_died);
    CHECK(f->attempt == 2);
    CHECK(f->worker == 2);
    CHECK(f->worker_end == EndCause::lost);
    CHECK(failure_of(a, 2) == nullptr);
  }

  TEST_CASE(
      "after a multi-slot worker dies, its running tasks re-run alone (isolation) uncharged") {
    SchedulerConfig c;
    c.max_retries = 0;
    Sched x(c);
    x.join(1, 2);
    x.submit(1);
    x.submit(2);
    CHECK(sends_of(x.take()) == Sends{{1, 1}, {1, 2}});
    x.s.worker_gone(1, EndCause::lost, x.now);
    CHECK(x.take().failures.empty());  // neither is to blame: not charged even at max_retries 0
    x.join(2, 2);
    Actions a = x.take();
    CHECK(sends_of(a) == Sends{{2, 1}});  // alone, though w2 has a second slot
    CHECK(a.sends[0].attempt == 1);
    x.submit(3);
    CHECK(x.take().sends.empty());  // nothing joins a worker running an isolated task
    x.join(3, 2);
    CHECK(sends_of(x.take()) == Sends{{3, 2}});  // task 2 is isolated too; 3 waits behind it
    // Task 1 crashes its worker again while alone: now it is charged (and fails, max_retries 0).
    x.s.worker_gone(2, EndCause::lost, x.now);
    a = x.take();
    REQUIRE(failure_of(a, 1) != nullptr);
    CHECK(failure_of(a, 1)->cause == FailCause::worker_died);
    CHECK(x.s.result(3, 2, x.now));
    CHECK(sends_of(x.take()) == Sends{{3, 3}});
  }

  TEST_CASE("a timeout kill charges only the task past it, and the others go back uncharged") {
    SchedulerConfig c;
    c.task_timeout = 100ms;
    c.max_retries = 0;
    Sched x(c);
    x.join(1, 2);
    x.submit(1);
    x.now += 60ms;
    x.submit(2);
    x.take();
    CHECK(x.s.next_deadline() == T0 + 100ms);
    x.now = T0 + 100ms;
    x.s.tick(x.now);
    CHECK(x.take().kills.empty());  // at the deadline, not past it
    x.now += 1ms;
    x.s.tick(x.now);
    Actions a = x.take();
    REQUIRE(a.kills.size() == 1);
    CHECK(a.kills[0].worker == 1);
    CHECK(a.kills[0].cause == EndCause::task_timeout);
    CHECK(x.s.kill_cause(1) == EndCause::task_timeout);
    x.s.tick(x.now + 50ms);
    CHECK(x.take().kills.empty());  // once
    x.s.worker_gone(1, EndCause::exited, x.now);
    a = x.take();
    const Failure* f = failure_of(a, 1);
    REQUIRE(f != nullptr);
    CHECK(f->cause == FailCause::timeout);
    CHECK(f->attempt == 1);
    CHECK(f->worker_end == EndCause::task_timeout);
    CHECK(failure_of(a, 2) == nullptr);
    x.join(2);
    a = x.take();
    REQUIRE(send_of(a, 2) != nullptr);
    CHECK(send_of(a, 2)->attempt == 1);
  }

  TEST_CASE("cancel: a pending task fails at once (cancelled), with no kill") {
    SchedulerConfig c;
    Sched x(c);
    x.submit(1);
    x.take();
    CHECK(x.s.cancel(1, x.now));
    Actions a = x.take();
    REQUIRE(failure_of(a, 1) != nullptr);
    CHECK(failure_of(a, 1)->cause == FailCause::cancelled);
    CHECK(a.kills.empty());
    CHECK(x.s.in_system() == 0);
    CHECK(x.s.pending() == 0);
    CHECK_FALSE(x.s.cancel(1, x.now));  // no outcome pending any more
    CHECK_FALSE(x.s.cancel(99, x.now));
  }

  TEST_CASE(
      "cancel: a task running on a local worker kills it (cancelled), not counted as a death") {
    SchedulerConfig c;
    c.local_workers = 1;
    c.prefetch = 4;
    c.max_retries = 0;
    Sched x(c);
    x.s.start();
    x.take();
    x.start_local(1);
    x.submit(1);
    x.submit(2);
    CHECK(sends_of(x.take()) == Sends{{1, 1}, {1, 2}});
    CHECK(x.s.cancel(1, x.now));
    Actions a = x.take();
    REQUIRE(a.kills.size() == 1);
    CHECK(a.kills[0].worker == 1);
    CHECK(a.kills[0].cause == EndCause::cancelled);
    REQUIRE(failure_of(a, 1) != nullptr);
    CHECK(failure_of(a, 1)->cause == FailCause::cancelled);
    x.s.worker_gone(1, EndCause::exited, x.now);  // the signal it got
    a = x.take();
    CHECK(a.failures.empty());  // task 2 was queued: back, uncharged (max_retries 0)
    CHECK(a.spawns == 1);       // replaced
    CHECK(x.s.counters().worker_deaths == 0);
    x.start_local(2);
    a = x.take();
    REQUIRE(send_of(a, 2) != nullptr);
    CHECK(send_of(a, 2)->attempt == 1);
  }

  TEST_CASE("cancel: a queued task on a local worker is not killed, and its result is dropped") {
    SchedulerConfig c;
    c.prefetch = 4;
    Sched x(c);
    x.start_local(1);
    x.submit(1);
    x.submit(2);
    x.take();
    CHECK(x.s.cancel(2, x.now));
    CHECK(x.take().kills.empty());
    CHECK(x.s.result(1, 1, x.now));
    CHECK_FALSE(x.s.result(1, 2, x.now));
    CHECK(x.s.in_system() == 0);
  }

  TEST_CASE("cancel: a task running on a remote worker is not killed, its late result is dropped") {
    SchedulerConfig c;
    Sched x(c);
    x.join(1);
    x.submit(1);
    x.take();
    CHECK(x.s.cancel(1, x.now));
    Actions a = x.take();
    CHECK(a.kills.empty());
    REQUIRE(failure_of(a, 1) != nullptr);
    CHECK(failure_of(a, 1)->cause == FailCause::cancelled);
    CHECK(x.s.in_system() == 0);
    CHECK(x.s.inflight_of(1) == std::vector<TaskId>{1});  // it still occupies the worker
    CHECK_FALSE(x.s.result(1, 1, x.now));
    CHECK(x.take().failures.empty());
    CHECK(x.s.inflight_of(1).empty());
  }

  TEST_CASE(
      "bad_result: re-run once, on another worker if there is one, then fail with bad_result") {
    SchedulerConfig c;
    Sched x(c);
    x.join(1);
    x.join(2);
    x.submit(1);
    CHECK(sends_of(x.take()) == Sends{{1, 1}});
    x.s.bad_result(1, 1, x.now);
    Actions a = x.take();
    CHECK(a.failures.empty());
    CHECK(sends_of(a) == Sends{{2, 1}});  // not back to w1, though both are idle
    CHECK(a.sends[0].attempt == 1);       // not a charge
    x.s.bad_result(2, 1, x.now);
    a = x.take();
    const Failure* f = failure_of(a, 1);
    REQUIRE(f != nullptr);
    CHECK(f->cause == FailCause::bad_result);
    CHECK(f->worker == 2);
    CHECK(x.s.in_system() == 0);
    // With one worker only, the re-run goes to the same worker.
    x.s.worker_gone(2, EndCause::lost, x.now);
    x.submit(2);
    x.take();
    x.s.bad_result(1, 2, x.now);
    CHECK(sends_of(x.take()) == Sends{{1, 2}});
  }

  TEST_CASE("recycling: max_tasks_per_worker drains a worker, replaces it at once, then stops it") {
    SchedulerConfig c;
    c.local_workers = 1;
    c.max_tasks_per_worker = 2;
    c.prefetch = 4;
    Sched x(c);
    x.s.start();
    CHECK(x.take().spawns == 1);
    x.start_local(1);
    for (TaskId t = 1; t <= 3; ++t)
      x.submit(t);
    Actions a = x.take();
    CHECK(sends_of(a) == Sends{{1, 1}, {1, 2}});
    CHECK(a.spawns == 1);  // the replacement, before w1 has finished
    CHECK(x.s.counters().workers_recycled == 1);
    CHECK(x.s.pending() == 1);
    CHECK(x.s.result(1, 1, x.now));
    CHECK(x.take().stops.empty());
    CHECK(x.s.result(1, 2, x.now));
    a = x.take();
    CHECK(a.stops == std::vector<WorkerId>{1});  // its last task is done
    x.s.worker_gone(1, EndCause::exited, x.now);
    a = x.take();
    CHECK(a.spawns == 0);  // already replaced
    CHECK(x.s.counters().worker_deaths == 0);
    x.start_local(2);
    CHECK(sends_of(x.take()) == Sends{{2, 3}});
  }

  TEST_CASE("three local workers in a row ending before they register break the pool") {
    SchedulerConfig c;
    c.local_workers = 1;
    Sched x(c);
    x.s.start();
    x.take();
    x.submit(1);
    for (WorkerId w = 1; w <= 2; ++w) {
      x.s.worker_started(w, x.now);
      x.s.worker_gone(w, EndCause::exited, x.now);
      const Actions a = x.take();
      CHECK(a.spawns == 1);  // replaced
      CHECK(a.failures.empty());
      CHECK_FALSE(x.s.broken());
    }
    x.s.worker_started(3, x.now);
    x.s.worker_gone(3, EndCause::exited, x.now);
    Actions a = x.take();
    CHECK(x.s.broken());
    CHECK(a.spawns == 0);
    REQUIRE(a.notices.size() == 1);
    CHECK(a.notices[0].kind == Notice::Kind::broken);
    REQUIRE(failure_of(a, 1) != nullptr);
    CHECK(failure_of(a, 1)->cause == FailCause::no_workers);
    CHECK(x.s.has_room());
    x.submit(2);
    a = x.take();
    REQUIRE(failure_of(a, 2) != nullptr);
    CHECK(failure_of(a, 2)->cause == FailCause::no_workers);
  }

  TEST_CASE("a spawn failure with other workers alive shrinks the pool, with one notice") {
    SchedulerConfig c;
    c.local_workers = 3;
    Sched x(c);
    x.s.start();
    CHECK(x.take().spawns == 3);
    x.start_local(1);
    x.s.spawn_failed("no memory", x.now);
    Actions a = x.take();
    REQUIRE(a.notices.size() == 1);
    CHECK(a.notices[0].kind == Notice::Kind::shrunk);
    CHECK(a.notices[0].running == 1);
    CHECK(a.notices[0].wanted == 3);
    CHECK(x.s.local_target() == 2);
    x.s.spawn_failed("no memory", x.now);
    a = x.take();
    CHECK(a.notices.empty());  // said once
    CHECK(x.s.local_target() == 1);
    CHECK_FALSE(x.s.broken());
    CHECK(x.s.broken_reason() == "no memory");
  }

  TEST_CASE("a spawn failure with no worker at all breaks the pool (no_workers)") {
    SchedulerConfig c;
    c.local_workers = 1;
    Sched x(c);
    x.s.start();
    x.take();
    x.submit(1);
    x.s.spawn_failed("no memory", x.now);
    const Actions a = x.take();
    CHECK(x.s.broken());
    REQUIRE(a.notices.size() == 1);
    CHECK(a.notices[0].kind == Notice::Kind::broken);
    REQUIRE(failure_of(a, 1) != nullptr);
    CHECK(failure_of(a, 1)->cause == FailCause::no_workers);
  }

  TEST_CASE("a local worker that does not register within the start-up timeout is killed") {
    SchedulerConfig c;
    c.local_workers = 1;
    c.startup_timeout = 1s;
    Sched x(c);
    x.s.start();
    x.take();
    x.s.worker_started(1, x.now);
    CHECK(x.s.next_deadline() == T0 + 1s);
    x.s.tick(T0 + 1s);
    CHECK(x.take().kills.empty());
    x.s.tick(T0 + 1s + 1ms);
    Actions a = x.take();
    REQUIRE(a.kills.size() == 1);
    CHECK(a.kills[0].worker == 1);
    CHECK(a.kills[0].cause == EndCause::startup_timeout);
    CHECK_FALSE(x.s.next_deadline().has_value());  // its kill is given: nothing left to watch
    x.s.worker_gone(1, EndCause::exited, x.now);
    a = x.take();
    CHECK(a.spawns == 1);
    CHECK(x.s.counters().worker_deaths == 1);
  }

  TEST_CASE("a rejected worker gets no kill action, only its start-up timeout kills it") {
    SchedulerConfig c;
    c.local_workers = 1;
    c.startup_timeout = 1s;
    Sched x(c);
    x.s.start();
    x.take();
    x.s.worker_started(1, x.now);
    x.s.kill_worker(1, EndCause::rejected);
    CHECK(x.take().kills.empty());  // it exits by itself after saying why
    CHECK(x.s.kill_cause(1) == EndCause::rejected);
    x.s.tick(T0 + 1s + 1ms);
    Actions a = x.take();
    REQUIRE(a.kills.size() == 1);
    CHECK(a.kills[0].cause == EndCause::rejected);  // the recorded cause, not startup_timeout
    x.s.worker_gone(1, EndCause::exited, x.now);
    CHECK(x.s.counters().worker_deaths == 0);
  }

  TEST_CASE("a bad frame gets its worker killed, and its end is counted as a death") {
    SchedulerConfig c;
    c.max_retries = 1;
    Sched x(c);
    x.join(1);
    x.submit(1);
    x.take();
    x.s.kill_worker(1, EndCause::bad_frame);
    Actions a = x.take();
    REQUIRE(a.kills.size() == 1);
    CHECK(a.kills[0].cause == EndCause::bad_frame);
    x.s.kill_worker(1, EndCause::bad_frame);
    CHECK(x.take().kills.empty());  // once
    x.s.worker_gone(1, EndCause::lost, x.now);
    x.take();
    CHECK(x.s.counters().worker_deaths == 1);
    x.join(2);
    a = x.take();
    REQUIRE(send_of(a, 1) != nullptr);
    CHECK(send_of(a, 1)->attempt == 2);
  }

  TEST_CASE("a task over max_task_bytes fails at once with too_large") {
    SchedulerConfig c;
    c.max_task_bytes = 100;
    Sched x(c);
    x.join(1);
    x.submit(1, 101);
    x.submit(2, 100);
    const Actions a = x.take();
    REQUIRE(failure_of(a, 1) != nullptr);
    CHECK(failure_of(a, 1)->cause == FailCause::too_large);
    CHECK(failure_of(a, 1)->attempt == 0);
    CHECK(sends_of(a) == Sends{{1, 2}});
    CHECK(x.s.in_system() == 1);
  }

  TEST_CASE("a result from a gone worker, or for a task it does not hold, is dropped") {
    SchedulerConfig c;
    Sched x(c);
    x.join(1);
    x.submit(1);
    x.take();
    CHECK_FALSE(x.s.result(1, 7, x.now));
    CHECK_FALSE(x.s.result(9, 1, x.now));
    x.s.worker_gone(1, EndCause::lost, x.now);
    x.s.worker_gone(1, EndCause::lost, x.now);  // reported twice: once counted
    CHECK(x.s.counters().worker_deaths == 1);
    CHECK_FALSE(x.s.result(1, 1, x.now));  // its result came after the news of its end
    CHECK(x.s.in_system() == 1);
    CHECK(x.s.pending() == 1);
  }

  TEST_CASE("close: later submits fail with shutdown, and tasks already in the system still run") {
    SchedulerConfig c;
    Sched x(c);
    x.submit(1);
    x.s.close();
    x.submit(2);
    Actions a = x.take();
    REQUIRE(failure_of(a, 2) != nullptr);
    CHECK(failure_of(a, 2)->cause == FailCause::shutdown);
    CHECK(failure_of(a, 1) == nullptr);
    x.join(1);
    CHECK(sends_of(x.take()) == Sends{{1, 1}});
    CHECK(x.s.result(1, 1, x.now));
    CHECK(x.s.in_system() == 0);
  }

  TEST_CASE("stop: pending tasks fail with shutdown, running ones as their workers end, no sends") {
    SchedulerConfig c;
    c.local_workers = 1;
    c.prefetch = 1;
    Sched x(c);
    x.s.start();
    x.take();
    x.start_local(1);
    x.submit(1);
    x.submit(2);
    x.take();
    x.s.stop(x.now);
    Actions a = x.take();
    REQUIRE(failure_of(a, 2) != nullptr);
    CHECK(failure_of(a, 2)->cause == FailCause::shutdown);
    CHECK(failure_of(a, 1) == nullptr);  // still running
    CHECK(x.s.pending() == 0);
    x.submit(3);
    a = x.take();
    REQUIRE(failure_of(a, 3) != nullptr);
    CHECK(failure_of(a, 3)->cause == FailCause::shutdown);
    x.join(2);  // a latecomer gets nothing
    CHECK(x.take().sends.empty());
    x.s.worker_gone(1, EndCause::exited, x.now);
    a = x.take();
    REQUIRE(failure_of(a, 1) != nullptr);
    CHECK(failure_of(a, 1)->cause == FailCause::shutdown);
    CHECK(a.spawns == 0);  // not replaced
    CHECK(x.s.counters().worker_deaths == 0);
    CHECK(x.s.in_system() == 0);
  }

  TEST_CASE(
      "stop: a result that cannot be decoded after stop() is not re-run but fails (shutdown)") {
    SchedulerConfig c;
    Sched x(c);
    x.join(1);
    x.submit(1);
    x.take();
    x.s.stop(x.now);
    x.take();
    x.s.bad_result(1, 1, x.now);
    const Actions a = x.take();
    CHECK(a.sends.empty());
    REQUIRE(failure_of(a, 1) != nullptr);
    CHECK(failure_of(a, 1)->cause == FailCause::shutdown);
    CHECK(x.s.pending() == 0);
    CHECK(x.s.in_system() == 0);
  }

  TEST_CASE("a pool broken by spawn failures says so once") {
    SchedulerConfig c;
    c.local_workers = 2;
    Sched x(c);
    x.s.start();
    CHECK(x.take().spawns == 2);
    x.s.spawn_failed("no memory", x.now);
    Actions a = x.take();
    REQUIRE(a.notices.size() == 1);
    CHECK(a.notices[0].kind == Notice::Kind::broken);
    x.s.spawn_failed("no memory", x.now);  // the second spawn fails too
    a = x.take();
    CHECK(a.notices.empty());
    CHECK(x.s.broken());
  }

  TEST_CASE("a cancelled task hanging on a remote worker is timed out, which frees the worker") {
    SchedulerConfig c;
    c.task_timeout = 100ms;
    c.prefetch = 1;
    Sched x(c);
    x.join(1);
    x.submit(1);
    x.take();
    CHECK(x.s.cancel(1, x.now));  // remote: not killed, it still runs there
    x.take();
    x.submit(2);
    CHECK(x.take().sends.empty());  // w1's one slot is taken
    CHECK(x.s.next_deadline() == T0 + 100ms);
    x.now += 101ms;
    x.s.tick(x.now);
    Actions a = x.take();
    REQUIRE(a.kills.size() == 1);
    CHECK(a.kills[0].worker == 1);
    CHECK(a.kills[0].cause == EndCause::task_timeout);
    x.s.worker_gone(1, EndCause::lost, x.now);
    a = x.take();
    CHECK(a.failures.empty());  // the task past the timeout had its outcome: nobody is charged
    x.join(2);
    a = x.take();
    REQUIRE(send_of(a, 2) != nullptr);
    CHECK(send_of(a, 2)->attempt == 1);
  }

  TEST_CASE("a cancelled task still running on a worker counts as running when that worker dies") {
    SchedulerConfig c;
    c.max_retries = 0;
    Sched x(c);
    x.join(1, 2);
    x.submit(1);
    x.submit(2);
    x.take();
    CHECK(x.s.cancel(1, x.now));  // remote: it keeps running beside task 2, and may crash it
    x.take();
    x.s.worker_gone(1, EndCause::lost, x.now);
    Actions a = x.take();
    CHECK(a.failures.empty());  // task 2 was not alone there: not to blame
    x.join(2, 2);
    a = x.take();
    CHECK(sends_of(a) == Sends{{2, 2}});
    CHECK(a.sends[0].attempt == 1);
  }

  TEST_CASE("bad_result: an isolated task's re-run goes to another worker too") {
    SchedulerConfig c;
    Sched x(c);
    x.join(1, 2);
    x.submit(1);
    x.submit(2);
    x.take();
    x.s.worker_gone(1, EndCause::lost, x.now);  // both shared it: isolated
    x.take();
    x.join(2);
    x.join(3);
    CHECK(sends_of(x.take()) == Sends{{2, 1}, {3, 2}});
    x.s.bad_result(2, 1, x.now);
    CHECK(x.take().sends.empty());  // not back to w2 (idle): it waits for w3
    CHECK(x.s.result(3, 2, x.now));
    CHECK(sends_of(x.take()) == Sends{{3, 1}});
  }

}  // TEST_SUITE
