// The pool's machinery behind ferry::Pool (internal). Four parts, one job each:
//
//   Scheduler   (scheduler.hpp)   pure rules: events in, actions out; no threads, I/O or clock
//   PoolCore    (this file)       the dispatcher: owns the Scheduler, the task table and the
//                                 endpoint table; turns I/O events into scheduler events and
//                                 carries out its actions (send, complete, kill, spawn, stop)
//   Supervisor  (supervisor.hpp)  local processes: spawn, watch, reap, forward output
//   Membership  (membership.hpp)  remote workers: the listen router, admission, heartbeats
//
// Threads: callers (submit, cancel, wait), one reader per local worker, the supervisor thread,
// the membership thread (with --listen), the callback thread (then/on_done, once used). Each calls
// into PoolCore, which takes mu_ around the Scheduler and the tables and carries out the actions
// after releasing it.
//
// Lock order: mu_, then an endpoint's outbox mutex (frames are queued there under mu_, so they
// reach each worker in the order the scheduler chose; nothing is taken under it). An endpoint's
// send_mu is never taken under mu_: after mu_ is released, the one thread that found the outbox
// idle builds the task frames and sends them holding send_mu alone (flush), so no thread waits
// for a send while it holds mu_. A task's TaskState::m is taken last (never while waiting for
// mu_). Supervisor and Membership have their own locks, never held while
// calling into PoolCore.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/container/small_vector.hpp>

#include "admission.hpp"
#include "callbacks.hpp"
#include "ferry/coordinator/detail/task_state.hpp"
#include "ferry/coordinator/pool.hpp"
#include "ferry/ipc/shm_object.hpp"
#include "scheduler.hpp"
#include "worker_endpoint.hpp"

namespace ferry::detail {

class Supervisor;
class Membership;

// How a worker ended, for failure messages.
struct EndInfo {
  EndCause cause = EndCause::exited;
  std::optional<coordinator::ExitInfo> exit;  // local: the process's exit status
  std::string detail;                         // e.g. "no message for 3012 ms"
};

class PoolCore : public std::enable_shared_from_this<PoolCore> {
 public:
  explicit PoolCore(PoolOptions opt);
  ~PoolCore();

  void start();
  std::shared_ptr<TaskState> enqueue(std::shared_ptr<TaskState> t, bool block);
  // Task graphs: t is submitted (build() gives its arguments) once every dep has finished,
  // from the callback thread; or fails with DependencyFailed / Cancelled if one failed.
  void submit_after(const std::shared_ptr<TaskState>& t, std::vector<FutureBase> deps,
                    std::function<Bytes()> build);
  bool cancel(const std::shared_ptr<TaskState>& t);
  bool wait_ready(std::chrono::milliseconds timeout);
  bool wait_workers(unsigned n, std::chrono::milliseconds timeout);
  void shutdown(ShutdownMode mode);
  PoolStats stats() const;
  unsigned capacity() const;
  std::string listen_endpoint() const;
  const PoolOptions& options() const noexcept { return opt_; }
  std::size_t window() const noexcept { return sched_cfg_.window; }

  // --- from the supervisor and membership --------------------------------------------------
  const AdmissionPolicy& admission() const noexcept { return admission_; }
  WorkerId next_worker_id();
  void worker_started(const EndpointPtr& w);  // local: spawned, not registered yet
  void spawn_failed(const std::string& why);
  // Admitted (local after its hello and offer, or remote), serving a.serves.
  void worker_joined(const EndpointPtr& w, const Admission& a);
  void worker_refused(WorkerId w, const std::string& reason);
  void worker_gone(WorkerId w, const EndInfo& end);
  void bad_stream(WorkerId w, const std::string& why);  // malformed frame: it must go
  void channel_lost(WorkerId w);  // its channel closed; if it has not exited, it must go
  // Results (and other frames) a worker sent, in arrival order; `remote`: from a worker that
  // joined over the listen address (its values are checked against their result types).
  void on_frames(WorkerId w, std::span<Frame> frames, bool remote = false);
  void tick();
  std::optional<TimePoint> next_deadline() const;
  void event(EventLevel level, const std::string& line) const;  // membership, supervision
  // Runs fn on the callback thread (then, on_done); after shutdown, in this thread.
  void post(std::function<void()> fn) {
    if (callbacks_) return callbacks_->post(std::move(fn));
    fn();
  }
  // --- remote actors (actor.cpp) -----------------------------------------------------------
  struct Reservation {
    WorkerId id = 0;
    std::int32_t pid = 0;
    std::string host;
  };
  // Takes a joined remote worker that serves task number `function` (an actor's constructor)
  // out of the task slots (Scheduler::reserve), waiting up to
  // timeout for one; nullopt at timeout, once the pool stops, or once `abandon` is set (then
  // wake_waiters()). on_gone runs once, with its cause, if the worker ends while reserved
  // (after the calls pinned to it failed), in the thread that reported the end.
  std::optional<Reservation> reserve_remote(
      std::uint32_t function, std::chrono::milliseconds timeout, const std::atomic<bool>& abandon,
      std::function<void(WorkerId, const std::string&)> on_gone);
  void release_reserved(WorkerId id);
  void wake_waiters();
  // Remote workers ready now, and how many of all workers are reserved by actors.
  std::pair<unsigned, unsigned> remote_workers() const;

  // Per-worker statistics entry (supervisor: at spawn; membership: at join).
  void note_worker(const WorkerIdentity& who);
  // A remote worker's heartbeat answer: its resource use, and that it is alive.
  void note_heartbeat(WorkerId w, const msg::Heartbeat& hb);
  // A line a worker wrote (kept for the status page; the last few only).
  void note_line(WorkerId w, std::string_view line);
  RecentNotes recent() const;
  // Pool::put: the object's segment, removed at shutdown if a ref still holds it then. False
  // (and not kept) once the pool has shut down.
  bool track_object(const std::shared_ptr<ipc::SharedObject>& o, bool put = true);
  // Membership: a chunk of an object sent to a remote worker (`last`: the object's last one).
  void count_served(std::uint64_t bytes, bool last) noexcept {
    object_bytes_served_.fetch_add(bytes, std::memory_order_relaxed);
    if (last) objects_served_.fetch_add(1, std::memory_order_relaxed);
  }

 private:
  // What to do once mu_ is released.
  struct Work {
    // Endpoints whose outbox this thread is to send: most events send to one or two, which
    // then cost no allocation.
    boost::container::small_vector<EndpointPtr, 2> flushes;
    std::vector<std::pair<std::shared_ptr<TaskState>, FailureInfo>> failures;
    std::vector<std::pair<EndpointPtr, EndCause>> kills;
    struct Done {
      std::shared_ptr<TaskState> task;
      Frame* frame;
      std::size_t value_at;  // a result's value starts here in frame->payload
      // A value a local worker passed as an object (then not in the frame); by_handle: it was
      // moved to a store name to be kept (TaskState::value_object).
      std::shared_ptr<ipc::SharedObject> object;
      bool by_handle = false;
    };
    std::vector<Done> results;
    // Argument objects of tasks whose outcome is final: unlinked and unmapped (which takes a
    // while for big ones) once mu_ is released.
    std::vector<std::shared_ptr<ipc::SharedObject>> released;
    // Local workers that ended: their leftover result objects are removed.
    std::vector<WorkerId> sweep_objects;
    unsigned spawns = 0;
    std::vector<std::pair<EventLevel, std::string>> notices;
  };

  // mu_ held: takes the scheduler's actions into w (frames queued in outboxes).
  void collect_locked(Work& w, const std::optional<EndInfo>& end = std::nullopt,
                      const WorkerIdentity* gone = nullptr);
  // mu_ held: appends to the endpoint's outbox; the first thread to find it idle sends it.
  static void queue_locked(Work& w, const EndpointPtr& to, WorkerEndpoint::Outgoing o);
  // No lock held: sends, completes, kills, spawns.
  void carry_out(Work& w);
  // No lock held: sends what the endpoint's outbox holds, in order, until it is empty (also
  // what other threads queue meanwhile); the frames of tasks are built here. A task whose frame
  // cannot be built (an allocation failing) fails alone, Rejected, naming why (frames_failed).
  void flush(WorkerEndpoint& ep);
  // No lock held: tasks dispatched to worker `id` whose frames could not be built.
  void frames_failed(WorkerId id, std::vector<std::pair<TaskId, std::string>> failed);
  // A task's frame: its arguments, or the name of the object that holds them (a remote worker
  // gets the object's bytes; collect_locked() checked that a frame can carry them).
  static Frame task_frame(const WorkerEndpoint::Outgoing& o, bool remote);
  // mu_ held: the task's outcome is final; its argument object (if any) goes once unlocked.
  void release_object_locked(Work& w, TaskId id);
  // No lock held: a result frame that names a shared-memory object becomes a result frame
  // with an empty value and the object mapped beside it (moved to a store name to be kept as
  // the task's TaskState::value_object; a chunk's is unlinked and read in), or an error
  // frame naming why the handle was refused (BadHandle: a remote worker, or a name outside
  // the ones this worker may create).
  struct Adopted {
    std::shared_ptr<ipc::SharedObject> object;
    bool by_handle = false;
  };
  Adopted adopt_result_object(WorkerId w, Frame& f, bool remote) const;
  // A result object moved to a store name, as an object of the store (as Pool::put's), or
  // null once the pool has shut down.
  std::shared_ptr<ObjectBlock> keep_result_object(const std::shared_ptr<ipc::SharedObject>& o);
  FailureInfo failure_info(const TaskState& t, const Failure& f, const WorkerIdentity* who,
                           const std::optional<EndInfo>& end) const;
  FailureInfo simple_failure(const TaskState& t, FailureKind k, std::string message) const;
  // A frame a worker sent, as on_frames() decoded it (once, before taking mu_).
  struct Arrival {
    enum What : std::uint8_t { other, value, error, bad } what = other;  // bad: does not decode
    std::size_t value_at = 0;  // value: where it starts in the payload
    Adopted adopted{};         // value: in this object instead (adopt_result_object)
  };
  static constexpr std::size_t kMaxFrames = 64;  // on_frames() handles this many at a time
  static Arrival decode_arrival(const Frame& f);
  // No lock held: marks bad the values (of a remote worker) that are not their task's type.
  void check_remote_values(std::span<Frame> frames, std::span<Arrival> arrived) const;
  void complete_result(TaskState& t, Frame& f, std::size_t value_at, const Adopted& adopted);
  void launch_after(const std::shared_ptr<TaskState>& t, std::vector<FutureBase> deps,
                    std::function<Bytes()> build);
  void done_waiting(TaskId id);
  void notify_locked(const Actions& a);

  PoolOptions opt_;
  SchedulerConfig sched_cfg_;
  AdmissionPolicy admission_;
  std::shared_ptr<coordinator::Launcher> launcher_;

  mutable std::mutex mu_;
  std::condition_variable space_cv_;  // submitters waiting for the window
  std::condition_variable state_cv_;  // readiness and drain waiters
  Scheduler sched_;
  Actions spare_actions_;  // collect_locked's, kept between calls for the vectors' capacity
  // Tasks with no outcome yet. An entry comes and goes per task: nodes are recycled from a
  // pool (mu_ guards both), not taken from malloc.
  std::pmr::unsynchronized_pool_resource task_nodes_;
  std::pmr::unordered_map<TaskId, std::shared_ptr<TaskState>> tasks_{&task_nodes_};
  std::unordered_map<WorkerId, EndpointPtr> endpoints_;  // registered or starting
  // Remote workers reserved by actors, and what to tell each actor when its worker ends.
  std::unordered_map<WorkerId, std::function<void(WorkerId, const std::string&)>> reserved_;
  std::unordered_map<WorkerId, std::size_t> stats_index_;  // its entry in stats_.workers
  // Pool task number -> the last worker that offered it with another signature (messages).
  std::unordered_map<std::uint32_t, std::string> mismatches_;
  // Argument objects by task, until the task's outcome is final (retries reuse them).
  std::unordered_map<TaskId, std::shared_ptr<ipc::SharedObject>> objects_;
  // Why a task's frame could not be built (FailCause::unsendable), until its failure is made.
  std::unordered_map<TaskId, std::string> unsendable_;
  TaskId next_task_id_ = 1;
  // submit_after: tasks waiting for their dependencies.
  std::unordered_map<TaskId, std::shared_ptr<TaskState>> waiting_;
  WorkerId next_worker_id_ = 1;
  PoolStats stats_;
  // Observation (status page, metrics), under mu_: result durations, and per worker when it
  // was last heard from and its last reported resource use.
  struct Live {
    TimePoint heard{};
    double cpu_s = -1;
    std::int64_t rss_bytes = -1;
  };
  DurationHistogram durations_;
  std::unordered_map<WorkerId, Live> live_;
  // The last failures and output lines; their own lock, never held with another.
  static constexpr std::size_t kNotesKept = 50;
  mutable std::mutex notes_mu_;
  std::deque<PoolNote> failure_notes_, line_notes_;
  void note_failure(const FailureInfo& f);
  struct Counters {
    std::atomic<std::uint64_t> succeeded{0}, failed{0}, cancelled{0};
  } counters_;
  bool started_ = false, stopped_ = false;
  // Segments of objects put into this pool (weak: their refs own them); its own lock.
  std::mutex put_mu_;
  std::vector<std::weak_ptr<ipc::SharedObject>> put_objects_;
  bool put_closed_ = false;
  std::atomic<std::uint64_t> objects_put_{0}, object_bytes_put_{0}, arg_objects_{0};
  std::atomic<std::uint64_t> objects_served_{0}, object_bytes_served_{0};
  std::atomic<std::uint64_t> results_kept_{0};

  std::unique_ptr<Supervisor> supervisor_;
  std::unique_ptr<Membership> membership_;
  std::shared_ptr<CallbackRunner> callbacks_;
};

}  // namespace ferry::detail
