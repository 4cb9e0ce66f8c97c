// Dispatch, completion and retries; the Pool facade and futures' shared state.
#include "pool_core.hpp"

#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "ferry/shared/codec.hpp"
#include "ferry/worker/runtime.hpp"

namespace ferry {
namespace detail {

// --- futures' shared state ------------------------------------------------------------------

void CompletionQueue::push(std::shared_ptr<TaskState> t) {
  {
    std::lock_guard lk(m_);
    done_.push_back(std::move(t));
  }
  cv_.notify_one();
}

std::shared_ptr<TaskState> CompletionQueue::pop() {
  std::unique_lock lk(m_);
  cv_.wait(lk, [&] { return !done_.empty(); });
  auto t = std::move(done_.front());
  done_.pop_front();
  return t;
}

std::shared_ptr<TaskState> CompletionQueue::pop_until(std::chrono::steady_clock::time_point t) {
  std::unique_lock lk(m_);
  if (!cv_.wait_until(lk, t, [&] { return !done_.empty(); })) return nullptr;
  auto s = std::move(done_.front());
  done_.pop_front();
  return s;
}

bool TaskState::complete(Bytes v, std::optional<FailureInfo> f, std::atomic<std::uint64_t>* count) {
  std::shared_ptr<CompletionQueue> q;
  {
    std::lock_guard lk(m);
    if (done.load(std::memory_order_relaxed)) return false;
    if (count) count->fetch_add(1);
    value = std::move(v);
    failure = std::move(f);
    done.store(true, std::memory_order_release);
    q = sink;
  }
  cv.notify_all();
  if (q) q->push(shared_from_this());
  return true;
}

void TaskState::notify_into(std::shared_ptr<CompletionQueue> q) {
  {
    std::lock_guard lk(m);
    if (!done.load(std::memory_order_relaxed)) {
      sink = std::move(q);
      return;
    }
  }
  q->push(shared_from_this());
}

void TaskState::wait() {
  if (done.load(std::memory_order_acquire)) return;
  std::unique_lock lk(m);
  cv.wait(lk, [&] { return done.load(std::memory_order_relaxed); });
}

bool TaskState::wait_until(std::chrono::steady_clock::time_point t) {
  if (done.load(std::memory_order_acquire)) return true;
  std::unique_lock lk(m);
  return cv.wait_until(lk, t, [&] { return done.load(std::memory_order_relaxed); });
}

bool cancel_task(const std::weak_ptr<PoolCore>& core, const std::shared_ptr<TaskState>& t) {
  if (auto c = core.lock()) return c->cancel(t);
  return false;
}

// --- the core -------------------------------------------------------------------------------

PoolCore::PoolCore(PoolOptions opt)
    : opt_(std::move(opt)),
      launcher_(opt_.launcher ? opt_.launcher : std::make_shared<coordinator::PosixLauncher>()) {
  local_workers_ = opt_.workers.value_or(std::max(1u, std::thread::hardware_concurrency()));
  if (local_workers_ == 0 && opt_.listen.empty()) {
    throw Exception(
        Error{Errc::invalid_argument, "a pool needs local workers or a listen address"});
  }
  window_ =
      opt_.max_in_flight ? opt_.max_in_flight : std::size_t{1024} * std::max(1u, local_workers_);
  prefetch_ = opt_.prefetch ? opt_.prefetch : 64;
  worker::register_builtin_tasks();
  auto& reg = TaskRegistry::instance();
  reg.freeze();
  registry_hash_ = reg.hash();
  if (opt_.initializer) {
    auto idx = opt_.initializer->fn ? reg.index_of(opt_.initializer->fn)
                                    : reg.index_of(opt_.initializer->name);
    if (!idx) throw Exception(Error{idx.error().code, "initializer: " + idx.error().detail});
    init_function_ = *idx;
  }
  worker_exe_ = opt_.worker_program.empty() ? coordinator::self_executable() : opt_.worker_program;
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) throw Exception(system_error("eventfd", errno));
  if (!opt_.listen.empty()) open_listener();
}

PoolCore::~PoolCore() {
  shutdown(ShutdownMode::cancel);
  if (wake_fd_ >= 0) ::close(wake_fd_);
  router_stop_ = true;
  if (router_thread_.joinable()) router_thread_.join();
}

void PoolCore::start() {
  {
    std::lock_guard lk(mu_);
    want_spawn_ = local_workers_;
  }
  supervisor_ = std::thread([this] { supervise(); });
  if (router_) router_thread_ = std::thread([this] { router_loop(); });
}

void PoolCore::event(const std::string& line) {
  if (opt_.on_event) {
    opt_.on_event(line);
    return;
  }
  std::string s = "ferry: " + line + "\n";
  [[maybe_unused]] auto n = ::write(2, s.data(), s.size());
}

Status PoolCore::send_to(WorkerLink& l, const Frame& f, Deadline d) {
  if (!l.remote) return l.ch->send_until(f, d);
  std::lock_guard lk(router_send_mu_);
  return router_->send_until(l.peer, f, d);
}

unsigned PoolCore::capacity() const {
  std::lock_guard lk(mu_);
  unsigned n = 0;
  for (auto& l : links_)
    n += l->state == WorkerLink::State::ready ? l->slots : 0;
  return std::max({1u, n, local_workers_});
}

bool PoolCore::wait_workers(unsigned n, std::chrono::milliseconds timeout) {
  std::unique_lock lk(mu_);
  return state_cv_.wait_for(lk, timeout, [&] {
    unsigned ready = 0;
    for (auto& l : links_)
      ready += l->state == WorkerLink::State::ready ? 1u : 0u;
    return ready >= n || closing_;
  }) && !closing_;
}

void PoolCore::wake_supervisor() {
  std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

FailureInfo PoolCore::failure_for(const TaskState& t, FailureKind k, std::string message) const {
  FailureInfo f;
  f.kind = k;
  f.task_id = t.id;
  if (auto* e = TaskRegistry::instance().at(t.function)) f.task = e->name;
  f.message = std::move(message);
  f.item = t.batch ? t.first_item : -1;
  f.attempt = t.runs;
  f.max_attempts = 1 + opt_.max_retries;
  return f;
}

std::shared_ptr<TaskState> PoolCore::enqueue(std::shared_ptr<TaskState> t, bool block) {
  std::vector<SendJob> jobs;
  {
    std::unique_lock lk(mu_);
    if (!block && in_system_ >= window_ && !closing_ && !broken_) return nullptr;
    space_cv_.wait(lk, [&] { return in_system_ < window_ || closing_ || broken_; });
    t->id = next_task_id_++;
    if (closing_ || broken_) {
      lk.unlock();
      t->released = true;
      t->complete({}, failure_for(*t, FailureKind::rejected,
                                  closing_ ? "the pool is shutting down"
                                           : "no workers: " + broken_reason_));
      return t;
    }
    ++in_system_;
    ++stats_.submitted;
    pending_.push_back(t);
    pump_locked(jobs);
  }
  flush(jobs);
  return t;
}

bool PoolCore::has_room_locked(const WorkerLink& l, std::size_t bytes) const {
  if (l.state != WorkerLink::State::ready) return false;
  if (opt_.max_tasks_per_worker && l.sent >= opt_.max_tasks_per_worker) return false;
  if (l.inflight.size() < l.slots) return true;
  return l.inflight.size() < l.slots - 1 + depth_locked() &&
         l.inflight_bytes + bytes <= l.credit_bytes / 2;
}

std::size_t PoolCore::depth_locked() const {
  if (avg_service_us_ < 0) return 2;  // unknown yet: one running, one waiting
  // Queue about a millisecond of work per worker.
  const double ahead = 1000.0 / std::max(avg_service_us_, 0.01);
  return 1 + static_cast<std::size_t>(std::clamp(ahead, 0.0, double(prefetch_ - 1)));
}

Frame PoolCore::task_frame(const TaskState& t) const {
  return msg::make_task_frame(msg::TaskHeader{t.runs, t.function, t.batch}, t.args, t.id);
}

void PoolCore::pump_locked(std::vector<SendJob>& jobs) {
  while (!pending_.empty()) {
    auto& t = pending_.front();
    const std::size_t bytes = t->args.size() + 64;
    WorkerLink* best = nullptr;
    for (auto& l : links_) {
      if (!has_room_locked(*l, bytes)) continue;
      if (!best || l->inflight.size() < best->inflight.size()) best = l.get();
    }
    if (!best) return;
    auto task = std::move(pending_.front());
    pending_.pop_front();
    ++task->runs;
    task->wire_bytes = bytes;
    if (best->inflight.size() < best->slots) task->started = std::chrono::steady_clock::now();
    best->inflight_bytes += bytes;
    best->inflight.push_back(task);
    ++best->sent;
    if (opt_.max_tasks_per_worker && best->sent >= opt_.max_tasks_per_worker) {
      // Recycle: this worker takes no more; its replacement starts now, so queued work
      // has somewhere to go while it finishes.
      best->state = WorkerLink::State::draining;
      best->expected_exit = true;
      ++stats_.workers_recycled;  // counted when decided, not when its exit is reaped (later)
      ++want_spawn_;
      wake_supervisor();
    }
    queue_send_locked(jobs, best, task_frame(*task));
  }
}

void queue_send_locked(std::vector<SendJob>& jobs, WorkerLink* l, Frame f) {
  const bool held = std::any_of(jobs.begin(), jobs.end(), [&](const SendJob& j) {
    return j.link == l && j.order.owns_lock();
  });
  jobs.push_back(
      SendJob{l, std::move(f),
              held ? std::unique_lock<std::mutex>() : std::unique_lock<std::mutex>(l->send_mu)});
}

void PoolCore::flush(std::vector<SendJob>& jobs) {
  // Jobs were queued in per-link order under mu_; one sender per link at a time keeps it.
  // A link's jobs go out as one batch: one writev (pipe) or one publish and wake-up (shm).
  // The link's first job holds its send_mu (taken under mu_), released once the batch is out.
  std::vector<Frame> batch;
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    WorkerLink* l = jobs[i].link;
    if (l == nullptr) continue;  // sent with an earlier job's batch
    batch.clear();
    for (std::size_t j = i; j < jobs.size(); ++j) {
      if (jobs[j].link != l) continue;
      batch.push_back(std::move(jobs[j].frame));
      jobs[j].link = nullptr;
    }
    // A failed send means the worker is gone; its death handling re-queues the task.
    if (batch.size() == 1 || l->remote) {
      for (auto& f : batch)
        (void)send_to(*l, f, Deadline::never());
    } else {
      (void)l->ch->send_batch(batch, Deadline::never());
    }
    if (jobs[i].order.owns_lock()) jobs[i].order.unlock();
  }
  jobs.clear();
}

void PoolCore::finish_locked(TaskState& t) {
  if (t.released) return;
  t.released = true;
  --in_system_;
  // Blocked submitters are woken once a slice of the window is free, not on every completion:
  // each wake-up is a futex call and a trip through mu_ for the submitter and for us.
  if (window_ - in_system_ >= std::max<std::size_t>(1, window_ / 16)) space_cv_.notify_one();
  if (in_system_ == 0) state_cv_.notify_all();
}

void PoolCore::on_frame(WorkerLink& link, Frame& f) {
  on_frames(link, std::span<Frame>(&f, 1));
}

void PoolCore::on_frames(WorkerLink& link, std::span<Frame> frames) {
  // Every result that had arrived is taken under one lock and one pump, so their follow-up
  // tasks go to the worker as one batch (one wake-up) rather than one send each.
  std::vector<SendJob> jobs;
  std::vector<std::pair<std::shared_ptr<TaskState>, Frame*>> done;
  done.reserve(frames.size());
  {
    std::lock_guard lk(mu_);
    const auto now = std::chrono::steady_clock::now();
    for (Frame& f : frames) {
      if (f.header.kind != MessageKind::result && f.header.kind != MessageKind::error) continue;
      auto it = std::find_if(link.inflight.begin(), link.inflight.end(),
                             [&](const auto& x) { return x->id == f.header.request_id; });
      if (it == link.inflight.end()) continue;  // late duplicate of a re-queued task: dropped
      auto t = std::move(*it);
      const double us = std::chrono::duration<double, std::micro>(now - t->started).count();
      avg_service_us_ = avg_service_us_ < 0 ? us : 0.8 * avg_service_us_ + 0.2 * us;
      link.inflight_bytes -= t->wire_bytes;
      const auto at = static_cast<std::size_t>(it - link.inflight.begin());
      link.inflight.erase(it);
      ++link.completed;
      mark_running_locked(link, at);
      if (link.stats_index < stats_.workers.size()) ++stats_.workers[link.stats_index].tasks;
      startup_failures_ = 0;
      finish_locked(*t);
      done.emplace_back(std::move(t), &f);
    }
    if (done.empty()) return;
    if (link.state == WorkerLink::State::draining && link.inflight.empty() && !link.shutdown_sent) {
      link.shutdown_sent = true;
      queue_send_locked(jobs, &link, make_frame(MessageKind::shutdown, msg::Shutdown{true}));
    }
    pump_locked(jobs);
  }
  flush(jobs);
  for (auto& [t, f] : done)
    complete_from(link, *t, *f);
}

void PoolCore::complete_from(const WorkerLink& link, TaskState& t, Frame& f) {
  if (f.header.kind == MessageKind::result) {
    auto r = msg::decode_result(FrameView{f.header, f.payload});
    if (r) {
      // The value is the payload's tail: keep it in the frame's buffer, moved to the front.
      const auto head = static_cast<std::ptrdiff_t>(f.payload.size() - r->value.size());
      f.payload.erase(f.payload.begin(), f.payload.begin() + head);
      t.complete(std::move(f.payload), std::nullopt, &counters_.succeeded);
      return;
    }
    auto fail = failure_for(t, FailureKind::remote_error,
                            "undecodable result message: " + r.error().message());
    fail.type = "ferry::DecodeError";
    fail.pid = link.pid;
    t.complete({}, std::move(fail), &counters_.failed);
    return;
  }
  auto e = decode_value<msg::TaskError>(f.payload);
  auto fail = failure_for(t, FailureKind::remote_error, e ? e->what : e.error().message());
  fail.type = e ? e->type : "ferry::DecodeError";
  fail.pid = e ? e->pid : link.pid;
  if (e) {
    fail.host = e->host;
    fail.stack = e->stack;
  }
  t.complete({}, std::move(fail), &counters_.failed);
}

void PoolCore::mark_running_locked(WorkerLink& l, std::size_t erased_at) {
  // The worker runs its queue in order, `slots` at a time: the task that just moved into the
  // running window started now.
  if (erased_at < l.slots && l.inflight.size() >= l.slots) {
    l.inflight[l.slots - 1]->started = std::chrono::steady_clock::now();
  }
}

bool PoolCore::cancel(const std::shared_ptr<TaskState>& t) {
  {
    std::lock_guard lk(mu_);
    if (t->done.load()) return false;
    t->cancel_requested = true;
    if (auto it = std::find(pending_.begin(), pending_.end(), t); it != pending_.end()) {
      pending_.erase(it);
      finish_locked(*t);
    } else {
      for (auto& l : links_) {
        auto pos = std::find(l->inflight.begin(), l->inflight.end(), t);
        if (pos == l->inflight.end() || l->remote ||
            static_cast<std::size_t>(pos - l->inflight.begin()) >= l->slots) {
          continue;  // not running here (a remote worker is not stopped: its result is dropped)
        }
        // Running: the only way to stop it is to stop its worker (replaced on exit).
        if (l->kill_reason.empty()) l->kill_reason = "cancelled task " + std::to_string(t->id);
        (void)l->proc->kill(SIGKILL);
      }
      // Queued behind another task on a worker: its result, if it comes, is dropped.
    }
  }
  return t->complete({}, failure_for(*t, FailureKind::cancelled, "cancelled by the caller"),
                     &counters_.cancelled);
}

bool PoolCore::wait_ready(std::chrono::milliseconds timeout) {
  std::unique_lock lk(mu_);
  return state_cv_.wait_for(lk, timeout, [&] {
    if (broken_) return true;
    unsigned ready = 0;
    for (auto& l : links_)
      ready += l->state == WorkerLink::State::ready && !l->remote ? 1u : 0u;
    return ready >= local_workers_;
  }) && !broken_;
}

void PoolCore::shutdown(ShutdownMode mode) {
  {
    std::unique_lock lk(mu_);
    if (!supervisor_.joinable()) return;
    closing_ = true;
    space_cv_.notify_all();
    if (mode == ShutdownMode::drain) {
      state_cv_.wait(lk, [&] { return in_system_ == 0 || broken_; });
    }
    stopping_ = true;
    cancel_on_stop_ = mode == ShutdownMode::cancel;
  }
  wake_supervisor();
  supervisor_.join();
}

PoolStats PoolCore::stats() const {
  std::lock_guard lk(mu_);
  PoolStats s = stats_;
  s.succeeded = counters_.succeeded;
  s.failed = counters_.failed;
  s.cancelled = counters_.cancelled;
  for (auto& w : s.workers) {
    w.alive = std::any_of(links_.begin(), links_.end(), [&](const auto& l) {
      return l->id == w.id && l->state != WorkerLink::State::dead;
    });
  }
  return s;
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
const PoolOptions& Pool::options() const noexcept {
  return core_->options();
}
void Pool::shutdown(ShutdownMode mode) {
  core_->shutdown(mode);
}
std::size_t Pool::window() const noexcept {
  return core_->window();
}

std::shared_ptr<detail::TaskState> Pool::enqueue(std::shared_ptr<detail::TaskState> t, bool block) {
  return core_->enqueue(std::move(t), block);
}

std::uint32_t Pool::index_of(std::string_view name) const {
  return TaskRegistry::instance().index_of(name).value();
}

std::uint32_t Pool::index_of(AnyFn fn) const {
  return TaskRegistry::instance().index_of(fn).value();
}

std::size_t Pool::auto_chunksize(std::size_t items) const noexcept {
  // As Python's Pool.map: about four chunks per worker, so a slow chunk is not the tail.
  const std::size_t parts = std::size_t{4} * core_->capacity();
  return std::max<std::size_t>(1, (items + parts - 1) / parts);
}

}  // namespace ferry
