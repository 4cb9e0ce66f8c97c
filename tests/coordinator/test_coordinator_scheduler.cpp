// The Scheduler's rules (coordinator/src/scheduler.hpp), without processes: one unit test per
// rule, then model-based properties (rapidcheck) that drive it with random event sequences and
// check, after every event, that no task is lost, doubled, over-charged or sent where it must
// not go.
#include <doctest/doctest.h>
#include <rapidcheck.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <map>
#include <sstream>

#include "scheduler.hpp"

using namespace std::chrono_literals;
using namespace ferry::detail;

namespace {

const TimePoint T0 = TimePoint{} + std::chrono::hours(1);
constexpr std::size_t kCredit = 1 << 20;  // a transport buffer that never limits queueing

bool has(const std::vector<TaskId>& v, TaskId t) {
  return std::find(v.begin(), v.end(), t) != v.end();
}

SchedulerConfig two_locals_config() {
  SchedulerConfig c;
  c.local_workers = 2;
  c.prefetch = 8;
  return c;
}

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
  // Tasks `first` and `first + 1` run on worker `w` (one slot), `each` apiece: the service
  // time, and so the depth, is known; their actions are taken.
  void measure(WorkerId w, TaskId first, std::chrono::microseconds each) {
    submit(first);
    submit(first + 1);
    for (TaskId t = first; t <= first + 1; ++t) {
      now += each;
      CHECK(s.result(w, t, now));
    }
    (void)take();
  }
  // The pool starts its two local workers (1 and 2); only worker 1 registers.
  void two_started_one_ready() {
    s.start();
    CHECK(take().spawns == 2);
    s.worker_started(1, now);
    s.worker_started(2, now);
    s.worker_ready(1, true, 1, kCredit, now);
  }
  // Worker 1 joins and runs tasks 1 and 2 at `pace` apiece (which sets the depth); then tasks
  // 3-10 are submitted at once, as a fast submitter would.
  void burst_after_pace(std::chrono::microseconds pace) {
    join(1);
    measure(1, 1, pace);
    for (TaskId t = 3; t <= 10; ++t)
      submit(t);
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

  TEST_CASE("window: blocked submitters are woken once a sixteenth of the window is free") {
    SchedulerConfig c;
    c.window = 32;  // a slice of 2
    Sched x(c);
    x.join(1, 32, 0);
    for (TaskId t = 1; t <= 32; ++t)
      x.submit(t);
    x.take();
    CHECK_FALSE(x.s.has_room());
    CHECK(x.s.result(1, 1, x.now));
    // One free slot: a submitter could go on, but is not woken for one task.
    CHECK(x.s.has_room());
    CHECK_FALSE(x.take().room_freed);
    CHECK(x.s.result(1, 2, x.now));
    CHECK(x.take().room_freed);
    // An empty system always wakes them (drain waits on it too).
    for (TaskId t = 3; t <= 32; ++t)
      CHECK(x.s.result(1, t, x.now));
    CHECK(x.take().room_freed);
    CHECK(x.s.in_system() == 0);
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
    Sched x(two_locals_config());
    x.two_started_one_ready();
    for (TaskId t = 1; t <= 4; ++t)
      x.submit(t);
    // w2 is still starting: w1 takes only what it can run, not the whole early burst.
    CHECK(sends_of(x.take()) == Sends{{1, 1}});
    CHECK(x.s.pending() == 3);
    x.s.worker_ready(2, true, 1, kCredit, x.now);
    // Now both queue (depth 2 before any service time is known), the least loaded first.
    CHECK(sends_of(x.take()) == Sends{{2, 2}, {1, 3}, {2, 4}});
  }

  TEST_CASE("a worker that ends while starting no longer holds the others' queues at one task") {
    Sched x(two_locals_config());
    x.two_started_one_ready();
    (void)x.s.worker_gone(2, EndCause::killed, x.now);  // before it registered
    (void)x.take();
    x.s.worker_started(3, x.now);  // its replacement starts, and registers
    x.s.worker_ready(3, true, 1, kCredit, x.now);
    for (TaskId t = 1; t <= 6; ++t)
      x.submit(t);
    // Nobody is starting: both queue (depth 2 before any service time is known).
    CHECK(x.s.inflight_of(1).size() == 2);
    CHECK(x.s.inflight_of(3).size() == 2);
  }

  TEST_CASE("take(into) hands over the same actions as take() and leaves none behind") {
    SchedulerConfig c;
    c.prefetch = 1;
    Sched x(c);
    x.join(1);
    x.submit(1);
    Actions a;
    a.spawns = 7;  // whatever it held is dropped
    x.s.take(a);
    CHECK(sends_of(a) == Sends{{1, 1}});
    CHECK(a.spawns == 0);
    CHECK(x.take().empty());
    x.submit(2);
    CHECK(x.s.result(1, 1, x.now));
    x.s.take(a);
    CHECK(sends_of(a) == Sends{{1, 2}});
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

  TEST_CASE(
      "a submit queues one task behind a busy worker, the next result sends the rest at once") {
    SchedulerConfig c;
    c.prefetch = 8;
    Sched x(c);
    // Fast tasks: the depth is 8 now, but submits fill only the running slot and one behind it.
    x.burst_after_pace(10us);
    CHECK(sends_of(x.take()) == Sends{{1, 3}, {1, 4}});
    CHECK(x.s.pending() == 6);
    // The result's pump fills the depth: every pending task in one action (one write).
    x.now += 10us;
    CHECK(x.s.result(1, 3, x.now));
    CHECK(sends_of(x.take()) == Sends{{1, 5}, {1, 6}, {1, 7}, {1, 8}, {1, 9}, {1, 10}});
    CHECK(x.s.pending() == 0);
  }

  TEST_CASE("with tiny tasks a submit fills only free slots, and each result sends a batch") {
    SchedulerConfig c;
    c.prefetch = 64;
    Sched x(c);
    // The depth is 64 now: a submit to the busy worker queues nothing behind its running task
    // (a worker that keeps up would otherwise get one write, and send one result, per task).
    x.burst_after_pace(2us);
    CHECK(sends_of(x.take()) == Sends{{1, 3}});
    CHECK(x.s.pending() == 7);
    x.now += 2us;
    CHECK(x.s.result(1, 3, x.now));
    CHECK(sends_of(x.take()) == Sends{{1, 4}, {1, 5}, {1, 6}, {1, 7}, {1, 8}, {1, 9}, {1, 10}});
    // Slower tasks (100 us: depth 11) queue one behind again.
    for (int i = 0; i < 30; ++i) {
      x.now += 100us;
      CHECK(x.s.result(1, x.s.inflight_of(1).front(), x.now));
      x.submit(100 + static_cast<TaskId>(i));
    }
    while (!x.s.inflight_of(1).empty()) {
      x.now += 100us;
      CHECK(x.s.result(1, x.s.inflight_of(1).front(), x.now));
    }
    (void)x.take();
    x.submit(200);
    x.submit(201);
    x.submit(202);
    CHECK(sends_of(x.take()) == Sends{{1, 200}, {1, 201}});
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

  TEST_CASE("fail_sent_on_death (actors): a death fails every task sent or pending") {
    SchedulerConfig c;
    c.max_retries = 0;
    c.prefetch = 2;
    c.fail_sent_on_death = true;
    Sched x(c);
    x.join(1);
    for (TaskId t = 1; t <= 3; ++t)
      x.submit(t);
    CHECK(sends_of(x.take()) == Sends{{1, 1}, {1, 2}});  // 1 runs, 2 is queued, 3 is pending
    x.s.worker_gone(1, EndCause::exited, x.now);
    Actions a = x.take();
    for (TaskId t = 1; t <= 3; ++t) {
      CAPTURE(t);
      const Failure* f = failure_of(a, t);
      REQUIRE(f != nullptr);
      CHECK(f->cause == FailCause::worker_died);
    }
    CHECK(x.s.counters().retries == 0);
    // A later task goes to the next worker; nothing of the dead one's is sent again.
    x.submit(4);
    x.join(2);
    CHECK(sends_of(x.take()) == Sends{{2, 4}});
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

  TEST_CASE("per-task limits: one task's max_retries and timeout override the config's") {
    SchedulerConfig c;
    c.max_retries = 3;  // and no task timeout
    Sched x(c);
    x.join(1);
    x.s.submit(1, 10, x.now, Scheduler::kAnyFunction, TaskLimits{0u, std::nullopt});
    CHECK(sends_of(x.take()) == Sends{{1, 1}});
    CHECK_FALSE(x.s.next_deadline().has_value());
    x.s.worker_gone(1, EndCause::lost, x.now);
    Actions a = x.take();
    REQUIRE(failure_of(a, 1) != nullptr);  // no retry for it
    CHECK(failure_of(a, 1)->attempt == 1);

    x.join(2);
    x.s.submit(2, 10, x.now, Scheduler::kAnyFunction, TaskLimits{std::nullopt, 50ms});
    x.submit(3);  // the config's limits: no timeout, 3 retries
    x.take();
    CHECK(x.s.next_deadline() == x.now + 50ms);
    x.now += 51ms;
    x.s.tick(x.now);
    a = x.take();
    REQUIRE(a.kills.size() == 1);
    CHECK(a.kills[0].cause == EndCause::task_timeout);
    x.s.worker_gone(2, EndCause::exited, x.now);
    a = x.take();
    CHECK(failure_of(a, 2) == nullptr);  // the config's 3 retries still apply to it
    CHECK(x.s.counters().retries == 1);
    x.join(3);
    a = x.take();
    REQUIRE(send_of(a, 2) != nullptr);
    CHECK(send_of(a, 2)->attempt == 2);
    CHECK(x.s.result(3, 2, x.now));
    x.take();
    CHECK_FALSE(x.s.next_deadline().has_value());  // task 3 has none
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
    // A remote worker that sent garbage never gets the task back: it waits for another one.
    x.s.worker_gone(2, EndCause::lost, x.now);
    x.submit(2);
    x.take();
    x.s.bad_result(1, 2, x.now);
    CHECK(x.take().sends.empty());
    x.join(3);
    CHECK(sends_of(x.take()) == Sends{{3, 2}});
  }

  TEST_CASE(
      "not_sent: a dispatched task the pool cannot send leaves its worker's queue and fails "
      "with the cause given, and the place goes to the next task") {
    SchedulerConfig c;
    c.prefetch = 1;
    Sched x(c);
    x.join(1);  // remote, one slot: one task in flight at a time
    x.submit(1);
    x.submit(2);
    CHECK(sends_of(x.take()) == Sends{{1, 1}});
    x.s.not_sent(1, 1, FailCause::too_large, x.now);
    Actions a = x.take();
    const Failure* f = failure_of(a, 1);
    REQUIRE(f != nullptr);
    CHECK(f->cause == FailCause::too_large);
    CHECK(f->worker == 1);
    CHECK(sends_of(a) == Sends{{1, 2}});
    CHECK(x.s.inflight_of(1) == std::vector<TaskId>{2});
    // Not in flight there (done, or another worker's): nothing happens.
    x.s.not_sent(1, 1, FailCause::unsendable, x.now);
    x.s.not_sent(7, 2, FailCause::unsendable, x.now);
    CHECK(x.take().empty());
    // Cancelled while its frame was being built: no second outcome, but its place is freed.
    CHECK(x.s.cancel(2, x.now));
    CHECK(failure_of(x.take(), 2)->cause == FailCause::cancelled);
    x.s.not_sent(1, 2, FailCause::unsendable, x.now);
    CHECK(x.take().failures.empty());
    CHECK(x.s.inflight_of(1).empty());
    CHECK(x.s.in_system() == 0);
  }

  TEST_CASE("bad_result: a lone local worker gets the re-run itself") {
    SchedulerConfig c;
    c.local_workers = 1;
    Sched x(c);
    x.s.start();
    x.take();
    x.start_local(1);
    x.submit(1);
    CHECK(sends_of(x.take()) == Sends{{1, 1}});
    x.s.bad_result(1, 1, x.now);
    CHECK(sends_of(x.take()) == Sends{{1, 1}});
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

  TEST_CASE("a local worker that registers ends the row of start-up failures") {
    SchedulerConfig c;
    c.local_workers = 1;
    Sched x(c);
    x.s.start();
    x.take();
    x.submit(1);
    WorkerId w = 1;
    for (int round = 0; round < 3; ++round) {
      for (int i = 0; i < 2; ++i, ++w) {  // two of three allowed, then a registration
        x.s.worker_started(w, x.now);
        x.s.worker_gone(w, EndCause::exited, x.now);
        x.take();
        CHECK_FALSE(x.s.broken());
      }
      x.s.worker_started(w, x.now);
      x.s.worker_ready(w, true, 1, kCredit, x.now);
      x.take();
      x.s.worker_gone(w++, EndCause::exited, x.now);  // ended after registering: no count
      x.take();
      CHECK_FALSE(x.s.broken());
    }
  }

  TEST_CASE("workers SIGKILLed from outside while starting break the pool only after 8x as many") {
    SchedulerConfig c;
    c.local_workers = 1;  // limit 3: 24 SIGKILLs in a row
    Sched x(c);
    x.s.start();
    x.take();
    x.submit(1);
    WorkerId w = 1;
    // A chaos test's kills: many in a row, then a registration ends the row.
    for (; w <= 23; ++w) {
      x.s.worker_started(w, x.now);
      x.s.worker_gone(w, EndCause::killed, x.now);
      CHECK(x.take().spawns == 1);
      CHECK_FALSE(x.s.broken());
    }
    x.s.worker_started(w, x.now);
    x.s.worker_ready(w, true, 1, kCredit, x.now);
    x.take();
    x.s.worker_gone(w++, EndCause::killed, x.now);  // after registering: a death, no count
    x.take();
    // A start-up something always kills (the OOM killer) still ends, and says why.
    for (int i = 0; i < 24; ++i, ++w) {
      CHECK_FALSE(x.s.broken());
      x.s.worker_started(w, x.now);
      x.s.worker_gone(w, EndCause::killed, x.now);
      x.take();
    }
    CHECK(x.s.broken());
    CHECK(x.s.broken_reason() == "24 local workers in a row were SIGKILLed before they registered");
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

  TEST_CASE(
      "reserve (remote actors): a reserved worker takes only its pinned tasks, one at a time") {
    SchedulerConfig c;
    c.max_retries = 3;
    Sched x(c);
    x.join(1, 2);
    x.join(2, 2);
    x.start_local(3);
    // Only a ready remote worker can be reserved, and only once.
    CHECK_FALSE(x.s.reserve(3));
    CHECK_FALSE(x.s.reserve(9));
    REQUIRE(x.s.free_remote().has_value());
    CHECK(x.s.reserve(1));
    CHECK_FALSE(x.s.reserve(1));
    CHECK(x.s.reserved(1));
    CHECK(x.s.free_remote() == WorkerId{2});
    x.take();
    // The sends to worker 1 since the last look (ordinary tasks move on too, elsewhere).
    auto to_one = [&] {
      Sends v;
      for (auto [w, t] : sends_of(x.take()))
        if (w == 1) v.emplace_back(w, t);
      return v;
    };
    // Ordinary tasks go to 2 and 3, never to 1.
    for (TaskId t = 1; t <= 6; ++t)
      x.submit(t);
    for (auto [w, t] : sends_of(x.take()))
      CHECK(w != 1);
    // Pinned tasks go to 1 only, the next once the one before has its result (in order),
    // although it has two slots; they pass the ordinary tasks that wait.
    for (TaskId t = 10; t <= 12; ++t)
      x.s.submit(t, 10, x.now, Scheduler::kAnyFunction,
                 TaskLimits{.max_retries = {}, .timeout = {}, .pin = 1});
    CHECK(to_one() == Sends{{1, 10}});
    CHECK(x.s.result(1, 10, x.now));
    CHECK(to_one() == Sends{{1, 11}});
    CHECK(x.s.result(1, 11, x.now));
    CHECK(to_one() == Sends{{1, 12}});
    CHECK(x.s.result(1, 12, x.now));
    x.take();
    // Pinned to a worker that is not reserved (or gone): fails at once, never runs elsewhere.
    x.s.submit(20, 10, x.now, Scheduler::kAnyFunction,
               TaskLimits{.max_retries = {}, .timeout = {}, .pin = 2});
    const Actions a = x.take();
    REQUIRE(failure_of(a, 20) != nullptr);
    CHECK(failure_of(a, 20)->cause == FailCause::worker_died);
    CHECK(a.sends.empty());
    // Released: it takes ordinary tasks again.
    x.s.release(1, x.now);
    CHECK_FALSE(x.s.reserved(1));
    x.submit(30);
    x.submit(31);
    x.submit(32);
    CHECK_FALSE(to_one().empty());
  }

  TEST_CASE("reserve: when the reserved worker dies, its pinned tasks fail and none is re-run") {
    SchedulerConfig c;
    c.max_retries = 3;
    Sched x(c);
    x.join(1);
    x.join(2);
    REQUIRE(x.s.reserve(1));
    x.take();
    x.s.submit(1, 10, x.now, Scheduler::kAnyFunction,
               TaskLimits{.max_retries = {}, .timeout = {}, .pin = 1});
    x.s.submit(2, 10, x.now, Scheduler::kAnyFunction,
               TaskLimits{.max_retries = {}, .timeout = {}, .pin = 1});
    x.submit(3);  // ordinary: on worker 2
    CHECK(sends_of(x.take()) == Sends{{1, 1}, {2, 3}});
    x.s.worker_gone(1, EndCause::exited, x.now);
    const Actions a = x.take();
    for (TaskId t : {TaskId{1}, TaskId{2}}) {
      CAPTURE(t);
      REQUIRE(failure_of(a, t) != nullptr);
      CHECK(failure_of(a, t)->cause == FailCause::worker_died);
    }
    CHECK(failure_of(a, 3) == nullptr);
    CHECK(a.sends.empty());  // not re-run on worker 2
    CHECK(x.s.counters().retries == 0);
    CHECK(x.s.result(2, 3, x.now));
    // A pinned task's undecodable result is not re-run elsewhere either.
    REQUIRE(x.s.reserve(2));
    x.take();
    x.s.submit(4, 10, x.now, Scheduler::kAnyFunction,
               TaskLimits{.max_retries = {}, .timeout = {}, .pin = 2});
    CHECK(sends_of(x.take()) == Sends{{2, 4}});
    x.s.bad_result(2, 4, x.now);
    const Actions b = x.take();
    REQUIRE(failure_of(b, 4) != nullptr);
    CHECK(failure_of(b, 4)->cause == FailCause::bad_result);
  }

}  // TEST_SUITE

// --- model-based properties ----------------------------------------------------------------
//
// A schedule is a scheduler configuration and a list of events, each with a few random numbers
// that pick among what can happen at that moment (which worker, which task, how much time
// passes). The harness plays the outside world: it keeps a small reference model of the tasks
// (size, crash task or hanging task, charges, outcome) and of the workers (started, ready, slots,
// buffer, the results they sent that were not processed yet, the kills and stops they were
// given), turns the scheduler's actions into later events (a spawn becomes a started worker, a
// kill or a stop a worker that is gone, a send a task on that worker) and checks after every
// event:
//   - each task gets one outcome (a counted result or one failure), never a second; a result is
//     counted exactly when its worker holds the task and it has no outcome yet;
//   - attempts: 1 + the charges the rules give (the task running alone on a worker that died;
//     at most one running task per timeout kill), never over 1 + max_retries; worker_died and
//     timeout failures only when that is reached; isolated tasks run alone;
//   - in_system() equals the tasks without an outcome, never over the window; no room only when
//     full; pending() plus the open tasks in flight make up in_system();
//   - sends only to ready workers not told to go, within slots + prefetch - 1, beyond the slots
//     only within half the buffer and not while a local worker is starting; a bad result's re-run
//     elsewhere if there is another ready worker;
//   - kills once, with the cause recorded first, none for a refused worker, none before
//     next_deadline(); deaths counted as the causes say; local workers replaced, not over the
//     target; broken exactly after the start-up failures in a row (or a spawn failure alone);
//     notices once each;
//   - nothing sent or spawned after stop(), and every pending task fails then with shutdown.
// At the end of a schedule everything left runs out (results, crash tasks' deaths, the clock
// past every timeout): each task must get its outcome. Then stop() and every worker ends: no
// task is left without one.

namespace {

enum class Ev : std::uint8_t {
  submit,       // a task (a: size, b: crasher/hangs)
  spawn_start,  // a spawn asked for becomes a started local worker
  spawn_fail,   // ... or fails
  ready,        // a started local worker registers (one slot)
  join,         // a remote worker joins, ready at once (a: 0-4 slots, b: its buffer)
  result,       // a running task's result: processed now or left in transit (c)
  deliver,      // a result in transit is processed (a late one if its worker is gone)
  stale,        // a result nobody waits for: a random task from a random worker
  bad_result,   // a running task's result cannot be decoded
  unsent,       // the pool cannot send a task dispatched to a worker (too large, no frame)
  crash,        // a worker running a crash task dies of it
  death,        // a worker dies of something else (external)
  leave,        // a remote worker leaves or is lost (external)
  bad_frame,    // a ready worker sends a malformed frame (external)
  reject,       // the handshake refuses a started local worker
  reject_exit,  // a refused worker exits by itself
  apply_kill,   // a worker the scheduler killed is gone
  apply_stop,   // a worker the scheduler stopped is gone
  tick,         // time passes (a picks how much)
  cancel,       // the caller cancels a task (a picks which, maybe unknown)
  close,
  stop,
};

const char* name(Ev e) {
  static const char* const names[] = {
      "submit",  "spawn_start", "spawn_fail", "ready",       "join",       "result",
      "deliver", "stale",       "bad_result", "unsent",      "crash",      "death",
      "leave",   "bad_frame",   "reject",     "reject_exit", "apply_kill", "apply_stop",
      "tick",    "cancel",      "close",      "stop"};
  return names[static_cast<std::size_t>(e)];
}

struct Op {
  Ev ev = Ev::tick;
  std::uint16_t a = 0, b = 0, c = 0;
};

void showValue(const Op& op, std::ostream& os) {
  os << name(op.ev) << "(" << op.a << "," << op.b << "," << op.c << ")";
}

struct Params {
  SchedulerConfig cfg;
};

void showValue(const Params& p, std::ostream& os) {
  const SchedulerConfig& c = p.cfg;
  os << "{window " << c.window << ", max_retries " << c.max_retries << ", prefetch " << c.prefetch
     << ", task_timeout " << c.task_timeout.count() << " ms, startup_timeout "
     << c.startup_timeout.count() << " ms, max_tasks_per_worker " << c.max_tasks_per_worker
     << ", local_workers " << c.local_workers << ", max_task_bytes " << c.max_task_bytes
     << ", startup_failure_limit " << c.startup_failure_limit << "}";
}

// What the schedules may hold.
struct Mode {
  // Deaths no task caused: a worker exits or is lost, a remote worker leaves, a bad frame.
  bool external_deaths = true;
  // Results a worker sent before it ended, processed after the news of its end (a transport that
  // reorders). Off: they are processed first, as the supervisor does (it drains a dead worker's
  // channel before reporting the exit).
  bool late_results = true;
};

rc::Gen<Params> gen_params() {
  return rc::gen::apply(
      [](std::size_t window, unsigned retries, unsigned prefetch, bool timeout, unsigned max_tasks,
         unsigned local, unsigned limit) {
        Params p;
        p.cfg.window = window;
        p.cfg.max_retries = retries;
        p.cfg.prefetch = prefetch;
        p.cfg.task_timeout = timeout ? 100ms : 0ms;
        p.cfg.startup_timeout = 1000ms;
        p.cfg.max_tasks_per_worker = max_tasks;
        p.cfg.local_workers = local;
        p.cfg.max_task_bytes = 1000;
        p.cfg.startup_failure_limit = limit;
        return p;
      },
      rc::gen::inRange<std::size_t>(1, 9), rc::gen::inRange(0u, 4u), rc::gen::inRange(1u, 5u),
      rc::gen::arbitrary<bool>(), rc::gen::element(0u, 0u, 0u, 1u, 2u, 5u),
      rc::gen::inRange(0u, 4u), rc::gen::element(1u, 2u, 3u, 3u, 3u));
}

rc::Gen<Op> gen_op(const Mode& m) {
  const std::size_t ext = m.external_deaths ? 1 : 0;
  return rc::gen::apply(
      [](Ev e, std::uint16_t a, std::uint16_t b, std::uint16_t c) {
        return Op{e, a, b, c};
      },
      rc::gen::weightedElement<Ev>(
          {{120, Ev::submit},    {40, Ev::spawn_start},    {5, Ev::spawn_fail},
           {40, Ev::ready},      {15, Ev::join},           {200, Ev::result},
           {30, Ev::deliver},    {8, Ev::stale},           {10, Ev::bad_result},
           {6, Ev::unsent},      {25, Ev::crash},          {12 * ext, Ev::death},
           {6 * ext, Ev::leave}, {6 * ext, Ev::bad_frame}, {6, Ev::reject},
           {6, Ev::reject_exit}, {30, Ev::apply_kill},     {20, Ev::apply_stop},
           {40, Ev::tick},       {20, Ev::cancel},         {1, Ev::close},
           {1, Ev::stop}}),
      rc::gen::arbitrary<std::uint16_t>(), rc::gen::arbitrary<std::uint16_t>(),
      rc::gen::arbitrary<std::uint16_t>());
}

enum class Outcome : std::uint8_t { none, result, failure };

// A rule the harness checks; the message is only built when it fails (the checks run after every
// event, and building their messages would cost more than the scheduler itself).
#define NEED(ok, what)     \
  do {                     \
    if (!(ok)) fail(what); \
  } while (false)

class Harness {
 public:
  Harness(const SchedulerConfig& c, Mode m) : mode_(m), s_(c), cfg_(s_.config()) {
    step_ = "start";
    s_.start();
    after();
  }

  void apply(const Op& op, std::size_t index) {
    std::ostringstream os;
    os << "#" << index << " ";
    showValue(op, os);
    step_ = os.str();
    switch (op.ev) {
      case Ev::submit:
        return submit(op);
      case Ev::spawn_start:
        return spawn_start();
      case Ev::spawn_fail:
        return spawn_fail();
      case Ev::ready:
        return ready(op);
      case Ev::join:
        return join(op);
      case Ev::result:
        return result(op);
      case Ev::deliver:
        return deliver(op);
      case Ev::stale:
        return stale(op);
      case Ev::bad_result:
        return bad_result(op);
      case Ev::unsent:
        return unsent(op);
      case Ev::crash:
        return crash(op);
      case Ev::death:
        return death(op, false);
      case Ev::leave:
        return death(op, true);
      case Ev::bad_frame:
        return bad_frame(op);
      case Ev::reject:
        return reject(op);
      case Ev::reject_exit:
        return reject_exit(op);
      case Ev::apply_kill:
        return apply_end(op, true);
      case Ev::apply_stop:
        return apply_end(op, false);
      case Ev::tick:
        return tick(op);
      case Ev::cancel:
        return cancel(op);
      case Ev::close:
        return close();
      case Ev::stop:
        return stop();
    }
  }

  // Everything left runs out: healthy tasks complete, crash tasks crash their workers, spawns
  // start, kills and stops land, and time passes whenever nothing else can happen. Each task must
  // get its outcome (hanging tasks only exist with a task timeout).
  void run_out() {
    if (stopped_) return;
    step_ = "run out";
    int idle = 0;
    for (int round = 0; round < 20000; ++round) {
      if (open_tasks() == 0) return;
      if (progress()) {
        idle = 0;
        continue;
      }
      // Nobody to run them and nobody coming (no local workers wanted, or all failed), or
      // only workers a task must avoid (a remote one that sent garbage for it), and time
      // passing changed nothing: a remote worker joins, as the pool would wait for one.
      if ((live_workers() == 0 && spawns_pending_ == 0) || ++idle > 2) {
        // (A broken pool fails what is pending once it has no worker at all.)
        NEED(!s_.broken() || live_workers() > 0, "broken, no workers, yet tasks are still open");
        join_worker(1, kCredit);
        idle = 0;
        continue;
      }
      advance(std::max(cfg_.task_timeout, cfg_.startup_timeout) + 1ms);
    }
    NEED(false, std::to_string(open_tasks()) + " task(s) never got an outcome");
  }

  // stop(), then every worker ends: no task is left without an outcome.
  void finish() {
    step_ = "finish";
    if (!stopped_) {
      s_.stop(now_);
      stopped_ = true;
      expect_shutdown_of_pending();
      after();
    }
    while (spawns_pending_ > 0) {  // spawns already under way still start, then end
      --spawns_pending_;
      s_.worker_started(next_worker_, now_);
      workers_[next_worker_++] = MWorker{};
      after();
    }
    for (auto& [id, w] : workers_) {
      if (w.gone) continue;
      end_worker(id, w.local ? EndCause::exited : EndCause::lost, mode_.late_results);
    }
    for (auto [w, t] : std::exchange(late_, {}))
      deliver_result(w, t);
    for (const auto& [id, t] : tasks_)
      NEED(t.outcome != Outcome::none, "task " + std::to_string(id) + " lost: no outcome");
    NEED(s_.in_system() == 0, "in_system() is not 0 at the end");
  }

  std::size_t submitted() const { return tasks_.size(); }

 private:
  struct MTask {
    std::size_t bytes = 0;
    bool crasher = false, hangs = false;
    Outcome outcome = Outcome::none;
    FailCause cause = FailCause::worker_died;
    std::uint32_t charges = 0;  // runs it was to blame for, as the rules count them
    WorkerId may_charge = 0;    // it ran on this worker when it was killed for a timeout
    bool isolated = false;      // it shared a multi-slot worker that died: runs alone now
    unsigned bad_results = 0;
    WorkerId avoid = 0;  // its result from this worker could not be decoded
    bool healthy() const { return !crasher && !hangs; }
  };
  struct MWorker {
    bool local = true;
    unsigned slots = 1;
    std::size_t credit = 0;
    bool ready = false, gone = false, rejected = false;
    bool kill_given = false, stop_given = false;
    std::optional<EndCause> kill;  // the cause recorded with the scheduler
    std::uint64_t sent = 0;
    std::vector<TaskId> transit;  // results it sent that were not processed yet
  };

  // A task charged for the timeout kill of its worker: one per kill.
  template <class What>
  void charge_for_timeout(MTask& t, const What& what) {
    NEED(++timeout_charges_[t.may_charge] == 1, what() + ": a second task charged for one timeout");
    ++t.charges;
  }

  bool draining(const MWorker& w) const {
    return w.local && cfg_.max_tasks_per_worker && w.sent >= cfg_.max_tasks_per_worker;
  }

  bool submitter_blocked_ = false;  // has_room() was false and no room_freed came since

  [[noreturn]] void fail(const std::string& what) const {
    RC_FAIL(what + "  [at " + step_ + ", t=" + std::to_string((now_ - T0) / 1ms) + " ms]");
  }

  // --- the rules, checked after every event ---------------------------------------------

  void after() {
    const Actions a = s_.take();
    std::vector<WorkerId> sent_to;
    for (const Dispatch& d : a.sends) {
      const auto what = [&] {
        return "send of task " + std::to_string(d.task) + " to w" + std::to_string(d.worker);
      };
      NEED(!stopped_, what() + " after stop()");
      auto wit = workers_.find(d.worker);
      NEED(wit != workers_.end() && wit->second.ready && !wit->second.gone,
           what() + ": the worker is not ready");
      NEED(!wit->second.kill_given && !wit->second.stop_given,
           what() + ": the worker was told to go");
      auto tit = tasks_.find(d.task);
      NEED(tit != tasks_.end(), what() + ": unknown task");
      MTask& t = tit->second;
      NEED(t.outcome == Outcome::none, what() + ": it already has its outcome");
      NEED(d.attempt >= 1 && d.attempt <= cfg_.max_retries + 1,
           what() + ": attempt " + std::to_string(d.attempt) + " over 1 + max_retries");
      // Charged exactly when the rules say: the attempt is 1 + the charges so far (one more if it
      // was on a worker killed for a timeout, and then it was the one that ran past it).
      const bool timeout_charge = t.may_charge && d.attempt == t.charges + 2;
      NEED(d.attempt == t.charges + 1 || timeout_charge,
           what() + ": attempt " + std::to_string(d.attempt) + ", expected " +
               std::to_string(t.charges + 1));
      if (timeout_charge) charge_for_timeout(t, what);
      t.may_charge = 0;
      NEED(!t.isolated || s_.inflight_of(d.worker).size() == 1,
           what() + ": an isolated task does not run alone");
      // A re-run after a result that could not be decoded goes elsewhere if it can.
      NEED(t.avoid != d.worker || !std::any_of(workers_.begin(), workers_.end(),
                                               [&](const auto& p) {
                                                 return p.first != d.worker && !p.second.gone &&
                                                        p.second.ready && !draining(p.second);
                                               }),
           what() + ": back to the worker whose result could not be decoded");
      ++wit->second.sent;
      sent_to.push_back(d.worker);
    }
    for (const Failure& f : a.failures) {
      const auto what = [&] {
        return "failure of task " + std::to_string(f.task) + " (" +
               std::string(to_string(f.cause)) + ")";
      };
      auto tit = tasks_.find(f.task);
      NEED(tit != tasks_.end(), what() + ": unknown task");
      MTask& t = tit->second;
      NEED(t.outcome == Outcome::none, what() + ": a second outcome");
      t.outcome = Outcome::failure;
      t.cause = f.cause;
      if (f.cause == FailCause::worker_died || f.cause == FailCause::timeout) {
        NEED(f.attempt == cfg_.max_retries + 1,
             what() + ": attempt " + std::to_string(f.attempt) + ", not 1 + max_retries");
        NEED(mode_.external_deaths || !t.healthy(),
             what() + ": a healthy task, and every death was a crash task's doing");
      }
      if (f.cause == FailCause::timeout) {
        NEED(t.may_charge != 0 && f.worker == t.may_charge && t.charges + 1 == cfg_.max_retries + 1,
             what() + ": it was not on a worker killed for a timeout, or had charges left");
        NEED(f.worker_end == EndCause::task_timeout,
             what() + ": its worker's end is not the timeout");
        charge_for_timeout(t, what);
      }
      if (f.cause == FailCause::worker_died)
        NEED(expected_.count(f.task), what() + ": not charged to the end by the rules");
      if (auto e = expected_.find(f.task); e != expected_.end()) {
        NEED(e->second == f.cause, what() + ": expected " + std::string(to_string(e->second)));
        expected_.erase(e);
      }
    }
    for (auto [task, cause] : expected_)
      NEED(false, "task " + std::to_string(task) + " should have failed (" +
                      std::string(to_string(cause)) + ")");
    expected_.clear();
    for (const Kill& k : a.kills) {
      const auto what = [&] { return "kill of w" + std::to_string(k.worker); };
      auto wit = workers_.find(k.worker);
      NEED(wit != workers_.end() && !wit->second.gone, what() + ": no such worker");
      NEED(!wit->second.kill_given, what() + ": given twice");
      NEED(k.worker != no_kill_, what() + ": refused workers exit by themselves");
      NEED(!wit->second.kill || *wit->second.kill == k.cause,
           what() + ": not the cause recorded first");
      wit->second.kill_given = true;
      wit->second.kill = k.cause;
    }
    if (expect_kill_) {
      NEED(std::any_of(a.kills.begin(), a.kills.end(),
                       [&](const Kill& k) {
                         return k.worker == expect_kill_->worker && k.cause == expect_kill_->cause;
                       }),
           "expected a kill of w" + std::to_string(expect_kill_->worker) + " (" +
               std::string(to_string(expect_kill_->cause)) + ")");
    }
    if (no_kills_) NEED(a.kills.empty(), "a kill before any deadline passed");
    expect_kill_.reset();
    no_kill_ = 0;
    no_kills_ = false;
    for (WorkerId w : a.stops) {
      const auto what = [&] { return "stop of w" + std::to_string(w); };
      auto wit = workers_.find(w);
      NEED(wit != workers_.end() && !wit->second.gone, what() + ": no such worker");
      NEED(wit->second.local, what() + ": a remote worker is not recycled");
      NEED(!wit->second.stop_given, what() + ": given twice");
      NEED(s_.inflight_of(w).empty(), what() + ": it still has tasks");
      wit->second.stop_given = true;
    }
    NEED(!stopped_ || a.spawns == 0, "spawns after stop()");
    // While a local worker is still starting, nobody queues beyond its running slots.
    const bool starting = std::any_of(workers_.begin(), workers_.end(), [](const auto& p) {
      return !p.second.gone && p.second.local && !p.second.ready;
    });
    for (WorkerId w : sent_to)
      NEED(!starting || s_.inflight_of(w).size() <= workers_[w].slots,
           "w" + std::to_string(w) + " queued tasks while a worker is starting");
    spawns_pending_ += a.spawns;
    for (const Notice& n : a.notices) {
      unsigned& seen = n.kind == Notice::Kind::shrunk ? shrunk_notices_ : broken_notices_;
      NEED(++seen == 1, n.kind == Notice::Kind::shrunk ? "a second 'shrunk' notice"
                                                       : "a second 'broken' notice");
    }
    if (a.room_freed) submitter_blocked_ = false;
    check_state();
  }

  void check_state() {
    const std::size_t open = open_tasks();
    NEED(s_.in_system() == open, "in_system() " + std::to_string(s_.in_system()) + " but " +
                                     std::to_string(open) + " task(s) without an outcome");
    NEED(s_.in_system() <= cfg_.window, "in_system() over the window");
    NEED(s_.has_room() || s_.in_system() == cfg_.window, "no room, yet the window is not full");
    // A submitter that found the window full is woken (room_freed) by the time a slice of it
    // is free, the system is empty, or submits fail at once; not necessarily for one slot.
    if (submitter_blocked_) {
      const std::size_t slice = std::max<std::size_t>(1, cfg_.window / 16);
      NEED(cfg_.window - s_.in_system() < slice && s_.in_system() > 0 && !s_.closed() &&
               !s_.broken(),
           "a submitter waiting for the window was not woken");
    }
    if (!s_.has_room()) submitter_blocked_ = true;
    if (stopped_) NEED(s_.pending() == 0, "pending tasks after stop()");
    NEED(s_.broken() == broken_, broken_ ? "not broken" : "broken too soon");
    std::map<TaskId, int> seen;
    std::size_t open_in_flight = 0;
    for (const auto& [id, w] : workers_) {
      if (w.gone) continue;
      const auto what = [&] { return "w" + std::to_string(id); };
      const auto in = s_.inflight_of(id);
      NEED(s_.is_ready(id) == w.ready, what() + ": is_ready() disagrees");
      NEED(w.ready || in.empty(), what() + ": tasks on a worker that is not ready");
      NEED(in.size() <= w.slots + cfg_.prefetch - 1,
           what() + ": " + std::to_string(in.size()) +
               " tasks in flight, over slots + prefetch - 1");
      NEED(s_.kill_cause(id) == w.kill, what() + ": kill_cause() disagrees");
      std::size_t bytes = 0;
      for (TaskId t : in) {
        auto tit = tasks_.find(t);
        NEED(tit != tasks_.end(), what() + ": holds an unknown task");
        NEED(++seen[t] == 1, "task " + std::to_string(t) + " in flight on two workers");
        NEED(!tit->second.isolated || in.size() == 1, what() + ": a task joined an isolated one");
        if (tit->second.outcome == Outcome::none) ++open_in_flight;
        bytes += tit->second.bytes;
      }
      // Queued beyond its slots only within half its transport buffer.
      NEED(in.size() <= w.slots || bytes <= w.credit / 2,
           what() + ": queued beyond its slots past half its buffer");
      for (TaskId t : w.transit)
        NEED(has(in, t), what() + ": a result in transit for a task it no longer holds");
    }
    NEED(s_.pending() + open_in_flight == open,
         "pending() + open tasks in flight != tasks without an outcome");
    // The pool keeps local_target() local workers: replaced when they end, and (until a spawn
    // failure shrank it) no more than that.
    if (!stopped_ && !s_.broken()) {
      std::size_t live = 0, active = 0;
      for (const auto& [id, w] : workers_) {
        if (w.gone || !w.local) continue;
        ++live;
        if (!w.kill && !draining(w)) ++active;
      }
      NEED(spawns_pending_ + live >= s_.local_target(), "a local worker was not replaced");
      NEED(s_.local_target() != cfg_.local_workers || spawns_pending_ + active <= s_.local_target(),
           "more local workers than wanted");
    }
  }

  // --- the outside world ------------------------------------------------------------------

  std::size_t open_tasks() const {
    return static_cast<std::size_t>(std::count_if(tasks_.begin(), tasks_.end(), [](const auto& p) {
      return p.second.outcome == Outcome::none;
    }));
  }
  std::size_t live_workers() const {
    return static_cast<std::size_t>(std::count_if(workers_.begin(), workers_.end(),
                                                  [](const auto& p) { return !p.second.gone; }));
  }

  template <class Pred>
  std::optional<WorkerId> pick_worker(unsigned k, Pred pred) const {
    std::vector<WorkerId> ids;
    for (const auto& [id, w] : workers_)
      if (!w.gone && pred(id, w)) ids.push_back(id);
    if (ids.empty()) return std::nullopt;
    return ids[k % ids.size()];
  }

  // The tasks w is running, as the worker sees it: its queue in order, less the results it has
  // sent, `slots` at a time.
  std::vector<TaskId> running(WorkerId id) const {
    const MWorker& w = workers_.at(id);
    std::vector<TaskId> r;
    for (TaskId t : s_.inflight_of(id)) {
      if (r.size() == w.slots) break;
      if (!has(w.transit, t)) r.push_back(t);
    }
    return r;
  }

  void expect_shutdown_of_pending() {
    // Pending tasks are the open ones on no worker; they fail with shutdown right away.
    std::map<TaskId, bool> on_worker;
    for (const auto& [id, w] : workers_)
      if (!w.gone)
        for (TaskId t : s_.inflight_of(id))
          on_worker[t] = true;
    for (const auto& [id, t] : tasks_)
      if (t.outcome == Outcome::none && !on_worker.count(id)) expected_[id] = FailCause::shutdown;
  }

  void submit(const Op& op) {
    if (!s_.has_room()) return;  // the caller waits for room
    // Into a closed, stopped or broken pool: some, not all (they fail at once).
    if ((closed_ || stopped_ || s_.broken()) && op.c % 8 != 0) return;
    const TaskId id = next_task_++;
    MTask t;
    const std::size_t bytes =
        op.a % 16 == 0 ? cfg_.max_task_bytes + 1 + op.a % 97 : op.a % (cfg_.max_task_bytes + 1);
    t.bytes = bytes;
    t.crasher = op.b % 8 == 0;
    t.hangs = !t.crasher && cfg_.task_timeout.count() > 0 && op.b % 8 == 1;
    tasks_[id] = t;
    if (stopped_ || closed_) {
      expected_[id] = FailCause::shutdown;
    } else if (s_.broken()) {
      expected_[id] = FailCause::no_workers;
    } else if (bytes > cfg_.max_task_bytes) {
      expected_[id] = FailCause::too_large;
    }
    std::map<WorkerId, std::size_t> before;
    for (const auto& [wid, w] : workers_)
      if (!w.gone) before[wid] = s_.inflight_of(wid).size();
    s_.submit(id, bytes, now_);
    // A submit queues at most one task behind a worker's running ones (results fill the rest).
    for (const auto& [wid, n] : before) {
      NEED(s_.inflight_of(wid).size() <= std::max<std::size_t>(n, workers_[wid].slots + 1),
           "w" + std::to_string(wid) + ": a submit queued more than one task behind its slots");
    }
    after();
  }

  void spawn_start() {
    if (spawns_pending_ == 0) return;
    --spawns_pending_;
    const WorkerId id = next_worker_++;
    workers_[id] = MWorker{};
    s_.worker_started(id, now_);
    after();
  }

  void spawn_fail() {
    if (spawns_pending_ == 0) return;
    --spawns_pending_;
    if (live_workers() == 0) broken_ = true;  // nobody at all: no point waiting
    s_.spawn_failed("no memory", now_);
    after();
  }

  void ready(const Op& op) {
    auto id = pick_worker(
        op.a, [](WorkerId, const MWorker& w) { return w.local && !w.ready && !w.rejected; });
    if (!id) return;
    MWorker& w = workers_[*id];
    w.ready = true;
    w.credit = op.b % 4 == 0 ? 0 : std::size_t{op.b} * 8;
    startup_failures_ = 0;  // a local worker registered: the row of start-up failures ends
    s_.worker_ready(*id, true, 1, w.credit, now_);
    after();
  }

  void join(const Op& op) {
    if (stopped_) return;
    join_worker(op.a % 5, op.b % 4 == 0 ? 0 : std::size_t{op.b} * 8);  // 0 slots: taken as 1
  }

  void join_worker(unsigned slots, std::size_t credit) {
    const WorkerId id = next_worker_++;
    MWorker w;
    w.local = false;
    w.slots = std::max(1u, slots);
    w.credit = credit;
    w.ready = true;
    workers_[id] = w;
    s_.worker_ready(id, false, slots, credit, now_);
    after();
  }

  // Results of tasks that complete (neither crash tasks nor hanging ones do).
  std::vector<std::pair<WorkerId, TaskId>> completing() const {
    std::vector<std::pair<WorkerId, TaskId>> v;
    for (const auto& [id, w] : workers_) {
      if (w.gone || !w.ready) continue;
      for (TaskId t : running(id))
        if (tasks_.at(t).healthy()) v.emplace_back(id, t);
    }
    return v;
  }

  void result(const Op& op) {
    const auto v = completing();
    if (v.empty()) return;
    const auto [w, t] = v[op.a % v.size()];
    if (op.c % 3 == 0) {
      workers_[w].transit.push_back(t);  // sent; the worker runs its next task meanwhile
      check_state();
      return;
    }
    deliver_result(w, t);
  }

  // A result reaches the scheduler; it counts if w still holds the task and it has no outcome.
  void deliver_result(WorkerId w, TaskId t) {
    auto wit = workers_.find(w);
    const bool holds = wit != workers_.end() && !wit->second.gone && has(s_.inflight_of(w), t);
    const bool open = tasks_.count(t) && tasks_.at(t).outcome == Outcome::none;
    const bool counted = s_.result(w, t, now_);
    NEED(counted == (holds && open), "result of task " + std::to_string(t) + " from w" +
                                         std::to_string(w) + (counted ? " counted" : " dropped") +
                                         (holds ? "" : " (not held)") +
                                         (open ? "" : " (had its outcome)"));
    if (counted) {
      tasks_[t].outcome = Outcome::result;
      startup_failures_ = 0;  // workers do run tasks
    }
    after();
  }

  void deliver(const Op& op) {
    std::vector<std::pair<WorkerId, TaskId>> v = late_;
    for (const auto& [id, w] : workers_)
      if (!w.gone)
        for (TaskId t : w.transit)
          v.emplace_back(id, t);
    if (v.empty()) return;
    const auto [w, t] = v[op.a % v.size()];
    if (auto it = std::find(late_.begin(), late_.end(), std::pair{w, t}); it != late_.end()) {
      late_.erase(it);
    } else {
      auto& tr = workers_[w].transit;
      tr.erase(std::find(tr.begin(), tr.end(), t));
    }
    deliver_result(w, t);
  }

  void flush(WorkerId w) {
    for (TaskId t : std::exchange(workers_[w].transit, {}))
      deliver_result(w, t);
  }

  void stale(const Op& op) {
    const WorkerId w = op.a % (next_worker_ + 1);
    const TaskId t = op.b % (next_task_ + 1);
    if (has(s_.inflight_of(w), t)) return;  // that would be a real result
    NEED(!s_.result(w, t, now_), "a result nobody waits for was counted");
    s_.bad_result(w, t, now_);
    const Actions a = s_.take();
    NEED(a.empty(), "a stale result or bad result had effects");
    check_state();
  }

  void bad_result(const Op& op) {
    const auto v = completing();
    if (v.empty()) return;
    const auto [w, t] = v[op.a % v.size()];
    MTask& m = tasks_[t];
    if (m.outcome == Outcome::none && ++m.bad_results == 2) expected_[t] = FailCause::bad_result;
    if (m.outcome == Outcome::none) m.avoid = w;
    s_.bad_result(w, t, now_);
    after();
  }

  // A task dispatched to a worker that the pool could not send (whose result, then, never
  // comes): it leaves that worker's queue and fails, unsendable, unless it had its outcome.
  void unsent(const Op& op) {
    std::vector<std::pair<WorkerId, TaskId>> v;
    for (const auto& [id, w] : workers_) {
      if (w.gone || !w.ready) continue;
      for (TaskId t : s_.inflight_of(id)) {
        // A task whose result is on its way was sent.
        if (!has(w.transit, t) &&
            std::find(late_.begin(), late_.end(), std::pair{id, t}) == late_.end())
          v.emplace_back(id, t);
      }
    }
    if (v.empty()) return;
    const auto [w, t] = v[op.a % v.size()];
    if (tasks_.at(t).outcome == Outcome::none) expected_[t] = FailCause::unsendable;
    s_.not_sent(w, t, FailCause::unsendable, now_);
    NEED(!has(s_.inflight_of(w), t), "a task not sent is still in its worker's queue");
    after();
  }

  // The worker ends (reported as a process exit for local workers, a loss for remote ones). Results
  // it sent are processed first unless `late` (then after the news of its end).
  void end_worker(WorkerId id, EndCause reported, bool late) {
    MWorker& w = workers_[id];
    if (!late) flush(id);
    for (TaskId t : std::exchange(w.transit, {}))
      late_.emplace_back(id, t);
    w.gone = true;
    // What the rules say of its tasks: the cause is the recorded one; a death charges the task
    // running alone there and isolates tasks that shared it; a timeout kill charges at most one
    // running task; queued tasks go back uncharged; after stop() all fail (shutdown).
    EndCause cause = w.kill.value_or(reported);
    if (stopped_) cause = EndCause::shutdown;
    if (w.stop_given && cause == EndCause::exited) cause = EndCause::recycled;
    const bool death = cause == EndCause::exited || cause == EndCause::lost ||
                       cause == EndCause::bad_frame || cause == EndCause::startup_timeout ||
                       cause == EndCause::task_timeout;
    const auto in = s_.inflight_of(id);
    const std::size_t window = std::min<std::size_t>(in.size(), w.slots);
    for (std::size_t i = 0; i < in.size(); ++i) {
      MTask& t = tasks_[in[i]];
      if (t.outcome != Outcome::none) continue;
      if (stopped_) {
        expected_[in[i]] = FailCause::shutdown;
      } else if (i >= window) {
        continue;
      } else if (cause == EndCause::task_timeout) {
        t.may_charge = id;
      } else if (death && window == 1) {
        if (++t.charges == cfg_.max_retries + 1) expected_[in[i]] = FailCause::worker_died;
      } else if (death) {
        t.isolated = true;
      }
    }
    // Local workers that end before registering, so many in a row, break the pool.
    if (w.local && !w.ready && !stopped_ && ++startup_failures_ >= cfg_.startup_failure_limit)
      broken_ = true;
    const auto deaths = s_.counters().worker_deaths;
    s_.worker_gone(id, reported, now_);
    NEED(s_.counters().worker_deaths == deaths + (death ? 1 : 0),
         "w" + std::to_string(id) + (death ? ": a death not counted" : ": counted as a death"));
    after();
    s_.worker_gone(id, reported, now_);  // a second report changes nothing
    NEED(s_.take().empty(), "a second report of a worker's end had effects");
  }

  EndCause reported(const MWorker& w) const { return w.local ? EndCause::exited : EndCause::lost; }

  void crash(const Op& op) {
    auto id = pick_worker(op.a, [&](WorkerId wid, const MWorker& w) {
      if (!w.ready) return false;
      const auto r = running(wid);
      return std::any_of(r.begin(), r.end(), [&](TaskId t) { return tasks_.at(t).crasher; });
    });
    if (!id) return;
    end_worker(*id, reported(workers_[*id]), mode_.late_results && op.b % 2 == 0);
  }

  void death(const Op& op, bool remote_only) {
    auto id =
        pick_worker(op.a, [&](WorkerId, const MWorker& w) { return !remote_only || !w.local; });
    if (!id) return;
    end_worker(*id, reported(workers_[*id]), mode_.late_results && op.b % 2 == 0);
  }

  void bad_frame(const Op& op) {
    auto id =
        pick_worker(op.a, [](WorkerId, const MWorker& w) { return w.ready && !w.kill_given; });
    if (!id) return;
    if (!s_.kill_cause(*id)) expect_kill_ = Kill{*id, EndCause::bad_frame};
    s_.kill_worker(*id, EndCause::bad_frame);
    after();
  }

  void reject(const Op& op) {
    auto id = pick_worker(
        op.a, [](WorkerId, const MWorker& w) { return w.local && !w.ready && !w.rejected; });
    if (!id) return;
    workers_[*id].rejected = true;
    if (!workers_[*id].kill) workers_[*id].kill = EndCause::rejected;
    no_kill_ = *id;
    s_.kill_worker(*id, EndCause::rejected);
    after();
  }

  void reject_exit(const Op& op) {
    auto id = pick_worker(op.a, [](WorkerId, const MWorker& w) { return w.rejected; });
    if (!id) return;
    end_worker(*id, EndCause::exited, false);
  }

  void apply_end(const Op& op, bool killed) {
    auto id = pick_worker(
        op.a, [&](WorkerId, const MWorker& w) { return killed ? w.kill_given : w.stop_given; });
    if (!id) return;
    end_worker(*id, reported(workers_[*id]), mode_.late_results && op.b % 2 == 0);
  }

  // Time passes by dt. Without external deaths, a healthy task is one that completes well within
  // the timeout: results that are done are processed before the clock moves.
  void advance(std::chrono::milliseconds dt) {
    if (dt.count() > 0 && !mode_.external_deaths) {
      while (true) {
        bool any = false;
        for (auto& [id, w] : workers_)
          if (!w.gone && !w.transit.empty()) {
            flush(id);
            any = true;
          }
        const auto v = completing();
        for (auto [w, t] : v)
          deliver_result(w, t);
        if (!any && v.empty()) break;
      }
    }
    const auto due = s_.next_deadline();
    now_ += dt;
    // No kill may come before the deadline next_deadline() announced.
    no_kills_ = !due || now_ <= *due;
    s_.tick(now_);
    after();
  }

  void tick(const Op& op) {
    // Steps that land exactly on deadlines (100 ms task timeout, 1 s start-up timeout) too.
    static const std::chrono::milliseconds steps[] = {0ms,   1ms,   3ms,    50ms,
                                                      100ms, 101ms, 1000ms, 1001ms};
    const auto dt = steps[op.a % std::size(steps)];
    advance(dt);
  }

  void cancel(const Op& op) {
    const TaskId t = op.a % (next_task_ + 1);
    const bool open = tasks_.count(t) && tasks_.at(t).outcome == Outcome::none;
    // A task running on a local worker is stopped by killing the worker (unless it already has to
    // go); anything else is not killed.
    for (const auto& [id, w] : workers_) {
      if (w.gone || !open) continue;
      const auto in = s_.inflight_of(id);
      const auto pos = std::find(in.begin(), in.end(), t);
      if (pos == in.end()) continue;
      if (w.local && static_cast<std::size_t>(pos - in.begin()) < w.slots && !s_.kill_cause(id))
        expect_kill_ = Kill{id, EndCause::cancelled};
    }
    if (!expect_kill_) no_kills_ = true;
    if (open) expected_[t] = FailCause::cancelled;
    NEED(s_.cancel(t, now_) == open, "cancel() of task " + std::to_string(t) +
                                         (open ? " refused" : " accepted with no outcome pending"));
    after();
  }

  void close() {
    closed_ = true;
    s_.close();
    after();
  }

  void stop() {
    if (stopped_) {  // the pool calls it again as it ends: nothing new
      s_.stop(now_);
      NEED(s_.take().failures.empty(), "a second stop() failed tasks");
      return;
    }
    stopped_ = true;
    expect_shutdown_of_pending();
    s_.stop(now_);
    after();
  }

  // One round of what happens by itself; false if nothing could.
  bool progress() {
    bool any = false;
    for (auto& [id, w] : workers_) {
      if (w.gone) continue;
      if (!w.transit.empty()) {
        flush(id);
        any = true;
      }
      if (w.kill_given || w.stop_given || w.rejected) {
        end_worker(id, w.rejected ? EndCause::exited : reported(w), false);
        any = true;
        continue;
      }
      if (!w.ready) {
        w.ready = true;
        w.credit = kCredit;
        startup_failures_ = 0;
        s_.worker_ready(id, true, 1, kCredit, now_);
        after();
        any = true;
        continue;
      }
      for (TaskId t : running(id)) {
        const MTask& m = tasks_.at(t);
        if (m.crasher) {
          end_worker(id, reported(w), false);
          any = true;
          break;
        }
        if (m.healthy()) {
          deliver_result(id, t);
          any = true;
        }
      }
    }
    while (spawns_pending_ > 0) {
      --spawns_pending_;
      const WorkerId id = next_worker_++;
      workers_[id] = MWorker{};
      s_.worker_started(id, now_);
      after();
      any = true;
    }
    return any;
  }

  Mode mode_;
  Scheduler s_;
  const SchedulerConfig& cfg_;  // as the scheduler holds it (bounds applied)
  TimePoint now_ = T0;
  std::map<TaskId, MTask> tasks_;
  std::map<WorkerId, MWorker> workers_;
  std::vector<std::pair<WorkerId, TaskId>> late_;  // results sent by workers now gone
  TaskId next_task_ = 1;
  WorkerId next_worker_ = 1;
  unsigned spawns_pending_ = 0;
  unsigned startup_failures_ = 0;  // local workers in a row that ended before registering
  bool closed_ = false, stopped_ = false, broken_ = false;
  unsigned shrunk_notices_ = 0, broken_notices_ = 0;
  std::string step_;
  // What the current event must produce.
  std::map<TaskId, FailCause> expected_;
  std::optional<Kill> expect_kill_;
  WorkerId no_kill_ = 0;
  bool no_kills_ = false;
  std::map<WorkerId, int> timeout_charges_;  // per worker killed for a timeout
};

#undef NEED

// rapidcheck inside doctest (the package has no doctest glue): the property runs `count` times
// unless RC_PARAMS sets max_success (it can also set seed, max_size, reproduce, ...). A failure
// reports the shrunk schedule and the seed to replay it through doctest, so into the ctest log;
// rapidcheck also prints a reproduce= string at exit.
template <class Testable>
void check_property(const char* name, int count, Testable&& prop) {
  using namespace rc::detail;
  const Configuration& conf = configuration();
  TestParams params = conf.testParams;
  const char* env = std::getenv("RC_PARAMS");
  if (!env || std::string_view(env).find("max_success") == std::string_view::npos)
    params.maxSuccess = count;
  TestMetadata meta;
  meta.id = name;
  meta.description = name;
  const TestResult r = checkTestable(std::forward<Testable>(prop), meta, params);
  std::ostringstream os;
  printResultMessage(r, os);
  SuccessResult success;
  if (r.match(success)) {
    std::cout << name << ": " << success.numSuccess << " schedules passed (seed " << params.seed
              << ")\n";
    CHECK(success.numSuccess >= params.maxSuccess);
  } else {
    FAIL(std::string(name) << ": " << os.str() << "\nreplay with RC_PARAMS=\"seed=" << params.seed
                           << "\" (or the reproduce= string printed at exit)");
  }
}

// One schedule: a configuration and up to 3 * scale * rapidcheck's size events (300 by default).
void run_schedule(const Mode& mode, double scale = 1) {
  const Params p = *gen_params();
  const auto ops = *rc::gen::scale(3.0 * scale, rc::gen::container<std::vector<Op>>(gen_op(mode)));
  Harness h(p.cfg, mode);
  for (std::size_t i = 0; i < ops.size(); ++i)
    h.apply(ops[i], i);
  h.run_out();
  h.finish();
}

// --- routing: workers that serve some tasks only ----------------------------------------------

// A smaller model for placement by task: tasks of kFns task numbers, local and remote workers
// each serving a random subset. Checked after every event: a task goes only to a worker that
// serves it and is never on two workers at once; it fails as unserved only when no registered
// worker serves it and none is starting; no task waits while an idle worker that serves it
// does nothing; every task ends with exactly one outcome.
constexpr std::uint32_t kFns = 3;

#define RNEED(ok, what)    \
  do {                     \
    if (!(ok)) fail(what); \
  } while (false)

enum class REv : std::uint8_t { submit, spawn_start, ready, join, result, death, apply_kill, tick };

struct ROp {
  REv ev = REv::tick;
  std::uint16_t a = 0, b = 0;
};

void showValue(const ROp& op, std::ostream& os) {
  static const char* const names[] = {"submit", "spawn_start", "ready",      "join",
                                      "result", "death",       "apply_kill", "tick"};
  os << names[static_cast<std::size_t>(op.ev)] << "(" << op.a << "," << op.b << ")";
}

class RoutingHarness {
 public:
  explicit RoutingHarness(const SchedulerConfig& c) : s_(c) {
    s_.start();
    absorb();
  }

  void apply(const ROp& op, std::size_t index) {
    std::ostringstream os;
    os << "#" << index << " ";
    showValue(op, os);
    step_ = os.str();
    switch (op.ev) {
      case REv::submit: {
        if (!s_.has_room()) return;  // the pool's caller waits for the window
        const TaskId id = next_task_++;
        const std::uint32_t fn = op.a % kFns;
        tasks_[id].fn = fn;
        unserved_allowed_ = !undecided() && !served(fn);
        s_.submit(id, 10, now_, fn);
        break;
      }
      case REv::spawn_start:
        if (spawns_ == 0) return;
        --spawns_;
        workers_[next_worker_] = make_worker(true, true);
        s_.worker_started(next_worker_++, now_);
        break;
      case REv::ready: {
        auto* w = pick([](const RWorker& x) { return x.starting && !x.gone; }, op.a);
        if (!w) return;
        w->second.starting = false;
        w->second.serves = serves_of(op.b, /*local=*/true);
        s_.worker_ready(w->first, true, 1, kCredit, now_, w->second.serves);
        break;
      }
      case REv::join: {
        RWorker x = make_worker(false, false);
        x.serves = serves_of(op.b, /*local=*/false);
        x.slots = 1 + op.a % 3;
        workers_[next_worker_] = x;
        s_.worker_ready(next_worker_++, false, x.slots, kCredit, now_, x.serves);
        break;
      }
      case REv::result: {
        auto* w = pick([](const RWorker& x) { return !x.gone && !x.inflight.empty(); }, op.a);
        if (!w) return;
        auto& in = w->second.inflight;
        const TaskId t = in[op.b % std::min<std::size_t>(in.size(), w->second.slots)];
        in.erase(std::find(in.begin(), in.end(), t));
        tasks_[t].at = 0;
        if (s_.result(w->first, t, now_)) outcome(t);
        break;
      }
      case REv::death:
      case REv::apply_kill: {
        const bool killed = op.ev == REv::apply_kill;
        auto* w = pick([killed](const RWorker& x) { return !x.gone && x.killed == killed; }, op.a);
        if (!w) return;
        gone(w->first, w->second);
        break;
      }
      case REv::tick:
        now_ += std::chrono::milliseconds(1 + op.a % 50);
        s_.tick(now_);
        break;
    }
    absorb();
  }

  // A worker serving everything joins; results are given until every task has its outcome.
  void run_out() {
    step_ = "run out";
    workers_[next_worker_] = make_worker(false, false);
    s_.worker_ready(next_worker_++, false, 1, kCredit, now_, {});
    absorb();
    for (int round = 0; round < 100000 && open() > 0; ++round) {
      bool any = false;
      for (auto& [id, w] : workers_) {
        if (w.gone || w.inflight.empty()) continue;
        const TaskId t = w.inflight.front();
        w.inflight.erase(w.inflight.begin());
        tasks_[t].at = 0;
        if (s_.result(id, t, now_)) outcome(t);
        absorb();
        any = true;
        break;
      }
      if (!any) {
        // Spawns still to start: they start serving everything.
        if (spawns_ == 0) break;
        --spawns_;
        workers_[next_worker_] = make_worker(true, false);
        s_.worker_started(next_worker_, now_);
        s_.worker_ready(next_worker_++, true, 1, kCredit, now_, {});
        absorb();
      }
    }
    for (const auto& [id, t] : tasks_)
      RNEED(t.outcomes == 1, "task " + std::to_string(id) + " has " + std::to_string(t.outcomes) +
                                 " outcomes at the end");
  }

 private:
  struct RWorker {
    bool local = true;
    bool starting = true;
    bool gone = false;
    bool killed = false;
    unsigned slots = 1;
    std::vector<bool> serves;  // empty: every task
    std::vector<TaskId> inflight;
  };
  struct RTask {
    std::uint32_t fn = 0;
    int outcomes = 0;
    WorkerId at = 0;
  };

  static RWorker make_worker(bool local, bool starting) {
    RWorker w;
    w.local = local;
    w.starting = starting;
    return w;
  }
  static std::vector<bool> serves_of(std::uint16_t b, bool local) {
    // Mostly everything for local workers (copies of the program), anything for remote ones.
    if (local ? b % 4 != 0 : b % 3 == 0) return {};
    std::vector<bool> v(kFns);
    for (std::uint32_t f = 0; f < kFns; ++f)
      v[f] = (b >> (2 + f)) & 1;
    return v;
  }
  static bool serves(const RWorker& w, std::uint32_t fn) {
    return w.serves.empty() || w.serves[fn];
  }
  bool registered(const RWorker& w) const { return !w.gone && !w.starting && !w.killed; }
  bool served(std::uint32_t fn) const {
    return std::any_of(workers_.begin(), workers_.end(),
                       [&](const auto& p) { return registered(p.second) && serves(p.second, fn); });
  }
  bool undecided() const {
    const bool starting =
        spawns_ > 0 || std::any_of(workers_.begin(), workers_.end(), [](const auto& p) {
          return !p.second.gone && p.second.starting;
        });
    const bool none = std::none_of(workers_.begin(), workers_.end(),
                                   [&](const auto& p) { return registered(p.second); });
    return starting || none;
  }

  template <class Pred>
  std::pair<const WorkerId, RWorker>* pick(Pred ok, std::uint16_t a) {
    std::vector<std::pair<const WorkerId, RWorker>*> c;
    for (auto& p : workers_)
      if (ok(p.second)) c.push_back(&p);
    return c.empty() ? nullptr : c[a % c.size()];
  }

  void gone(WorkerId id, RWorker& w) {
    w.gone = true;
    for (TaskId t : w.inflight)
      tasks_[t].at = 0;
    w.inflight.clear();
    s_.worker_gone(id, w.local ? EndCause::exited : EndCause::lost, now_);
  }

  void outcome(TaskId t) {
    RNEED(++tasks_[t].outcomes == 1, "task " + std::to_string(t) + " completed twice");
  }

  void absorb() {
    Actions a = s_.take();
    spawns_ += a.spawns;
    for (const Kill& k : a.kills)
      workers_[k.worker].killed = true;
    for (const Failure& f : a.failures) {
      RTask& t = tasks_[f.task];
      if (f.cause == FailCause::unserved) {
        RNEED(unserved_allowed_ || (!undecided() && !served(t.fn)),
              "task " + std::to_string(f.task) +
                  " failed as unserved while a worker serves it "
                  "or one is starting");
      }
      if (t.at != 0) {
        auto& in = workers_[t.at].inflight;
        in.erase(std::remove(in.begin(), in.end(), f.task), in.end());
        t.at = 0;
      }
      outcome(f.task);
    }
    for (const Dispatch& d : a.sends) {
      RTask& t = tasks_[d.task];
      RWorker& w = workers_[d.worker];
      RNEED(!w.gone && !w.starting, "task sent to a worker that is gone or starting");
      RNEED(serves(w, t.fn), "task " + std::to_string(d.task) + " (task number " +
                                 std::to_string(t.fn) + ") sent to worker " +
                                 std::to_string(d.worker) + ", which does not serve it");
      RNEED(t.at == 0, "task " + std::to_string(d.task) + " sent while on another worker");
      RNEED(t.outcomes == 0, "a task with an outcome was sent");
      t.at = d.worker;
      w.inflight.push_back(d.task);
    }
    unserved_allowed_ = false;
    // No task waits while an idle worker that serves it does nothing.
    for (const auto& [id, t] : tasks_) {
      if (t.outcomes != 0 || t.at != 0) continue;
      for (const auto& [wid, w] : workers_) {
        RNEED(!(registered(w) && w.inflight.empty() && serves(w, t.fn)),
              "task " + std::to_string(id) + " waits while worker " + std::to_string(wid) +
                  ", which serves it, is idle");
      }
    }
  }

  std::size_t open() const {
    return static_cast<std::size_t>(std::count_if(
        tasks_.begin(), tasks_.end(), [](const auto& p) { return p.second.outcomes == 0; }));
  }

  void fail(const std::string& what) { RC_FAIL(step_ + ": " + what); }

  Scheduler s_;
  TimePoint now_ = T0;
  std::map<WorkerId, RWorker> workers_;
  std::map<TaskId, RTask> tasks_;
  unsigned spawns_ = 0;
  WorkerId next_worker_ = 1;
  TaskId next_task_ = 1;
  bool unserved_allowed_ = false;  // the event was a submit of a task nobody can serve
  std::string step_ = "start";
};

rc::Gen<ROp> gen_rop() {
  return rc::gen::apply(
      [](REv e, std::uint16_t a, std::uint16_t b) {
        return ROp{e, a, b};
      },
      rc::gen::weightedElement<REv>({{60, REv::submit},
                                     {15, REv::spawn_start},
                                     {15, REv::ready},
                                     {8, REv::join},
                                     {80, REv::result},
                                     {6, REv::death},
                                     {10, REv::apply_kill},
                                     {10, REv::tick}}),
      rc::gen::arbitrary<std::uint16_t>(), rc::gen::arbitrary<std::uint16_t>());
}

void run_routing_schedule() {
  SchedulerConfig c;
  c.window = *rc::gen::inRange<std::size_t>(1, 40);
  c.max_retries = *rc::gen::inRange(0u, 3u);
  c.prefetch = *rc::gen::inRange(1u, 5u);
  c.local_workers = *rc::gen::inRange(0u, 3u);
  const auto ops = *rc::gen::scale(3.0, rc::gen::container<std::vector<ROp>>(gen_rop()));
  RoutingHarness h(c);
  for (std::size_t i = 0; i < ops.size(); ++i)
    h.apply(ops[i], i);
  h.run_out();
}

// --- reservations (remote actors): their own model ------------------------------------------
//
// Remote workers only; some are reserve()d for pinned tasks (an actor's calls) and released.
// Checked after every event: a reserved worker gets only tasks pinned to it, one at a time, in
// submit order; a pinned task goes only to its worker, once (never re-run), and fails with
// worker_died exactly when that worker is gone or not reserved; no task waits while a worker
// that may take it is idle; every task ends with exactly one outcome.

enum class VEv : std::uint8_t {
  submit,
  submit_pinned,
  join,
  reserve,
  release,
  result,
  bad_result,
  death,
  cancel
};

struct VOp {
  VEv ev = VEv::submit;
  std::uint16_t a = 0, b = 0;
};

void showValue(const VOp& op, std::ostream& os) {
  static const char* const names[] = {"submit", "submit_pinned", "join",  "reserve", "release",
                                      "result", "bad_result",    "death", "cancel"};
  os << names[static_cast<std::size_t>(op.ev)] << "(" << op.a << "," << op.b << ")";
}

class ReservationHarness {
 public:
  explicit ReservationHarness(const SchedulerConfig& c) : s_(c) {
    s_.start();
    absorb();
  }

  void apply(const VOp& op, std::size_t index) {
    std::ostringstream os;
    os << "#" << index << " ";
    showValue(op, os);
    step_ = os.str();
    switch (op.ev) {
      case VEv::submit:
      case VEv::submit_pinned: {
        if (!s_.has_room()) return;  // the caller waits for the window
        const TaskId id = next_task_++;
        VTask& t = tasks_[id];
        TaskLimits lim;
        if (op.ev == VEv::submit_pinned) {
          // Mostly to a reserved worker; sometimes to one that is not (or no longer) reserved.
          auto w =
              pick(op.a, [&](WorkerId, const VWorker& x) { return x.reserved || op.b % 4 == 0; });
          if (!w) w = next_worker_;  // a worker that never was
          t.pin = *w;
          lim.pin = *w;
        }
        s_.submit(id, 10, now_, Scheduler::kAnyFunction, lim);
        break;
      }
      case VEv::join: {
        const WorkerId id = next_worker_++;
        workers_[id].slots = 1 + op.a % 2;
        s_.worker_ready(id, false, workers_[id].slots, kCredit, now_);
        break;
      }
      case VEv::reserve: {
        auto w = pick(op.a, [](WorkerId, const VWorker&) { return true; });
        if (!w) return;
        const bool got = s_.reserve(*w);
        RNEED(got == !workers_[*w].reserved,
              "reserve() of a live remote worker answered " + std::string(got ? "true" : "false"));
        if (got) {
          workers_[*w].reserved = true;
          workers_[*w].last_pinned = 0;
        }
        break;
      }
      case VEv::release: {
        auto w = pick(op.a, [](WorkerId, const VWorker& x) { return x.reserved; });
        if (!w) return;
        workers_[*w].reserved = false;
        s_.release(*w, now_);
        break;
      }
      case VEv::result:
      case VEv::bad_result: {
        auto w = pick(op.a, [&](WorkerId id, const VWorker&) { return !running(id).empty(); });
        if (!w) return;
        const auto r = running(*w);
        const TaskId t = r[op.b % r.size()];
        if (op.ev == VEv::bad_result) {
          // Only a pinned task's: an ordinary task's re-run avoids the worker, which the
          // idle-worker rule below does not model.
          if (!tasks_[t].pin) return;
          if (tasks_[t].outcomes == 0) expect_bad_result_ = t;
          s_.bad_result(*w, t, now_);
          break;
        }
        const bool counted = s_.result(*w, t, now_);
        RNEED(counted == (tasks_[t].outcomes == 0),
              "result of task " + std::to_string(t) + (counted ? " counted" : " dropped"));
        if (counted) outcome(t);
        break;
      }
      case VEv::death: {
        auto w = pick(op.a, [](WorkerId, const VWorker&) { return true; });
        if (!w) return;
        workers_[*w].gone = true;
        workers_[*w].reserved = false;
        (void)s_.worker_gone(*w, EndCause::lost, now_);
        break;
      }
      case VEv::cancel: {
        if (tasks_.empty()) return;
        const TaskId t = 1 + op.a % tasks_.size();
        (void)s_.cancel(t, now_);
        break;
      }
    }
    absorb();
  }

  // Results run out, a fresh worker joins when nothing else can move, then stop() and every
  // worker ends: each task must have exactly one outcome.
  void run_out() {
    step_ = "run out";
    for (int round = 0; round < 5000 && open() > 0; ++round) {
      auto w = pick(0, [&](WorkerId id, const VWorker&) { return !running(id).empty(); });
      if (w) {
        const TaskId t = running(*w).front();
        if (s_.result(*w, t, now_)) outcome(t);
      } else {
        const WorkerId id = next_worker_++;
        workers_[id].slots = 1;
        s_.worker_ready(id, false, 1, kCredit, now_);
      }
      absorb();
    }
    RNEED(open() == 0, std::to_string(open()) + " task(s) never got an outcome");
    step_ = "finish";
    s_.stop(now_);
    absorb();
    for (auto& [id, w] : workers_) {
      if (w.gone) continue;
      w.gone = true;
      w.reserved = false;
      (void)s_.worker_gone(id, EndCause::lost, now_);
      absorb();
    }
    for (const auto& [id, t] : tasks_)
      RNEED(t.outcomes == 1, "task " + std::to_string(id) + " ended with " +
                                 std::to_string(t.outcomes) + " outcomes");
    RNEED(s_.in_system() == 0, "in_system() is not 0 at the end");
  }

 private:
  struct VWorker {
    unsigned slots = 1;
    bool reserved = false, gone = false;
    TaskId last_pinned = 0;  // the last pinned task sent to it since it was reserved
  };
  struct VTask {
    WorkerId pin = 0;
    unsigned sends = 0, outcomes = 0;
  };

  template <class Pred>
  std::optional<WorkerId> pick(unsigned k, Pred pred) const {
    std::vector<WorkerId> ids;
    for (const auto& [id, w] : workers_)
      if (!w.gone && pred(id, w)) ids.push_back(id);
    if (ids.empty()) return std::nullopt;
    return ids[k % ids.size()];
  }

  // The tasks w runs now: the first `slots` of its queue.
  std::vector<TaskId> running(WorkerId id) const {
    auto in = s_.inflight_of(id);
    in.resize(std::min<std::size_t>(in.size(), workers_.at(id).slots));
    return in;
  }

  void outcome(TaskId t) {
    RNEED(++tasks_[t].outcomes == 1, "task " + std::to_string(t) + " got a second outcome");
  }

  void absorb() {
    const Actions a = s_.take();
    for (const Failure& f : a.failures) {
      VTask& t = tasks_[f.task];
      const auto what = "failure of task " + std::to_string(f.task) + " (" +
                        std::string(to_string(f.cause)) + ")";
      outcome(f.task);
      if (t.pin == 0) continue;
      RNEED(f.attempt <= 1, what + ": a pinned task ran more than once");
      auto w = workers_.find(t.pin);
      const bool there = w != workers_.end() && !w->second.gone && w->second.reserved;
      if (f.cause == FailCause::worker_died)
        RNEED(!there, what + ": its worker is there and reserved");
      if (f.cause == FailCause::bad_result) RNEED(expect_bad_result_ == f.task, what + ": unasked");
    }
    if (expect_bad_result_) {
      RNEED(tasks_[expect_bad_result_].outcomes == 1,
            "pinned task " + std::to_string(expect_bad_result_) + " was not failed (bad_result)");
    }
    expect_bad_result_ = 0;
    for (const Dispatch& d : a.sends) {
      VTask& t = tasks_[d.task];
      VWorker& w = workers_[d.worker];
      const auto what =
          "send of task " + std::to_string(d.task) + " to w" + std::to_string(d.worker);
      RNEED(!w.gone, what + ": the worker is gone");
      RNEED(t.outcomes == 0, what + ": it has its outcome");
      if (w.reserved)
        RNEED(t.pin == d.worker, what + ": a reserved worker takes pinned tasks only");
      if (t.pin) {
        RNEED(t.pin == d.worker, what + ": pinned to w" + std::to_string(t.pin));
        RNEED(w.reserved, what + ": the worker is not reserved");
        RNEED(++t.sends == 1, what + ": a pinned task sent twice");
        RNEED(d.attempt == 1, what + ": a pinned task's attempt is not 1");
        RNEED(d.task > w.last_pinned, what + ": pinned tasks out of submit order");
        RNEED(s_.inflight_of(d.worker).size() == 1, what + ": not alone on its worker");
        w.last_pinned = d.task;
      }
    }
    // Nothing waits that could move: no pinned task for a worker that is gone or released, and
    // no task while a worker that may take it is idle.
    std::map<TaskId, bool> in_flight;
    for (const auto& [id, w] : workers_)
      if (!w.gone)
        for (TaskId t : s_.inflight_of(id))
          in_flight[t] = true;
    for (const auto& [id, t] : tasks_) {
      if (t.outcomes != 0 || in_flight.count(id)) continue;
      const auto what = "task " + std::to_string(id);
      if (t.pin) {
        auto w = workers_.find(t.pin);
        RNEED(w != workers_.end() && !w->second.gone && w->second.reserved,
              what + " waits for a worker that is gone or not reserved");
        RNEED(!s_.inflight_of(t.pin).empty(), what + " waits while its reserved worker is idle");
        continue;
      }
      for (const auto& [wid, w] : workers_) {
        RNEED(w.gone || w.reserved || !s_.inflight_of(wid).empty() || s_.closed(),
              what + " waits while w" + std::to_string(wid) + " is idle");
      }
    }
    RNEED(s_.in_system() == open(), "in_system() disagrees with the tasks without an outcome");
  }

  std::size_t open() const {
    return static_cast<std::size_t>(std::count_if(
        tasks_.begin(), tasks_.end(), [](const auto& p) { return p.second.outcomes == 0; }));
  }

  void fail(const std::string& what) { RC_FAIL(step_ + ": " + what); }

  Scheduler s_;
  TimePoint now_ = T0;
  std::map<WorkerId, VWorker> workers_;
  std::map<TaskId, VTask> tasks_;
  WorkerId next_worker_ = 1;
  TaskId next_task_ = 1;
  TaskId expect_bad_result_ = 0;
  std::string step_ = "start";
};

rc::Gen<VOp> gen_vop() {
  return rc::gen::apply(
      [](VEv e, std::uint16_t a, std::uint16_t b) {
        return VOp{e, a, b};
      },
      rc::gen::weightedElement<VEv>({{50, VEv::submit},
                                     {40, VEv::submit_pinned},
                                     {8, VEv::join},
                                     {10, VEv::reserve},
                                     {5, VEv::release},
                                     {80, VEv::result},
                                     {4, VEv::bad_result},
                                     {4, VEv::death},
                                     {6, VEv::cancel}}),
      rc::gen::arbitrary<std::uint16_t>(), rc::gen::arbitrary<std::uint16_t>());
}

void run_reservation_schedule() {
  SchedulerConfig c;
  c.window = *rc::gen::inRange<std::size_t>(1, 40);
  c.max_retries = *rc::gen::inRange(0u, 3u);
  c.prefetch = *rc::gen::inRange(1u, 5u);
  c.local_workers = 0;
  const auto ops = *rc::gen::scale(3.0, rc::gen::container<std::vector<VOp>>(gen_vop()));
  ReservationHarness h(c);
  for (std::size_t i = 0; i < ops.size(); ++i)
    h.apply(ops[i], i);
  h.run_out();
}

}  // namespace

TEST_SUITE("coordinator.scheduler") {
  TEST_CASE("model: every task gets exactly one outcome, whatever happens to its workers") {
    check_property("all events", 10000, [] { run_schedule(Mode{}); });
  }

  TEST_CASE("model: a healthy task never fails for deaths only crash tasks caused") {
    Mode m;
    m.external_deaths = false;
    m.late_results = false;
    check_property("crash deaths only", 8000, [m] { run_schedule(m); });
  }

  TEST_CASE("model: long schedules (up to 1200 events) keep every rule") {
    check_property("long schedules", 2000, [] { run_schedule(Mode{}, 4); });
  }

  TEST_CASE(
      "model: tasks go only to workers that serve them, and fail as unserved only when "
      "none does") {
    check_property("routing", 5000, [] { run_routing_schedule(); });
  }

  TEST_CASE(
      "model: a reserved worker runs only its pinned tasks, one at a time in order, and a pinned "
      "task runs once, only there") {
    check_property("reservations", 5000, [] { run_reservation_schedule(); });
  }

}  // TEST_SUITE
