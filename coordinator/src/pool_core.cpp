// The dispatcher: scheduler events from callers and I/O threads, its actions carried out.
#include "pool_core.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <thread>

#include "ferry/coordinator/errors.hpp"

#include "ferry/shared/codec.hpp"
#include "ferry/shared/log.hpp"
#include "ferry/shared/session.hpp"
#include "ferry/worker/runtime.hpp"
#include "membership.hpp"
#include "supervisor.hpp"

namespace ferry {
namespace detail {

// --- futures' shared state ------------------------------------------------------------------

// --- the core -------------------------------------------------------------------------------

namespace {

SchedulerConfig scheduler_config(const PoolOptions& o, unsigned local) {
  SchedulerConfig c;
  c.local_workers = local;
  c.window = o.max_in_flight ? o.max_in_flight : std::size_t{1024} * std::max(1u, local);
  c.max_retries = o.max_retries;
  c.prefetch = o.prefetch ? o.prefetch : 64;
  c.task_timeout = o.task_timeout;
  c.startup_timeout = o.startup_timeout;
  c.max_tasks_per_worker = o.max_tasks_per_worker;
  c.max_task_bytes = kDefaultMaxFrame - 64;  // room for the task header (9 bytes today)
  // A broken worker program fails every start; workers killed from outside while starting
  // (a busy machine, an operator) fail a few. Two per worker tells them apart without a long
  // wait for the broken program.
  c.startup_failure_limit = std::max(3u, 2 * local);
  c.fail_sent_on_death = o.fail_sent_on_death;
  return c;
}

unsigned local_count(const PoolOptions& o) {
  return o.workers.value_or(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace

PoolCore::PoolCore(PoolOptions opt)
    : opt_(std::move(opt)),
      sched_cfg_(scheduler_config(opt_, local_count(opt_))),
      launcher_(opt_.launcher ? opt_.launcher : std::make_shared<coordinator::PosixLauncher>()),
      sched_(sched_cfg_) {
  if (sched_cfg_.local_workers == 0 && opt_.listen.empty()) {
    throw Exception(
        Error{Errc::invalid_argument, "a pool needs local workers or a listen address"});
  }
  worker::register_builtin_tasks();
  auto& reg = TaskRegistry::instance();
  for (const auto& lib : opt_.task_libraries) {
    if (auto st = reg.load_library(lib); !st) throw Exception(st.error());
  }
  reg.freeze();
  admission_.tasks.reserve(reg.entries().size());
  for (const auto& e : reg.entries())
    admission_.tasks.push_back({e.name, e.signature, e.signature_hash});
  admission_.heartbeat_interval = opt_.heartbeat_interval;
  if (sched_cfg_.local_workers > 0) {
    // Each pool of this process has its own prefix, so worker ids of two pools never clash.
    static std::atomic<unsigned> pools{0};
    admission_.object_threshold = opt_.object_threshold;
    admission_.object_prefix_base = shm_name("res" + std::to_string(++pools) + "-w");
  }
  admission_.heartbeat_timeout = opt_.heartbeat_timeout;
  if (opt_.initializer) {
    auto idx = opt_.initializer->fn ? reg.index_of(opt_.initializer->fn)
                                    : reg.index_of(opt_.initializer->name);
    if (!idx) throw Exception(Error{idx.error().code, "initializer: " + idx.error().detail});
    admission_.init_function = *idx;
    admission_.init_args = opt_.initializer->args;
  }
  supervisor_ = std::make_unique<Supervisor>(*this, opt_, launcher_);
  if (!opt_.listen.empty()) membership_ = std::make_unique<Membership>(*this, opt_);
}

PoolCore::~PoolCore() {
  shutdown(ShutdownMode::cancel);
}

void PoolCore::start() {
  callbacks_ = std::make_shared<CallbackRunner>([weak = weak_from_this()](const std::string& what) {
    if (auto core = weak.lock())
      core->event(EventLevel::warn, "a then/on_done callback threw: " + what);
  });
  Work w;
  {
    std::lock_guard lk(mu_);
    started_ = true;
    sched_.start();
    collect_locked(w);
  }
  supervisor_->start();
  if (membership_) membership_->start();
  carry_out(w);
}

void PoolCore::event(EventLevel level, const std::string& line) const {
  if (level < opt_.event_level) return;
  if (opt_.on_event) {
    opt_.on_event(line);
    return;
  }
  log::write(level == EventLevel::error  ? log::Level::error
             : level == EventLevel::warn ? log::Level::warn
                                         : log::Level::info,
             "ferry", line);
}

unsigned PoolCore::capacity() const {
  std::lock_guard lk(mu_);
  return std::max({1u, sched_.ready_slots(), sched_cfg_.local_workers});
}

std::string PoolCore::listen_endpoint() const {
  return membership_ ? membership_->endpoint() : "";
}

bool PoolCore::wait_workers(unsigned n, std::chrono::milliseconds timeout) {
  std::unique_lock lk(mu_);
  return state_cv_.wait_for(lk, timeout, [&] {
    return sched_.ready_workers() >= n || sched_.closed();
  }) && !sched_.closed();
}

bool PoolCore::wait_ready(std::chrono::milliseconds timeout) {
  std::unique_lock lk(mu_);
  return state_cv_.wait_for(lk, timeout, [&] {
    return sched_.broken() || sched_.ready_workers(true) >= sched_.local_target();
  }) && !sched_.broken();
}

WorkerId PoolCore::next_worker_id() {
  std::lock_guard lk(mu_);
  return next_worker_id_++;
}

std::shared_ptr<TaskState> PoolCore::enqueue(std::shared_ptr<TaskState> t, bool block) {
  // Large arguments are written once into a shared-memory object, before the lock (a copy of
  // megabytes), and the frames carry its name. Not for a pool of remote workers only: they
  // could never map it.
  std::shared_ptr<ipc::SharedObject> object;
  std::optional<Error> object_error;
  if (admission_.object_threshold > 0 && t->args.size() > admission_.object_threshold) {
    auto o = ipc::SharedObject::create(ipc::new_object_name("arg"), t->args);
    arg_objects_.fetch_add(1);
    if (o) {
      object = std::make_shared<ipc::SharedObject>(std::move(*o));
      Bytes().swap(t->args);  // the object holds them now
    } else {
      object_error = std::move(o).error();
    }
  }
  Work w;
  {
    std::unique_lock lk(mu_);
    if (!block && !sched_.has_room()) return nullptr;
    space_cv_.wait(lk, [&] { return sched_.has_room(); });
    if (t->id == 0) t->id = next_task_id_++;  // submit_after numbered it already
    if (!object_error) {
      tasks_.emplace(t->id, t);
      if (object) objects_.emplace(t->id, object);
      // The scheduler counts what the frame carries: a handle for an object.
      sched_.submit(t->id, object ? 64 + object->name().size() : t->args.size(), SchedClock::now(),
                    t->function, TaskLimits{t->max_retries, t->timeout, t->pin});
      collect_locked(w);
    }
  }
  if (object_error) {
    w.failures.emplace_back(t, simple_failure(*t, FailureKind::rejected,
                                              "its arguments cannot be passed to a worker: " +
                                                  object_error->message()));
  }
  carry_out(w);
  return t;
}

bool PoolCore::cancel(const std::shared_ptr<TaskState>& t) {
  Work w;
  {
    std::unique_lock lk(mu_);
    if (!sched_.cancel(t->id, SchedClock::now())) {
      if (waiting_.erase(t->id) == 0) return false;
      // Still waiting for its dependencies: it never reaches the scheduler (launch_after
      // finds it done), and what depends on it is cancelled in turn.
      lk.unlock();
      state_cv_.notify_all();
      return t->complete({}, simple_failure(*t, FailureKind::cancelled, "cancelled by the caller"),
                         &counters_.cancelled);
    }
    collect_locked(w);
  }
  carry_out(w);
  return true;
}

void PoolCore::submit_after(const std::shared_ptr<TaskState>& t, std::vector<FutureBase> deps,
                            std::function<Bytes()> build) {
  {
    std::lock_guard lk(mu_);
    t->id = next_task_id_++;
    waiting_.emplace(t->id, t);
  }
  struct Pending {
    std::atomic<std::size_t> left;
    std::vector<FutureBase> deps;
    std::function<Bytes()> build;
  };
  auto p = std::make_shared<Pending>();
  p->left = deps.size();
  p->deps = std::move(deps);
  p->build = std::move(build);
  std::weak_ptr<PoolCore> weak = weak_from_this();
  for (const auto& d : p->deps) {
    d.state()->listen([weak, t, p](const std::shared_ptr<TaskState>&) {
      if (p->left.fetch_sub(1) != 1) return;
      auto core = weak.lock();
      if (!core) return;  // gone: its shutdown cancelled what waited (see shutdown)
      // Moved out: launch_after lets go of the dependencies (their kept values) before the
      // task runs.
      core->post([core, t, p] { core->launch_after(t, std::move(p->deps), std::move(p->build)); });
    });
  }
}

void PoolCore::launch_after(const std::shared_ptr<TaskState>& t, std::vector<FutureBase> deps,
                            std::function<Bytes()> build) {
  if (!t->done.load(std::memory_order_acquire)) {
    std::optional<FailureInfo> why;
    for (const auto& d : deps) {
      auto f = d.failure();
      if (!f) continue;
      const bool cancelled = f->kind == FailureKind::cancelled;
      why = simple_failure(*t, cancelled ? FailureKind::cancelled : FailureKind::dependency_failed,
                           "its dependency " + describe(*f));
      break;
    }
    if (!why) {
      try {
        t->args = build();
      } catch (const TaskFailure& e) {  // a dependency's value that cannot be decoded
        why = simple_failure(*t, FailureKind::dependency_failed,
                             "its dependency " + describe(e.info()));
      } catch (const std::exception& e) {
        why = simple_failure(*t, FailureKind::dependency_failed,
                             std::string("encoding its arguments failed: ") + e.what());
      }
    }
    if (why) {
      const bool cancelled = why->kind == FailureKind::cancelled;
      t->complete({}, std::move(*why), cancelled ? &counters_.cancelled : &counters_.failed);
    } else {
      // The arguments hold what they need (a kept value as a ref, in t->keep): the futures
      // go now, so a value no one else holds is freed with the task's outcome.
      deps.clear();
      build = nullptr;
      enqueue(t, true);
    }
  }
  done_waiting(t->id);
}

void PoolCore::done_waiting(TaskId id) {
  {
    std::lock_guard lk(mu_);
    waiting_.erase(id);
  }
  state_cv_.notify_all();
}

void PoolCore::shutdown(ShutdownMode mode) {
  Work w;
  {
    std::unique_lock lk(mu_);
    if (!started_ || stopped_) return;
    // Drain: tasks waiting for their dependencies run first (they are submitted, so the
    // scheduler must still be open); cancel: they are cancelled as their dependencies are.
    if (mode == ShutdownMode::drain) {
      state_cv_.wait(lk, [&] { return waiting_.empty() || sched_.broken(); });
    }
    stopped_ = true;
    sched_.close();
    collect_locked(w);
    if (mode == ShutdownMode::drain) {
      lk.unlock();
      carry_out(w);
      lk.lock();
      state_cv_.wait(lk, [&] { return sched_.in_system() == 0 || sched_.broken(); });
    }
    sched_.stop(SchedClock::now());
    collect_locked(w);
  }
  carry_out(w);
  const bool graceful = mode == ShutdownMode::drain;
  if (membership_) membership_->stop(graceful);
  supervisor_->stop(graceful);
  // Whatever is left can no longer run (workers that never registered held nothing).
  {
    std::lock_guard lk(mu_);
    sched_.stop(SchedClock::now());
    collect_locked(w);
  }
  carry_out(w);
  // Continuations of the last results run before shutdown returns; later ones run inline.
  if (callbacks_) callbacks_->stop();
  // Tasks still waiting for dependencies (of another pool, or not launched because this
  // pool is being destroyed) can no longer run.
  std::unordered_map<TaskId, std::shared_ptr<TaskState>> left;
  {
    std::lock_guard lk(mu_);
    left.swap(waiting_);
  }
  for (auto& [id, t] : left) {
    t->complete({},
                simple_failure(*t, FailureKind::cancelled,
                               "the pool shut down before its dependencies finished"),
                &counters_.cancelled);
  }
  // Objects outlive the pool only in the coordinator, which has them mapped: their names go
  // now, so nothing of the pool is left in /dev/shm.
  std::vector<std::weak_ptr<ipc::SharedObject>> objects;
  {
    std::lock_guard lk(put_mu_);
    put_closed_ = true;
    objects.swap(put_objects_);
  }
  for (auto& weak : objects)
    if (auto o = weak.lock()) o->unlink();
}

bool PoolCore::track_object(const std::shared_ptr<ipc::SharedObject>& o, bool put) {
  std::lock_guard lk(put_mu_);
  if (put_closed_) return false;
  std::erase_if(put_objects_, [](const auto& w) { return w.expired(); });
  put_objects_.push_back(o);
  if (put) {
    objects_put_.fetch_add(1);
    object_bytes_put_.fetch_add(o->size());
  }
  return true;
}

PoolStats PoolCore::stats() const {
  std::lock_guard lk(mu_);
  PoolStats s = stats_;
  const auto& c = sched_.counters();
  s.submitted = c.submitted;
  s.retries = c.retries;
  s.worker_deaths = c.worker_deaths;
  s.workers_recycled = c.workers_recycled;
  s.succeeded = counters_.succeeded;
  s.failed = counters_.failed;
  s.cancelled = counters_.cancelled;
  s.objects_put = objects_put_.load();
  s.object_bytes_put = object_bytes_put_.load();
  s.arg_objects = arg_objects_.load();
  s.objects_served = objects_served_.load(std::memory_order_relaxed);
  s.object_bytes_served = object_bytes_served_.load(std::memory_order_relaxed);
  s.results_kept = results_kept_.load();
  s.in_flight = sched_.in_system() - sched_.pending();
  s.queued = sched_.pending();
  s.durations = durations_;
  const auto now = SchedClock::now();
  for (auto& ws : s.workers) {
    ws.alive = endpoints_.count(ws.id) != 0;
    ws.state = !ws.alive                ? WorkerState::gone
               : sched_.is_ready(ws.id) ? WorkerState::ready
                                        : WorkerState::starting;
    if (auto l = live_.find(ws.id); l != live_.end()) {
      ws.cpu_s = l->second.cpu_s;
      ws.rss_bytes = l->second.rss_bytes;
      if (l->second.heard != TimePoint{})
        ws.heard_s_ago = std::chrono::duration<double>(now - l->second.heard).count();
    }
  }
  return s;
}

namespace {
double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}
}  // namespace

void PoolCore::note_heartbeat(WorkerId w, const msg::Heartbeat& hb) {
  std::lock_guard lk(mu_);
  auto& l = live_[w];
  l.heard = SchedClock::now();
  l.cpu_s = static_cast<double>(hb.cpu_ms) / 1000.0;
  l.rss_bytes = static_cast<std::int64_t>(hb.rss_bytes);
}

void PoolCore::note_line(WorkerId w, std::string_view line) {
  std::lock_guard lk(notes_mu_);
  if (line_notes_.size() == kNotesKept) line_notes_.pop_front();
  line_notes_.push_back(PoolNote{unix_now(), w, std::string(line.substr(0, 4096)), {}});
}

void PoolCore::note_failure(const FailureInfo& f) {
  if (f.kind == FailureKind::cancelled) return;  // asked for: not news
  std::lock_guard lk(notes_mu_);
  if (failure_notes_.size() == kNotesKept) failure_notes_.pop_front();
  failure_notes_.push_back(PoolNote{unix_now(), 0, describe(f), f.stack});
}

RecentNotes PoolCore::recent() const {
  std::lock_guard lk(notes_mu_);
  return RecentNotes{{failure_notes_.begin(), failure_notes_.end()},
                     {line_notes_.begin(), line_notes_.end()}};
}

// --- I/O events -----------------------------------------------------------------------------

void PoolCore::note_worker(const WorkerIdentity& who) {
  std::lock_guard lk(mu_);
  if (!who.remote) ++stats_.workers_spawned;
  stats_index_[who.id] = stats_.workers.size();
  WorkerStats ws;
  ws.id = who.id;
  ws.pid = who.pid;
  ws.alive = true;
  ws.remote = who.remote;
  ws.host = who.host;
  ws.name = who.name;
  stats_.workers.push_back(std::move(ws));
}

void PoolCore::worker_started(const EndpointPtr& ep) {
  note_worker(ep->who());
  Work w;
  {
    std::lock_guard lk(mu_);
    endpoints_[ep->id()] = ep;
    sched_.worker_started(ep->id(), SchedClock::now());
    collect_locked(w);
  }
  carry_out(w);
  supervisor_->wake();  // a start-up deadline to watch
}

void PoolCore::spawn_failed(const std::string& why) {
  Work w;
  {
    std::lock_guard lk(mu_);
    sched_.spawn_failed(why, SchedClock::now());
    collect_locked(w);
  }
  carry_out(w);
}

void PoolCore::worker_joined(const EndpointPtr& ep, const Admission& a) {
  if (ep->who().remote) note_worker(ep->who());
  for (const auto& [task, line] : a.mismatches)
    event(EventLevel::warn,
          "worker w" + std::to_string(ep->id()) + ": " + line + "; it will not be given that task");
  Work w;
  {
    std::lock_guard lk(mu_);
    endpoints_[ep->id()] = ep;
    for (const auto& [task, line] : a.mismatches)
      mismatches_[task] = "worker w" + std::to_string(ep->id()) + ": " + line;
    sched_.worker_ready(ep->id(), !ep->who().remote, ep->who().slots, ep->credit_bytes(),
                        SchedClock::now(), a.serves);
    collect_locked(w);
  }
  carry_out(w);
}

void PoolCore::worker_refused(WorkerId id, const std::string& reason) {
  Work w;
  {
    std::lock_guard lk(mu_);
    sched_.set_broken_reason(reason);
    sched_.kill_worker(id, EndCause::rejected);
    collect_locked(w);
  }
  carry_out(w);
}

void PoolCore::bad_stream(WorkerId id, const std::string& why) {
  event(EventLevel::warn,
        "worker w" + std::to_string(id) + " sent a malformed frame (" + why + "): stopping it");
  Work w;
  {
    std::lock_guard lk(mu_);
    sched_.kill_worker(id, EndCause::bad_frame);
    collect_locked(w);
  }
  carry_out(w);
}

void PoolCore::channel_lost(WorkerId id) {
  // Stopped without a cause of ours: its end is reported as whatever the process died of.
  EndpointPtr ep;
  {
    std::lock_guard lk(mu_);
    if (sched_.told_to_exit(id)) return;
    if (auto it = endpoints_.find(id); it != endpoints_.end()) ep = it->second;
  }
  if (ep) ep->kill(EndCause::lost);
}

void PoolCore::worker_gone(WorkerId id, const EndInfo& end) {
  Work w;
  EndpointPtr ep;
  std::function<void(WorkerId, const std::string&)> on_gone;  // a remote actor's worker
  std::string gone_why;
  {
    std::lock_guard lk(mu_);
    auto it = endpoints_.find(id);
    if (it != endpoints_.end()) {
      ep = std::move(it->second);
      endpoints_.erase(it);
    }
    const auto recorded = sched_.kill_cause(id);
    const auto inflight = sched_.inflight_of(id).size();
    const bool was_ready = sched_.is_ready(id);
    EndInfo eff = end;
    eff.cause = sched_.worker_gone(id, end.cause, SchedClock::now());
    // A worker killed while writing a result object leaves it; only it could make that name.
    if (admission_.object_threshold > 0) w.sweep_objects.push_back(id);
    collect_locked(w, eff, ep ? &ep->who() : nullptr);
    if (auto r = reserved_.find(id); r != reserved_.end()) {
      on_gone = std::move(r->second);
      reserved_.erase(r);
      gone_why = std::string(to_string(eff.cause));
      if (end.exit) gone_why += ": " + end.exit->describe();
      if (!end.detail.empty()) gone_why += ": " + end.detail;
    }
    const bool quiet = eff.cause == EndCause::shutdown || eff.cause == EndCause::recycled ||
                       eff.cause == EndCause::rejected || sched_.closed();
    if (ep && !quiet && (was_ready || ep->who().remote)) {
      const auto& who = ep->who();
      std::string line = "worker w" + std::to_string(id) + " (pid " + std::to_string(who.pid) +
                         (who.host.empty() ? "" : " on " + who.host) + ") ";
      line += end.exit ? "died: " + end.exit->describe() : "lost: " + end.detail;
      if (recorded) line += " (" + std::string(to_string(*recorded)) + ")";
      line += "; " + std::to_string(inflight) + " task(s) were on it";
      w.notices.emplace_back(EventLevel::warn, std::move(line));
    }
  }
  carry_out(w);
  // After its calls were failed: the actor then counts the death and places itself again.
  if (on_gone) on_gone(id, gone_why);
}

std::optional<PoolCore::Reservation> PoolCore::reserve_remote(
    std::uint32_t function, std::chrono::milliseconds timeout, const std::atomic<bool>& abandon,
    std::function<void(WorkerId, const std::string&)> on_gone) {
  std::unique_lock lk(mu_);
  std::optional<WorkerId> id;
  state_cv_.wait_for(lk, timeout, [&] {
    if (stopped_ || sched_.closed() || abandon.load()) return true;
    id = sched_.free_remote(function);
    return id.has_value();
  });
  if (!id || stopped_ || sched_.closed() || abandon.load()) return std::nullopt;
  auto ep = endpoints_.find(*id);
  if (ep == endpoints_.end() || !sched_.reserve(*id)) return std::nullopt;
  reserved_[*id] = std::move(on_gone);
  const auto& who = ep->second->who();
  return Reservation{*id, who.pid, who.host};
}

void PoolCore::release_reserved(WorkerId id) {
  Work w;
  {
    std::lock_guard lk(mu_);
    reserved_.erase(id);
    sched_.release(id, SchedClock::now());
    collect_locked(w);
  }
  carry_out(w);
  state_cv_.notify_all();  // another actor may be waiting for a free remote worker
}

void PoolCore::wake_waiters() {
  { std::lock_guard lk(mu_); }
  state_cv_.notify_all();
}

std::pair<unsigned, unsigned> PoolCore::remote_workers() const {
  std::lock_guard lk(mu_);
  unsigned joined = 0;
  for (const auto& [id, ep] : endpoints_) {
    if (ep->who().remote && sched_.is_ready(id)) ++joined;
  }
  return {joined, static_cast<unsigned>(reserved_.size())};
}

void PoolCore::on_frames(WorkerId id, std::span<Frame> frames, bool remote) {
  while (frames.size() > kMaxFrames) {
    on_frames(id, frames.first(kMaxFrames), remote);
    frames = frames.subspan(kMaxFrames);
  }
  // Each result is decoded once, here, before the lock: the lock then covers only the
  // bookkeeping, and complete_result() takes the value from where this found it.
  std::array<Arrival, kMaxFrames> arrived;
  for (std::size_t i = 0; i < frames.size(); ++i) {
    Adopted adopted;
    if (frames[i].header.kind == MessageKind::result &&
        (frames[i].header.flags & kFrameObject) != 0) {
      adopted = adopt_result_object(id, frames[i], remote);
    }
    arrived[i] = decode_arrival(frames[i]);
    arrived[i].adopted = std::move(adopted);
  }
  if (remote) check_remote_values(frames, arrived);

  // Every result that had arrived is taken under one lock and one pump, so their follow-up
  // tasks go to the worker as one batch (one wake-up) rather than one send each.
  Work w;
  w.results.reserve(frames.size());
  {
    std::lock_guard lk(mu_);
    const auto now = SchedClock::now();
    for (std::size_t i = 0; i < frames.size(); ++i) {
      Arrival& a = arrived[i];
      if (a.what == Arrival::other) continue;
      const TaskId tid = frames[i].header.request_id;
      if (a.what == Arrival::bad) {
        sched_.bad_result(id, tid, now);  // re-run once elsewhere
        continue;
      }
      if (!sched_.result(id, tid, now)) continue;  // late duplicate or cancelled: dropped
      auto it = tasks_.find(tid);
      if (it == tasks_.end()) continue;
      durations_.add(std::chrono::duration<double>(now - it->second->dispatched).count());
      w.results.push_back({std::move(it->second), &frames[i], a.value_at,
                           std::move(a.adopted.object), a.adopted.by_handle});
      tasks_.erase(it);
      release_object_locked(w, tid);
      if (auto st = stats_index_.find(id); st != stats_index_.end()) {
        ++stats_.workers[st->second].tasks;
        if (a.what == Arrival::error) ++stats_.workers[st->second].failures;
      }
    }
    if (!frames.empty()) live_[id].heard = now;
    collect_locked(w);
  }
  carry_out(w);
}

PoolCore::Arrival PoolCore::decode_arrival(const Frame& f) {
  const FrameView view{f.header, f.payload};
  switch (f.header.kind) {
    case MessageKind::result: {
      auto r = msg::decode_result(view);
      if (!r) return {Arrival::bad};
      return {Arrival::value, static_cast<std::size_t>(r->value.data() - f.payload.data())};
    }
    case MessageKind::error:
      // Decoded again by complete_result(): a task that threw is not the path to keep short.
      return {msg::validate_payload(view) ? Arrival::error : Arrival::bad};
    default:
      return {Arrival::other};
  }
}

void PoolCore::check_remote_values(std::span<Frame> frames, std::span<Arrival> arrived) const {
  // A remote worker's value is checked against the task's result type too (local workers run
  // this program's own code): garbage is re-run elsewhere rather than handed to the caller.
  // The check decodes the whole value (a chunk's may be megabytes), so it runs without the
  // pool's lock; the lock only finds each task's function (fixed once submitted).
  struct Of {
    bool known = false;  // the task is still the pool's (else its result is dropped anyway)
    const TaskEntry* entry = nullptr;
    bool batch = false;
  };
  std::array<Of, kMaxFrames> of{};
  {
    std::lock_guard lk(mu_);
    for (std::size_t i = 0; i < frames.size(); ++i) {
      if (arrived[i].what != Arrival::value) continue;
      if (auto t = tasks_.find(frames[i].header.request_id); t != tasks_.end()) {
        of[i] = {true, TaskRegistry::instance().at(t->second->function), t->second->batch};
      }
    }
  }
  for (std::size_t i = 0; i < frames.size(); ++i) {
    if (arrived[i].what != Arrival::value || !of[i].known) continue;
    const ByteView value = ByteView(frames[i].payload).subspan(arrived[i].value_at);
    if (!of[i].entry || !of[i].entry->check_result(value, of[i].batch)) {
      arrived[i].what = Arrival::bad;
    }
  }
}

void PoolCore::tick() {
  Work w;
  {
    std::lock_guard lk(mu_);
    sched_.tick(SchedClock::now());
    collect_locked(w);
  }
  carry_out(w);
}

std::optional<TimePoint> PoolCore::next_deadline() const {
  std::lock_guard lk(mu_);
  return sched_.next_deadline();
}

// --- carrying out actions -------------------------------------------------------------------

Frame PoolCore::task_frame(const WorkerEndpoint::Outgoing& o, bool remote) {
  const TaskState& t = *o.task;
  const msg::TaskHeader h{o.attempt, t.function, t.batch, t.ref_args};
  if (o.object) {
    if (!remote)
      return msg::make_task_frame(h, msg::ObjectHandle{o.object->name(), o.object->size()}, t.id);
    return msg::make_task_frame(h, o.object->bytes(), t.id);
  }
  return msg::make_task_frame(h, t.args, t.id);
}

void PoolCore::queue_locked(Work& w, const EndpointPtr& to, WorkerEndpoint::Outgoing o) {
  auto& box = to->outbox;
  std::lock_guard lk(box.mu);
  box.queued.push_back(std::move(o));
  if (!box.sending) {
    box.sending = true;
    w.flushes.push_back(to);
  }
}

void PoolCore::flush(WorkerEndpoint& ep) {
  auto& box = ep.outbox;
  const bool remote = ep.who().remote;
  std::vector<std::pair<TaskId, std::string>> failed;
  for (;;) {
    {
      std::lock_guard lk(box.mu);
      if (box.queued.empty()) {
        box.sending = false;
        break;
      }
      std::swap(box.queued, box.taken);
    }
    for (auto& o : box.taken) {
      if (!o.task) {
        box.frames.push_back(std::move(o.frame));
        continue;
      }
      try {
        box.frames.push_back(task_frame(o, remote));
      } catch (const std::exception& e) {
        // Copying a large argument into its frame may fail (bad_alloc): that task alone
        // fails; the rest still go, and the outbox is not left marked as sending.
        failed.emplace_back(o.task->id, e.what());
      }
    }
    {
      // A failed send means the worker is gone: its end is reported by whoever watches it.
      std::lock_guard lk(ep.send_mu);
      (void)ep.send(box.frames, ipc::Deadline::never());
    }
    box.frames.clear();
    box.taken.clear();  // drops the task references now, not at the next send
  }
  if (!failed.empty()) frames_failed(ep.id(), std::move(failed));
}

void PoolCore::frames_failed(WorkerId id, std::vector<std::pair<TaskId, std::string>> failed) {
  Work w;
  {
    std::lock_guard lk(mu_);
    const auto now = SchedClock::now();
    for (auto& [task, why] : failed) {
      unsendable_.emplace(task, std::move(why));
      sched_.not_sent(id, task, FailCause::unsendable, now);
    }
    collect_locked(w);  // makes their failures (failure_info reads unsendable_)
    for (const auto& f : failed)
      unsendable_.erase(f.first);
  }
  carry_out(w);
}

void PoolCore::notify_locked(const Actions& a) {
  // Blocked submitters are woken when room is freed; readiness and drain waiters when workers
  // or the number of tasks in the system changed.
  if (a.room_freed) space_cv_.notify_all();
  if (a.workers_changed || sched_.in_system() == 0 || a.room_freed) state_cv_.notify_all();
}

void PoolCore::collect_locked(Work& w, const std::optional<EndInfo>& end,
                              const WorkerIdentity* gone) {
  Actions a = std::move(spare_actions_);  // the vectors of the last collect, emptied
  sched_.take(a);
  const auto now = a.sends.empty() ? TimePoint{} : SchedClock::now();
  std::vector<Dispatch> too_large;
  for (const Dispatch& d : a.sends) {
    auto ep = endpoints_.find(d.worker);
    auto t = tasks_.find(d.task);
    if (ep == endpoints_.end() || t == tasks_.end()) continue;  // its end is being reported
    t->second->dispatched = now;
    WorkerEndpoint::Outgoing o{t->second, nullptr, d.attempt, {}};
    if (!objects_.empty()) {
      if (auto obj = objects_.find(d.task); obj != objects_.end()) {
        // A remote worker gets the object's bytes themselves, if a frame can carry them.
        if (ep->second->who().remote && obj->second->size() > sched_cfg_.max_task_bytes) {
          too_large.push_back(d);
          continue;
        }
        o.object = obj->second;
      }
    }
    queue_locked(w, ep->second, std::move(o));
  }
  for (WorkerId id : a.stops) {
    if (auto ep = endpoints_.find(id); ep != endpoints_.end()) {
      queue_locked(w, ep->second,
                   {nullptr, nullptr, 0, make_frame(MessageKind::shutdown, msg::Shutdown{true})});
    }
  }
  for (const Failure& f : a.failures) {
    auto t = tasks_.find(f.task);
    if (t == tasks_.end()) continue;
    const WorkerIdentity* who = gone && gone->id == f.worker ? gone : nullptr;
    if (!who) {
      if (auto ep = endpoints_.find(f.worker); ep != endpoints_.end()) who = &ep->second->who();
    }
    w.failures.emplace_back(t->second, failure_info(*t->second, f, who, end));
    tasks_.erase(t);
    if (f.worker != 0 && f.cause != FailCause::cancelled && f.cause != FailCause::shutdown) {
      if (auto st = stats_index_.find(f.worker); st != stats_index_.end())
        ++stats_.workers[st->second].failures;
    }
    release_object_locked(w, f.task);
  }
  for (const Kill& k : a.kills) {
    if (auto ep = endpoints_.find(k.worker); ep != endpoints_.end()) {
      w.kills.emplace_back(ep->second, k.cause);
    }
  }
  w.spawns += a.spawns;
  for (const Notice& n : a.notices) {
    if (n.kind == Notice::Kind::shrunk) {
      w.notices.emplace_back(EventLevel::warn,
                             "running with " + std::to_string(n.running) + " of " +
                                 std::to_string(n.wanted) +
                                 " local worker(s): cannot start more: " + sched_.broken_reason());
    } else {
      w.notices.emplace_back(EventLevel::error,
                             "no workers can be started: " + sched_.broken_reason() +
                                 "; queued tasks fail with Rejected");
    }
  }
  notify_locked(a);
  spare_actions_ = std::move(a);
  if (!too_large.empty()) {
    // Never sent: failed as Rejected (failure_info), then the scheduler's follow-up taken.
    const auto at = SchedClock::now();
    for (const Dispatch& d : too_large)
      sched_.not_sent(d.worker, d.task, FailCause::too_large, at);
    collect_locked(w, end, gone);
  }
}

void PoolCore::release_object_locked(Work& w, TaskId id) {
  if (objects_.empty()) return;
  if (auto o = objects_.find(id); o != objects_.end()) {
    w.released.push_back(std::move(o->second));
    objects_.erase(o);
  }
}

PoolCore::Adopted PoolCore::adopt_result_object(WorkerId id, Frame& f, bool remote) const {
  auto fail = [&](std::uint32_t attempt, Errc code, const std::string& why) {
    event(EventLevel::warn, "worker w" + std::to_string(id) + ": " + why);
    msg::TaskError e{attempt, "ferry::" + std::string(errc_name(code)), why, 0, {}, {}};
    f = make_frame(MessageKind::error, e, f.header.request_id);
    return Adopted{};
  };
  auto r = msg::decode_result(FrameView{f.header, f.payload});
  if (!r) return {};  // decode_arrival reports it as a bad result
  const std::uint32_t attempt = r->header.attempt;
  const msg::ObjectHandle h = std::move(*r->object);
  const std::string prefix = admission_.object_prefix(id);
  if (remote || admission_.object_threshold == 0) {
    return fail(attempt, Errc::bad_handle,
                "refused a result in shared-memory object '" + h.name +
                    "': only local workers may pass objects");
  }
  if (h.name.size() <= prefix.size() || h.name.compare(0, prefix.size(), prefix) != 0 ||
      h.name.find_first_not_of("0123456789", prefix.size()) != std::string::npos) {
    return fail(attempt, Errc::bad_handle,
                "refused a result in shared-memory object '" + h.name +
                    "': not a name this worker may create (" + prefix + "<n>)");
  }
  auto o = ipc::SharedObject::open(h.name, h.size);
  if (!o) {
    if (o.error().code != Errc::not_found) {
      (void)::shm_unlink(("/" + h.name).c_str());  // this worker's: ours to remove
    }
    return fail(attempt, o.error().code, "its result object: " + o.error().message());
  }
  Adopted a{std::make_shared<ipc::SharedObject>(std::move(*o)), false};
  std::shared_ptr<TaskState> task;
  {
    std::lock_guard lk(mu_);
    if (auto it = tasks_.find(f.header.request_id); it != tasks_.end()) task = it->second;
  }
  if (task && !task->batch) {
    // A task's value is kept as it came: the segment becomes an object of the store (a store
    // name, which the worker's sweep at its end does not touch). A dependant submitted before
    // or after it arrived takes it by name; its future decodes from the mapping. A chunk's
    // value is read in: its items are decoded apart.
    a.by_handle = a.object->rename_to(ipc::new_object_name("obj")).has_value();
  }
  if (!a.by_handle) a.object->unlink();  // adopted: the mapping stays valid until read
  f = msg::make_result_frame(msg::ResultHeader{attempt}, ByteView{}, f.header.request_id);
  return a;
}

std::shared_ptr<ObjectBlock> PoolCore::keep_result_object(
    const std::shared_ptr<ipc::SharedObject>& o) {
  if (!track_object(o, /*put=*/false)) return nullptr;
  results_kept_.fetch_add(1);
  auto b = std::make_shared<ObjectBlock>(
      o->name(), o->size(), std::shared_ptr<const void>(o),
      [](const void* s) { return static_cast<const ipc::SharedObject*>(s)->bytes(); },
      /*drop_after_decode=*/false);
  register_object(b);  // a remote worker's fetch finds it too
  return b;
}

void PoolCore::carry_out(Work& w) {
  // A link's frames go out as one batch: one writev (pipe), one publish and wake-up (shm).
  for (auto& ep : w.flushes)
    flush(*ep);
  w.flushes.clear();
  for (auto& [level, line] : w.notices)
    event(level, line);
  w.notices.clear();
  for (auto& [ep, why] : w.kills)
    ep->kill(why);
  w.kills.clear();
  if (w.spawns > 0) supervisor_->request_spawns(std::exchange(w.spawns, 0u));
  // Objects go before the callers hear of the outcome: a finished task leaves nothing.
  w.released.clear();
  for (WorkerId id : w.sweep_objects)
    ipc::remove_objects_with_prefix(admission_.object_prefix(id));
  w.sweep_objects.clear();
  for (auto& r : w.results)
    complete_result(*r.task, *r.frame, r.value_at, Adopted{std::move(r.object), r.by_handle});
  w.results.clear();
  for (auto& [t, f] : w.failures) {
    note_failure(f);
    const bool cancelled = f.kind == FailureKind::cancelled;
    t->complete({}, std::move(f), cancelled ? &counters_.cancelled : &counters_.failed);
  }
  w.failures.clear();
}

void PoolCore::complete_result(TaskState& t, Frame& f, std::size_t value_at,
                               const Adopted& adopted) {
  if (f.header.kind == MessageKind::result && adopted.object) {
    if (adopted.by_handle) {
      if (auto b = keep_result_object(adopted.object)) {
        t.complete_object(std::move(b), &counters_.succeeded);
        return;
      }
    }
    // Read in with one copy (the object goes with the last reference to it).
    const ByteView bytes = adopted.object->bytes();
    t.complete(Bytes(bytes.begin(), bytes.end()), std::nullopt, &counters_.succeeded);
    return;
  }
  if (f.header.kind == MessageKind::result) {
    // The value is the payload's tail (decode_arrival found where): keep it in the frame's
    // buffer, moved to the front.
    f.payload.erase(f.payload.begin(), f.payload.begin() + static_cast<std::ptrdiff_t>(value_at));
    t.complete(std::move(f.payload), std::nullopt, &counters_.succeeded);
    return;
  }
  auto e = decode_value<msg::TaskError>(f.payload);
  auto fail = simple_failure(t, FailureKind::remote_error, e ? e->what : e.error().message());
  fail.type = e ? e->type : "ferry::DecodeError";
  if (e) {
    fail.pid = e->pid;
    fail.host = e->host;
    fail.stack = e->stack;
    fail.attempt = e->attempt;
  }
  note_failure(fail);
  t.complete({}, std::move(fail), &counters_.failed);
}

FailureInfo PoolCore::simple_failure(const TaskState& t, FailureKind k, std::string message) const {
  FailureInfo f;
  f.kind = k;
  f.task_id = t.id;
  if (auto* e = TaskRegistry::instance().at(t.function)) f.task = e->name;
  f.message = std::move(message);
  f.item = t.batch ? t.first_item : -1;
  f.max_attempts = 1 + t.max_retries.value_or(opt_.max_retries);
  return f;
}

FailureInfo PoolCore::failure_info(const TaskState& t, const Failure& fl, const WorkerIdentity* who,
                                   const std::optional<EndInfo>& end) const {
  FailureInfo f;
  switch (fl.cause) {
    case FailCause::worker_died:
      f = simple_failure(t, FailureKind::worker_died,
                         end && !end->exit ? end->detail : std::string(to_string(fl.worker_end)));
      break;
    case FailCause::timeout:
      f = simple_failure(t, FailureKind::timeout,
                         "ran longer than the task timeout of " +
                             std::to_string(t.timeout.value_or(opt_.task_timeout).count()) + " ms");
      break;
    case FailCause::cancelled:
      f = simple_failure(t, FailureKind::cancelled, "cancelled by the caller");
      break;
    case FailCause::shutdown:
      f = simple_failure(
          t, FailureKind::cancelled,
          sched_.closed() && !sched_.broken() ? "the pool shut down" : "the pool is shutting down");
      break;
    case FailCause::no_workers:
      f = simple_failure(t, FailureKind::rejected, "no workers: " + sched_.broken_reason());
      break;
    case FailCause::too_large: {
      // Arguments in an object are too large only for a remote worker (sent as bytes there).
      const auto o = objects_.find(t.id);
      const bool object = o != objects_.end();
      f = simple_failure(
          t, FailureKind::rejected,
          "FrameTooLarge: its arguments take " +
              std::to_string(object ? o->second->size() : t.args.size()) +
              " bytes, over the frame limit of " + std::to_string(sched_cfg_.max_task_bytes) +
              " bytes" +
              (object ? ", and a remote worker cannot map them from shared memory" : ""));
      break;
    }
    case FailCause::unsendable: {
      const auto why = unsendable_.find(t.id);
      f = simple_failure(t, FailureKind::rejected,
                         "its arguments cannot be passed to a worker: its task frame could not "
                         "be built (" +
                             (why != unsendable_.end() ? why->second : std::string("?")) + ")");
      break;
    }
    case FailCause::unserved: {
      const auto& e = *TaskRegistry::instance().at(t.function);
      auto m = mismatches_.find(t.function);
      f = simple_failure(
          t, FailureKind::rejected,
          "no worker serves task '" + e.name + "' " + e.signature +
              (m != mismatches_.end() ? " (" + m->second + ")"
                                      : std::string(" (load its task library in the workers: "
                                                    "ferry-worker --tasks LIB, or "
                                                    "PoolOptions::task_libraries)")));
      break;
    }
    case FailCause::bad_result:
      f = simple_failure(t, FailureKind::remote_error,
                         "its result message could not be decoded (twice, on two workers)");
      f.type = "ferry::DecodeError";
      break;
  }
  f.attempt = fl.attempt;
  if (who) {
    f.pid = who->pid;
    f.host = who->host;
  }
  if (end && end->exit) {
    f.signal = end->exit->signal;
    f.exit_code = end->exit->code;
  }
  return f;
}

}  // namespace detail

// --- Pool facade ----------------------------------------------------------------------------

std::string_view transport_name(Transport t) noexcept {
  switch (t) {
    case Transport::pipe:
      return "pipe";
    case Transport::shm:
      return "shm";
    case Transport::zmq:
      return "zmq";
  }
  return "?";
}

std::optional<Transport> parse_transport(std::string_view s) noexcept {
  if (s == "pipe") return Transport::pipe;
  if (s == "shm") return Transport::shm;
  if (s == "zmq") return Transport::zmq;
  return std::nullopt;
}

Pool::Pool(PoolOptions opt) : core_(std::make_shared<detail::PoolCore>(std::move(opt))) {
  core_->start();
}

Pool::~Pool() {
  actors_->shutdown(ShutdownMode::drain);
  core_->shutdown(ShutdownMode::drain);
}

bool Pool::wait_ready(std::chrono::milliseconds timeout) {
  return core_->wait_ready(timeout);
}
unsigned Pool::size() const noexcept {
  return core_->capacity();
}
bool Pool::wait_workers(unsigned n, std::chrono::milliseconds timeout) {
  return core_->wait_workers(n, timeout);
}
std::string Pool::listen_endpoint() const {
  return core_->listen_endpoint();
}
PoolStats Pool::stats() const {
  return core_->stats();
}
RecentNotes Pool::recent() const {
  return core_->recent();
}
const PoolOptions& Pool::options() const noexcept {
  return core_->options();
}
void Pool::shutdown(ShutdownMode mode) {
  actors_->shutdown(mode);
  core_->shutdown(mode);
}
std::size_t Pool::window() const noexcept {
  return core_->window();
}

std::shared_ptr<detail::TaskState> Pool::enqueue(std::shared_ptr<detail::TaskState> t, bool block) {
  return core_->enqueue(std::move(t), block);
}

std::shared_ptr<detail::ObjectBlock> Pool::put_encoded(Bytes encoded) {
  auto o = ipc::SharedObject::create(ipc::new_object_name("obj"), encoded);
  if (!o) throw Exception(std::move(o).error());
  Bytes().swap(encoded);  // the segment holds them now
  auto segment = std::make_shared<ipc::SharedObject>(std::move(*o));
  if (!core_->track_object(segment)) {
    throw Exception(Error{Errc::invalid_argument, "put: the pool has shut down"});
  }
  const std::string name = segment->name();
  const std::uint64_t size = segment->size();
  auto b = std::make_shared<detail::ObjectBlock>(
      name, size, std::shared_ptr<const void>(segment),
      [](const void* s) { return static_cast<const ipc::SharedObject*>(s)->bytes(); },
      /*drop_after_decode=*/false);
  detail::register_object(b);
  return b;
}

FutureBase Pool::submit_encoded(std::string_view task, Bytes args, std::uint32_t items,
                                std::int64_t first_item) {
  auto index = TaskRegistry::instance().index_of(task);
  if (!index) throw Exception(index.error());
  auto t = std::make_shared<detail::TaskState>();
  t->function = *index;
  t->args = std::move(args);
  if (items > 0) {
    t->batch = true;
    t->items = items;
    t->first_item = first_item;
  }
  return FutureBase(enqueue(std::move(t), true), core_);
}

std::uint32_t Pool::index_of(std::string_view name) const {
  return TaskRegistry::instance().index_of(name).value();
}

std::uint32_t Pool::index_of(AnyFn fn) const {
  return TaskRegistry::instance().index_of(fn).value();
}

std::string_view worker_state_name(WorkerState s) noexcept {
  switch (s) {
    case WorkerState::starting:
      return "starting";
    case WorkerState::ready:
      return "ready";
    case WorkerState::gone:
      return "gone";
  }
  return "?";
}

std::size_t Pool::auto_chunksize(std::size_t items) const noexcept {
  // As Python's Pool.map: about four chunks per worker, so a slow chunk is not the tail.
  const std::size_t parts = std::size_t{4} * core_->capacity();
  return std::max<std::size_t>(1, (items + parts - 1) / parts);
}

}  // namespace ferry
