// The pool's scheduling rules as a pure state machine (internal).
//
// Events go in (a task submitted, a worker ready, a result, a worker gone, a timeout tick, a
// cancel); actions come out (send these tasks to that worker, end this task with that cause,
// kill that worker, spawn N workers, tell that worker to exit). The Scheduler knows tasks and
// workers only by id, their sizes and their positions; it owns no thread, socket, process or
// clock (every event carries `now`), so every rule can be tested with random event sequences
// and no processes (tests/coordinator/test_coordinator_scheduler.cpp).
//
// Rules, in one place:
// - Window: at most `window` tasks are in the system (submitted, no outcome yet); the caller
//   asks has_room() before submit().
// - Placement: the oldest pending task goes to the ready worker with the fewest tasks in
//   flight that has room: a free slot, or a queue shorter than the adaptive depth (about 1 ms
//   of work, at most `prefetch`) within half its transport buffer. While any worker is still
//   starting, nobody queues beyond its running slots (so early tasks do not all land on the
//   first worker to register). A submit queues at most one task behind a worker's running
//   ones (none where the depth is above kSubmitQueueDepth: tiny tasks); the pump after each
//   result fills the rest of the depth, in one batch.
// - A worker runs its queue in order, `slots` at a time: the first `slots` in flight run. A
//   task cancelled there without killing the worker (remote, or queued when cancelled) still
//   runs: past the timeout it gets its worker killed like any other, charging nobody.
// - Charging: a run counts against a task's attempts only when the task is to blame: it ran
//   past the timeout, or its worker died (crashed, lost, sent garbage) while it was the only
//   task running there (cancelled tasks still running there count). Tasks that had not
//   started, or shared a dying multi-slot worker, are re-queued without charge; the latter run
//   alone next time (isolation), so a crash is pinned on the task that causes it. A task is
//   failed once charged 1 + max_retries times.
// - A killed worker's cause is the one recorded when the kill was decided (cancel, timeout,
//   start-up timeout, bad frame), never guessed from text.
// - Routing: a worker serves the tasks its Offer matched (name and signature); a task goes
//   only to workers that serve it. A task no registered worker serves fails (unserved) at
//   submit, or when the last starting worker registers without it; while a worker is
//   starting, or none is there yet (remote only), it waits.
// - Reservation (remote actors): a ready remote worker reserve()d takes only tasks pinned to it
//   (TaskLimits::pin), one at a time in submit order, until release(); a pinned task runs only
//   there, is never retried or re-queued, and fails (worker_died) if that worker is gone or not
//   reserved, at submit or when it ends.
// - Replacements: a local worker that ends unexpectedly is replaced; one retired by
//   max_tasks_per_worker is replaced when retired. Three local workers in a row that end before
//   registering (or a spawn failure with no worker at all) break the pool: pending and new
//   tasks fail with no_workers. A spawn failure with other workers alive shrinks the pool.
//
// Threading: none; the owner serialises calls (the pool holds its mutex around them).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <memory_resource>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ferry::detail {

using TaskId = std::uint64_t;
using WorkerId = std::uint32_t;
using SchedClock = std::chrono::steady_clock;
using TimePoint = SchedClock::time_point;

// Why a worker ended. Reported by the supervisor (local) or membership (remote); when the
// scheduler itself asked for the kill, its recorded cause replaces the reported one.
enum class EndCause : std::uint8_t {
  exited,           // the process ended (crash, signal or exit) for reasons of its own
  lost,             // remote: disconnected or silent past the heartbeat timeout
  rejected,         // the handshake refused it (protocol or task set)
  bad_frame,        // it sent a frame that could not be decoded: killed
  startup_timeout,  // it did not register within the start-up timeout: killed
  task_timeout,     // a task ran past the task timeout: killed
  cancelled,        // the caller cancelled the task it was running: killed
  recycled,         // max_tasks_per_worker reached: told to exit
  shutdown,         // the pool is shutting down
  // SIGKILL the pool did not send (an operator, a chaos test, the OOM killer): a death, but no
  // sign that the program cannot start.
  killed,
};
std::string_view to_string(EndCause c) noexcept;

// Why a task ended without a result.
enum class FailCause : std::uint8_t {
  worker_died,  // charged 1 + max_retries times for deaths of its workers
  timeout,      // its last charged run passed the task timeout
  cancelled,    // cancelled by the caller
  shutdown,     // the pool shut down before it ran
  no_workers,   // the pool cannot start workers (see broken_reason())
  too_large,    // its arguments exceed the frame limit
  bad_result,   // its result could not be decoded twice, on two workers
  unserved,     // no registered worker serves its task (and none is starting)
  unsendable,   // its task frame could not be built (PoolCore says why)
};
std::string_view to_string(FailCause c) noexcept;

struct SchedulerConfig {
  std::size_t window = 1024;  // tasks in the system at once
  unsigned max_retries = 3;
  unsigned prefetch = 64;  // most tasks queued at one worker (running ones included)
  std::chrono::milliseconds task_timeout{0};  // 0: none
  std::chrono::milliseconds startup_timeout{30000};
  unsigned max_tasks_per_worker = 0;  // 0: unlimited (local workers only)
  unsigned local_workers = 0;         // how many the pool keeps running
  std::size_t max_task_bytes = SIZE_MAX;
  unsigned startup_failure_limit = 3;
  // A death fails every task in the system: those sent to the worker, not only the one it
  // ran, and those waiting for a worker (actors: a call made before a death must not run on
  // the next instance, nor run twice).
  bool fail_sent_on_death = false;
};

// One task's own limits, where they differ from the pool's (Pool::submit(ferry::with(...), ...)).
struct TaskLimits {
  std::optional<unsigned> max_retries;
  std::optional<std::chrono::milliseconds> timeout;  // 0: none
  WorkerId pin = 0;  // runs only on this reserved worker (an actor's); 0: any worker
};

// Tasks to send, in order (the caller batches consecutive sends to one worker).
struct Dispatch {
  WorkerId worker = 0;
  TaskId task = 0;
  std::uint32_t attempt = 1;  // 1-based: charges so far + 1
};
// A task ended without a result.
struct Failure {
  TaskId task = 0;
  FailCause cause = FailCause::worker_died;
  std::uint32_t attempt = 0;               // the attempt that failed (charges), 0 if it never ran
  WorkerId worker = 0;                     // the worker of its last run, 0 if none
  EndCause worker_end = EndCause::exited;  // how that worker ended (worker_died, timeout)
};
struct Kill {
  WorkerId worker = 0;
  EndCause cause = EndCause::exited;
};
// Something a person should be told once (the pool logs it).
struct Notice {
  enum class Kind : std::uint8_t { shrunk, broken } kind = Kind::shrunk;
  unsigned running = 0, wanted = 0;
};

struct Actions {
  std::vector<Dispatch> sends;
  std::vector<Failure> failures;
  std::vector<Kill> kills;
  std::vector<WorkerId> stops;  // send a graceful shutdown (recycled, drained)
  unsigned spawns = 0;
  std::vector<Notice> notices;
  bool workers_changed = false;  // readiness waiters should look again
  // Submitters waiting for the window should look again: a slice of it (window/16, at least
  // one task) is free, or submits now fail at once (closed, broken).
  bool room_freed = false;
  bool empty() const noexcept {
    return sends.empty() && failures.empty() && kills.empty() && stops.empty() && spawns == 0 &&
           notices.empty() && !workers_changed && !room_freed;
  }
  // Empties it and keeps the vectors' capacity (take(Actions&) reuses it).
  void clear() noexcept {
    sends.clear();
    failures.clear();
    kills.clear();
    stops.clear();
    spawns = 0;
    notices.clear();
    workers_changed = false;
    room_freed = false;
  }
};

struct SchedulerCounters {
  std::uint64_t submitted = 0;
  std::uint64_t retries = 0;
  std::uint64_t worker_deaths = 0;  // ends other than rejected, recycled, cancelled, shutdown
  std::uint64_t workers_recycled = 0;
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerConfig c);

  // Asks for the initial local workers (a spawns action).
  void start();
  // True while a submit would not exceed the window (or would fail at once: closed, broken).
  bool has_room() const noexcept;
  // A new task of `bytes` encoded bytes. Precondition: has_room(). It is pending, or failed
  // at once (closed: shutdown; broken: no_workers; too large: too_large).
  // `function` is its task number (kAnyFunction: any worker can run it).
  // `limits` override the config's max_retries and task_timeout for this task.
  void submit(TaskId task, std::size_t bytes, TimePoint now, std::uint32_t function = kAnyFunction,
              TaskLimits limits = {});
  static constexpr std::uint32_t kAnyFunction = 0xffffffffu;
  // Caller's cancel; false if the task had no outcome pending (done, or unknown).
  bool cancel(TaskId task, TimePoint now);

  // A local worker process was started (it must register within the start-up timeout).
  void worker_started(WorkerId w, TimePoint now);
  // A local worker could not be started (resources); `why` is kept for messages.
  void spawn_failed(std::string why, TimePoint now);
  // The worker must go for `why` (rejected at the handshake, sent a malformed frame): a kill
  // action, and the cause is remembered for when it is gone.
  void kill_worker(WorkerId w, EndCause why);
  // Admitted: it takes tasks. Remote workers are ready when they join (no started event).
  // serves[f]: it runs task number f (empty: every task).
  void worker_ready(WorkerId w, bool local, unsigned slots, std::size_t credit_bytes, TimePoint now,
                    std::vector<bool> serves = {});
  // A result (or the task's own exception) for task from w. False: stale (w no longer has
  // it: a late duplicate, a cancelled task) and the caller drops it; true: the caller
  // completes the task's future with it.
  bool result(WorkerId w, TaskId task, TimePoint now);
  // The result for task from w could not be decoded: re-run once on another worker.
  void bad_result(WorkerId w, TaskId task, TimePoint now);
  // The pool could not send task, dispatched to w (its arguments are too large for that worker,
  // or its frame could not be built): it leaves w's queue, where no result will come for it,
  // and fails with `why` (too_large or unsendable). Ignored unless w has it in flight.
  void not_sent(WorkerId w, TaskId task, FailCause why, TimePoint now);
  // The worker ended. Idempotent (a second report of the same end is ignored). Returns the
  // cause that counts: the one recorded when the scheduler asked for its end (a kill, a
  // recycling stop, the shutdown), else the reported one.
  EndCause worker_gone(WorkerId w, EndCause reported, TimePoint now);
  // Time passed: kills for tasks past the timeout and workers past the start-up timeout.
  void tick(TimePoint now);
  // When tick() should next be called (nullopt: no deadline pending).
  std::optional<TimePoint> next_deadline() const;

  // Remote actors: a ready remote worker that is not reserved and serves task number
  // `function` (fewest tasks in flight first).
  std::optional<WorkerId> free_remote(std::uint32_t function = kAnyFunction) const;
  // Takes w out of the task slots for pinned tasks only; false if it is not a free remote one.
  bool reserve(WorkerId w);
  // Gives w back to ordinary tasks; pinned tasks still waiting for it fail (worker_died).
  void release(WorkerId w, TimePoint now);
  bool reserved(WorkerId w) const;

  // No new tasks: later submits fail with shutdown.
  void close();
  // Stops: pending tasks fail (shutdown); tasks still in flight fail as their workers end.
  void stop(TimePoint now);

  Actions take() { return std::exchange(out_, Actions{}); }
  // As take(), into `into` (emptied first), whose vectors the scheduler keeps for the next
  // actions: no allocation per event where the caller recycles one Actions.
  void take(Actions& into) noexcept {
    into.clear();
    std::swap(into, out_);
  }

  // Queries.
  std::size_t in_system() const noexcept { return in_system_; }
  std::size_t pending() const noexcept { return pending_.size(); }
  bool known(TaskId t) const noexcept { return tasks_.count(t) != 0; }
  unsigned ready_workers(bool local_only = false) const;
  unsigned ready_slots() const;  // of ready workers not reserved for an actor
  bool is_ready(WorkerId w) const;
  bool broken() const noexcept { return broken_; }
  unsigned local_target() const noexcept { return local_target_; }
  bool closed() const noexcept { return closed_; }
  const std::string& broken_reason() const noexcept { return broken_reason_; }
  void set_broken_reason(std::string why) { broken_reason_ = std::move(why); }
  const SchedulerCounters& counters() const noexcept { return counters_; }
  const SchedulerConfig& config() const noexcept { return cfg_; }
  // Tasks in flight on w, oldest first (for tests and the status page).
  std::vector<TaskId> inflight_of(WorkerId w) const;
  // True if w was told to go (stopping, recycled, killed): its channel closing is expected.
  bool told_to_exit(WorkerId w) const;
  // The recorded kill cause of w, if the scheduler asked for one.
  std::optional<EndCause> kill_cause(WorkerId w) const;

 private:
  struct Task {
    std::size_t bytes = 0;
    std::uint32_t charges = 0;
    WorkerId at = 0;  // worker it is on (0: pending or done)
    TimePoint started{};
    bool done = false;  // outcome given (the entry lingers while a worker still holds it)
    bool isolate = false;
    bool bad_result = false;
    WorkerId avoid = 0;  // a worker whose result for it could not be decoded
    std::uint32_t function = kAnyFunction;
    unsigned max_retries = 0;
    std::chrono::milliseconds timeout{0};  // 0: none
    WorkerId pin = 0;
  };
  enum class WState : std::uint8_t { starting, ready, draining };
  struct Worker {
    WState state = WState::starting;
    bool local = true;
    unsigned slots = 1;
    std::size_t credit = 0;
    std::deque<TaskId> inflight;
    bool isolated = false;  // inflight holds an isolated task (then alone): read while non-empty
    std::size_t inflight_bytes = 0;
    std::uint64_t sent = 0;
    TimePoint since{};
    std::optional<EndCause> kill;  // why it must go, once decided
    bool kill_sent = false;        // a kill action was given
    TaskId culprit = 0;            // the task a timeout kill is for
    bool stop_sent = false;
    std::vector<bool> serves;  // by task number; empty: every task
    bool reserved = false;     // an actor's: pinned tasks only, one at a time
  };

  // How far a pump may queue behind a worker's running tasks: the adaptive depth, or one task
  // (a submit's pump: see has_room_for).
  enum class Ahead { depth, one };
  // Above this depth (tasks under about 60 us), a submit sends only to a free slot.
  static constexpr std::size_t kSubmitQueueDepth = 16;
  void pump(TimePoint now, Ahead ahead = Ahead::depth);
  // d: depth(), which the caller reads once for many calls.
  bool has_room_for(const Worker& w, const Task& t, WorkerId wid, Ahead ahead, std::size_t d) const;
  // Whether w could take some task now: true whenever has_room_for(w, t, ...) is for any t.
  bool has_any_room(const Worker& w, std::size_t d) const;
  std::size_t depth() const;
  bool anyone_starting() const;
  void fail(TaskId id, Task& t, FailCause c, WorkerId w = 0, EndCause e = EndCause::exited);
  std::size_t room_slice() const noexcept;
  void finish(TaskId id, Task& t);  // the task's outcome is given: release its window slot
  void forget_if_idle(TaskId id);   // drops a done task no worker holds any more
  // Takes w.inflight[at], which is `leaving` (the caller found it), out of w's queue.
  void remove_inflight(Worker& w, std::size_t at, const Task& leaving, TimePoint now);
  // Task `id` leaves worker `wid`'s queue (a result, a bad result, not sent): the worker and the
  // task, or nulls if that worker does not have it in flight. Then call after_leaving().
  std::pair<Worker*, Task*> leave_queue(WorkerId wid, TaskId id, TimePoint now);
  void after_leaving(WorkerId wid, Worker& w, TaskId id, TimePoint now);
  void requeue_front(std::vector<TaskId>& ids);
  void startup_failure(bool killed, TimePoint now);
  void maybe_stop_draining(WorkerId wid, Worker& w);
  void fail_pending(FailCause c);
  void fail_pinned_pending(WorkerId w);  // its pinned tasks not sent yet: worker_died
  void replenish();                      // spawns to keep local_target_ local workers
  static bool serves(const Worker& w, std::uint32_t function);
  bool served(std::uint32_t function) const;  // by a registered worker that is not going
  // True while a task's servers cannot be known yet: a worker is starting, or none is there.
  bool serving_undecided() const;
  void fail_unserved();  // pending tasks no worker serves (once that can be known)

  SchedulerConfig cfg_;
  // An entry comes and goes per task: nodes are recycled from this pool (no malloc per task;
  // the scheduler is single-threaded by contract). Held by pointer so a Scheduler can move.
  std::unique_ptr<std::pmr::unsynchronized_pool_resource> task_nodes_ =
      std::make_unique<std::pmr::unsynchronized_pool_resource>();
  std::pmr::unordered_map<TaskId, Task> tasks_{task_nodes_.get()};
  std::deque<TaskId> pending_;
  std::map<WorkerId, Worker> workers_;
  std::size_t in_system_ = 0;
  unsigned startup_failures_ = 0;
  unsigned startup_kills_ = 0;  // SIGKILLed from outside before registering, in a row
  unsigned local_target_ = 0;   // local workers the pool keeps (shrinks on spawn failures)
  unsigned spawning_ = 0;       // spawns asked for, not yet started or failed
  unsigned starting_ = 0;       // workers in WState::starting (anyone_starting, per event)
  unsigned restricted_ = 0;     // workers (ever) that serve only some tasks
  bool shrunk_noticed_ = false;
  bool closed_ = false, stopping_ = false, broken_ = false;
  std::string broken_reason_;
  double avg_service_us_ = -1;  // EWMA of a task's service time; < 0 until measured
  SchedulerCounters counters_;
  Actions out_;
};

}  // namespace ferry::detail
