// The pool's machinery behind ferry::Pool (internal).
//
//   PoolCore      dispatcher: pending queue, per-worker in-flight FIFOs, completion, retries
//   supervisor    (supervisor.cpp) one thread: spawns workers, watches their pidfds and output
//                 pipes, reaps them, enforces task timeouts, handles deaths
//   WorkerLink    (worker_link.cpp) one worker: process, channel, reader thread
//
// Locking: mu_ guards scheduling state (pending_, every link's inflight/state, stats). A link's
// send_mu serialises its sends; it is taken while mu_ is held and mu_ is then released, so
// frames reach a worker in the order they were queued to it, and the holder of a send_mu never
// waits for mu_. A task's own mutex (TaskState::m) is taken last, never while waiting for mu_.
//
// Flow control: a link gets a task only while its queued bytes fit in half its transport's
// buffer (or when it is idle), so a send never waits on a worker that is itself waiting for us
// to read its results.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <thread>
#include <vector>

#include "ferry/coordinator/pool.hpp"
#include "ferry/coordinator/process.hpp"
#include "ferry/ipc/channel.hpp"
#include "ferry/ipc/zmq_router.hpp"
#include "ferry/shared/messages.hpp"

namespace ferry::detail {

using ipc::Deadline;

struct WorkerLink {
  enum class State { starting, ready, draining, dead };

  std::uint32_t id = 0;
  std::unique_ptr<coordinator::Process> proc;  // local workers
  ipc::ChannelPtr ch;                          // local workers: their own channel
  bool remote = false;                         // remote: reached through the router
  ipc::PeerId peer;
  std::uint32_t slots = 1;  // tasks it runs at once; the first `slots` queued are running
  std::string host, name;
  std::chrono::steady_clock::time_point last_heard{}, last_ping{};
  std::size_t credit_bytes = 0;  // transport buffer: queued bytes are kept below half of it
  std::thread reader;
  std::mutex send_mu;
  std::atomic<bool> stop{false};  // the reader exits after draining
  int out_fd = -1, err_fd = -1;   // read ends of the worker's stdout/stderr
  std::string socket_path;        // zmq ipc socket file, unlinked once the worker is connected
  std::string out_buf, err_buf;   // partial lines

  // Guarded by PoolCore::mu_.
  State state = State::starting;
  std::deque<std::shared_ptr<TaskState>> inflight;
  std::size_t inflight_bytes = 0;
  std::uint64_t sent = 0;       // tasks sent (for max_tasks_per_worker)
  std::uint64_t completed = 0;  // results received
  bool shutdown_sent = false;
  bool expected_exit = false;  // recycled or pool shutdown
  std::string kill_reason;     // why we killed it, if we did
  std::int32_t pid = 0;
  std::size_t stats_index = SIZE_MAX;  // its entry in PoolCore::stats_.workers
  std::chrono::steady_clock::time_point spawned_at{};
};

// A frame to send once mu_ is released. The first job for a link holds that link's send_mu,
// taken while mu_ was still held, so frames reach each worker in the order they were queued.
struct SendJob {
  WorkerLink* link;
  Frame frame;
  std::unique_lock<std::mutex> order;
};

// Queues f for l (mu_ held): takes l's send_mu unless an earlier job in jobs holds it.
void queue_send_locked(std::vector<SendJob>& jobs, WorkerLink* l, Frame f);

class PoolCore : public std::enable_shared_from_this<PoolCore> {
 public:
  explicit PoolCore(PoolOptions opt);
  ~PoolCore();

  void start();  // starts the supervisor, which spawns the workers
  std::shared_ptr<TaskState> enqueue(std::shared_ptr<TaskState> t, bool block);
  bool cancel(const std::shared_ptr<TaskState>& t);
  bool wait_ready(std::chrono::milliseconds timeout);
  void shutdown(ShutdownMode mode);
  PoolStats stats() const;
  const PoolOptions& options() const noexcept { return opt_; }
  std::size_t window() const noexcept { return window_; }

  // Called by a link's reader thread.
  void on_hello(WorkerLink& link, const msg::Hello& hello);
  void on_frame(WorkerLink& link, Frame& f);
  void on_frames(WorkerLink& link, std::span<Frame> frames);  // results, in arrival order
  void reader_loop(WorkerLink& link);
  bool wait_workers(unsigned n, std::chrono::milliseconds timeout);
  unsigned capacity() const;
  std::string listen_endpoint() const;

 private:
  friend class Supervisor;
  // Scheduling (mu_ held).
  void pump_locked(std::vector<SendJob>& jobs);
  bool has_room_locked(const WorkerLink& l, std::size_t bytes) const;
  std::size_t depth_locked() const;
  Frame task_frame(const TaskState& t) const;
  void flush(std::vector<SendJob>& jobs);  // sends; called after unlocking mu_
  Status send_to(WorkerLink& l, const Frame& f, Deadline d);
  std::optional<msg::Welcome> admit(WorkerLink& link, const msg::Hello& hello);  // or refuses
  void mark_running_locked(WorkerLink& l, std::size_t erased_at);
  void finish_locked(TaskState& t);  // window accounting of a task that completed
  void complete_from(const WorkerLink& link, TaskState& t, Frame& f);  // no lock held
  FailureInfo failure_for(const TaskState& t, FailureKind k, std::string message) const;

  // Supervision (supervisor thread).
  void supervise();
  void spawn_worker();
  void handle_exit(WorkerLink& link);
  // Takes a dead or lost worker out: re-queues or fails its tasks, replaces it if local.
  void retire(WorkerLink& link, std::optional<coordinator::ExitInfo> info, std::string why);
  void event(const std::string& line);
  // Remote workers (router thread).
  void open_listener();
  void router_loop();
  void on_remote_frame(const ipc::PeerId& from, Frame& f);
  void remote_housekeeping();
  void read_output(WorkerLink& link, int& fd, std::string& buf, int stream, bool eof);
  void emit_line(const WorkerLink& link, int stream, std::string_view line);
  void wake_supervisor();
  void enforce_timeouts();
  void terminate_all();

  PoolOptions opt_;
  std::size_t window_ = 0;
  std::uint32_t serial_ = 0;  // tells this pool's channel names from other pools' in the process
  unsigned prefetch_ = 0;
  // Mean task service time (EWMA, µs; < 0 until measured). Sets how many tasks queue at one
  // worker: enough to hide a round trip for tiny tasks, one for long ones, so that an idle
  // worker is never waiting while another has a backlog of long tasks.
  double avg_service_us_ = -1;
  std::uint32_t init_function_ = msg::Welcome::kNoFunction;
  std::uint64_t registry_hash_ = 0;
  std::shared_ptr<coordinator::Launcher> launcher_;
  std::string worker_exe_;

  mutable std::mutex mu_;
  std::condition_variable space_cv_;  // submitters waiting for the window
  std::condition_variable state_cv_;  // readiness and drain waiters
  std::deque<std::shared_ptr<TaskState>> pending_;
  std::vector<std::unique_ptr<WorkerLink>> links_;  // alive ones; dead ones moved to graveyard_
  std::size_t in_system_ = 0;                       // submitted, not yet completed
  std::uint64_t next_task_id_ = 1;
  std::uint32_t next_worker_id_ = 1;
  unsigned want_spawn_ = 0;        // replacements the supervisor should start
  unsigned startup_failures_ = 0;  // consecutive workers that died before their first result
  bool closing_ = false;           // no new submissions
  bool stopping_ = false;          // supervisor must stop the workers and exit
  bool broken_ = false;            // workers cannot be started: tasks fail with Rejected
  std::string broken_reason_;
  PoolStats stats_;
  struct Counters {
    std::atomic<std::uint64_t> succeeded{0}, failed{0}, cancelled{0};
  } counters_;
  bool cancel_on_stop_ = false;

  int wake_fd_ = -1;  // eventfd: wakes the supervisor's poll
  std::thread supervisor_;
  unsigned local_workers_ = 0;

  std::unique_ptr<ipc::ZmqRouter> router_;
  std::mutex router_send_mu_;  // the router has one sending thread at a time
  std::thread router_thread_;
  std::atomic<bool> router_stop_{false};
  std::map<ipc::PeerId, WorkerLink*> peers_;  // guarded by mu_
  std::set<ipc::PeerId> banned_;              // sent garbage: ignored from then on
};

}  // namespace ferry::detail
