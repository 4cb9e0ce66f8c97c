// Task state, completion listeners, and the waits over several futures (wait_any, wait_all).
#include <algorithm>
#include <condition_variable>
#include <mutex>

#include "ferry/coordinator/future.hpp"
#include "pool_core.hpp"

namespace ferry::detail {

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
  return finish(std::move(v), nullptr, std::move(f), count);
}

bool TaskState::complete_local(std::shared_ptr<const void> v) {
  return finish({}, std::move(v), std::nullopt, nullptr);
}

bool TaskState::complete_object(std::shared_ptr<ObjectBlock> b, std::atomic<std::uint64_t>* count) {
  return finish({}, nullptr, std::nullopt, count, std::move(b));
}

bool TaskState::finish(Bytes v, std::shared_ptr<const void> loc, std::optional<FailureInfo> f,
                       std::atomic<std::uint64_t>* count, std::shared_ptr<ObjectBlock> object) {
  std::vector<std::pair<std::uint64_t, Listener>> ls;
  std::vector<std::shared_ptr<const void>> objects;  // released after the lock (may unlink)
  {
    std::lock_guard lk(m);
    if (done.load(std::memory_order_relaxed)) return false;
    objects.swap(keep);
    if (count) count->fetch_add(1);
    value = std::move(v);
    local = std::move(loc);
    value_object = std::move(object);
    failure = std::move(f);
    done.store(true, std::memory_order_release);
    ls.swap(listeners_);
  }
  // Before anyone hears of the outcome: a caller that dropped its last ref finds the object
  // freed once its tasks have finished.
  objects.clear();
  cv.notify_all();
  if (!ls.empty()) {
    auto self = shared_from_this();
    for (auto& entry : ls)
      entry.second(self);
  }
  return true;
}

void TaskState::notify_into(std::shared_ptr<CompletionQueue> q) {
  listen([q = std::move(q)](const std::shared_ptr<TaskState>& t) { q->push(t); });
}

std::uint64_t TaskState::listen(Listener l) {
  {
    std::lock_guard lk(m);
    if (!done.load(std::memory_order_relaxed)) {
      const auto lid = next_listener_++;
      listeners_.emplace_back(lid, std::move(l));
      return lid;
    }
  }
  l(shared_from_this());
  return 0;
}

void TaskState::unlisten(std::uint64_t lid) {
  if (lid == 0) return;
  std::lock_guard lk(m);
  std::erase_if(listeners_, [lid](const auto& p) { return p.first == lid; });
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

void post_callback(const std::weak_ptr<PoolCore>& core, std::function<void()> fn) {
  if (auto c = core.lock()) return c->post(std::move(fn));
  fn();
}

bool cancel_task(const std::weak_ptr<PoolCore>& core, const std::shared_ptr<TaskState>& t) {
  if (auto c = core.lock()) return c->cancel(t);
  return false;
}

void submit_after(const std::shared_ptr<PoolCore>& core, const std::shared_ptr<TaskState>& t,
                  std::vector<FutureBase> deps, std::function<Bytes()> build) {
  core->submit_after(t, std::move(deps), std::move(build));
}

FailureInfo continuation_failure(const TaskState& from, std::string type, std::string message) {
  FailureInfo f;
  f.kind = FailureKind::continuation_error;
  f.task_id = from.id;
  f.type = std::move(type);
  f.message = std::move(message);
  return f;
}

namespace {

// Listens on every state until the waiter has what it wants or the deadline passes; the
// listeners are removed on the way out, so repeated waits on the same futures do not pile up.
struct Waiter {
  std::mutex m;
  std::condition_variable cv;
  std::optional<std::size_t> first;
  std::size_t finished = 0;
};

template <class Enough>
void wait_on(const std::vector<std::shared_ptr<TaskState>>& states,
             std::optional<std::chrono::steady_clock::time_point> deadline,
             const std::shared_ptr<Waiter>& w, Enough enough) {
  std::vector<std::uint64_t> ids(states.size(), 0);
  for (std::size_t i = 0; i < states.size(); ++i) {
    ids[i] = states[i]->listen([w, i](const std::shared_ptr<TaskState>&) {
      {
        std::lock_guard lk(w->m);
        if (!w->first || i < *w->first) w->first = i;
        ++w->finished;
      }
      w->cv.notify_all();
    });
  }
  {
    std::unique_lock lk(w->m);
    auto ok = [&] { return enough(*w); };
    if (deadline)
      w->cv.wait_until(lk, *deadline, ok);
    else
      w->cv.wait(lk, ok);
  }
  for (std::size_t i = 0; i < states.size(); ++i)
    states[i]->unlisten(ids[i]);
}

}  // namespace

std::optional<std::size_t> wait_any(const std::vector<std::shared_ptr<TaskState>>& states,
                                    std::optional<std::chrono::steady_clock::time_point> deadline) {
  for (std::size_t i = 0; i < states.size(); ++i)
    if (states[i]->done.load(std::memory_order_acquire)) return i;
  if (states.empty()) return std::nullopt;
  auto w = std::make_shared<Waiter>();
  wait_on(states, deadline, w, [](const Waiter& x) { return x.first.has_value(); });
  std::lock_guard lk(w->m);
  return w->first;
}

bool wait_all(const std::vector<std::shared_ptr<TaskState>>& states,
              std::optional<std::chrono::steady_clock::time_point> deadline) {
  auto w = std::make_shared<Waiter>();
  const auto n = states.size();
  wait_on(states, deadline, w, [n](const Waiter& x) { return x.finished == n; });
  return std::all_of(states.begin(), states.end(),
                     [](const auto& s) { return s->done.load(std::memory_order_acquire); });
}

}  // namespace ferry::detail
