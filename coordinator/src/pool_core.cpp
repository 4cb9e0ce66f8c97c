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
    : opt_(std::move(opt)), launcher_(std::make_unique<coordinator::PosixLauncher>()) {
  if (opt_.workers == 0) opt_.workers = std::max(1u, std::thread::hardware_concurrency());
  window_ = opt_.max_in_flight ? opt_.max_in_flight : std::size_t{1024} * opt_.workers;
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
}

PoolCore::~PoolCore() {
  shutdown(ShutdownMode::cancel);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void PoolCore::start() {
  {
    std::lock_guard lk(mu_);
    want_spawn_ = opt_.workers;
  }
  supervisor_ = std::thread([this] { supervise(); });
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
  if (l.inflight.empty()) return true;
  return l.inflight.size() < prefetch_ && l.inflight_bytes + bytes <= l.credit_bytes / 2;
}

Frame PoolCore::task_frame(const TaskState& t) const {
  msg::Task m;
  m.attempt = t.runs;
  m.function = t.function;
  m.batch = t.batch;
  m.args = t.args;
  return make_frame(MessageKind::task, m, t.id);
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
    if (best->inflight.empty()) task->started = std::chrono::steady_clock::now();
    best->inflight_bytes += bytes;
    best->inflight.push_back(task);
    ++best->sent;
    if (opt_.max_tasks_per_worker && best->sent >= opt_.max_tasks_per_worker) {
      // Recycle: this worker takes no more; its replacement starts now, so queued work
      // has somewhere to go while it finishes.
      best->state = WorkerLink::State::draining;
      best->expected_exit = true;
      ++want_spawn_;
      wake_supervisor();
    }
    jobs.push_back(SendJob{best, task_frame(*task)});
  }
}

void PoolCore::flush(std::vector<SendJob>& jobs) {
  // Jobs were queued in per-link order under mu_; one sender per link at a time keeps it.
  for (auto& j : jobs) {
    std::lock_guard lk(j.link->send_mu);
    // A failed send means the worker is gone; its death handling re-queues the task.
    (void)j.link->ch->send(j.frame);
  }
  jobs.clear();
}

void PoolCore::finish_locked(TaskState& t) {
  if (t.released) return;
  t.released = true;
  --in_system_;
  space_cv_.notify_one();
  if (in_system_ == 0) state_cv_.notify_all();
}

void PoolCore::on_frame(WorkerLink& link, Frame& f) {
  if (f.header.kind != MessageKind::result && f.header.kind != MessageKind::error) return;
  std::vector<SendJob> jobs;
  std::shared_ptr<TaskState> t;
  {
    std::lock_guard lk(mu_);
    auto it = std::find_if(link.inflight.begin(), link.inflight.end(),
                           [&](const auto& x) { return x->id == f.header.request_id; });
    if (it == link.inflight.end()) return;  // late duplicate of a re-queued task: dropped
    t = std::move(*it);
    link.inflight_bytes -= t->wire_bytes;
    link.inflight.erase(it);
    ++link.completed;
    if (!link.inflight.empty()) link.inflight.front()->started = std::chrono::steady_clock::now();
    for (auto& w : stats_.workers) {
      if (w.id == link.id) ++w.tasks;
    }
    startup_failures_ = 0;
    finish_locked(*t);
    if (link.state == WorkerLink::State::draining && link.inflight.empty() && !link.shutdown_sent) {
      link.shutdown_sent = true;
      jobs.push_back(SendJob{&link, make_frame(MessageKind::shutdown, msg::Shutdown{true})});
    }
    pump_locked(jobs);
  }
  flush(jobs);
  if (f.header.kind == MessageKind::result) {
    auto r = decode_value<msg::TaskResult>(f.payload);
    if (r) {
      t->complete(std::move(r->value), std::nullopt, &counters_.succeeded);
      return;
    }
    auto fail = failure_for(*t, FailureKind::remote_error,
                            "undecodable result message: " + r.error().message());
    fail.type = "ferry::DecodeError";
    fail.pid = link.pid;
    t->complete({}, std::move(fail), &counters_.failed);
    return;
  }
  auto e = decode_value<msg::TaskError>(f.payload);
  auto fail = failure_for(*t, FailureKind::remote_error, e ? e->what : e.error().message());
  fail.type = e ? e->type : "ferry::DecodeError";
  fail.pid = e ? e->pid : link.pid;
  if (e) {
    fail.host = e->host;
    fail.stack = e->stack;
  }
  t->complete({}, std::move(fail), &counters_.failed);
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
        if (l->inflight.empty() || l->inflight.front() != t) continue;
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
      ready += l->state == WorkerLink::State::ready ? 1u : 0u;
    return ready >= opt_.workers;
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
  return core_->options().workers;
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
  const std::size_t parts = std::size_t{4} * core_->options().workers;
  return std::max<std::size_t>(1, (items + parts - 1) / parts);
}

}  // namespace ferry
