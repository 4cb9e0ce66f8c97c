// Future<R>: the result of one task submitted to a Pool.
//
// get() waits and returns the value or throws the task's TaskFailure (errors.hpp); the value is
// decoded in the caller's thread, so a result that cannot be decoded fails this future only.
// wait_for/ready never throw. cancel() removes a queued task, or kills the worker running it
// (the pool replaces the worker); it returns false if the task had already finished.
//
// Threading: a Future may be copied and used from several threads; get() may be called more
// than once (each call decodes again). Ownership: shares the task's state with the pool; a
// Future outliving its Pool still answers (a task unfinished at shutdown is Cancelled).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>

#include "ferry/coordinator/errors.hpp"
#include "ferry/shared/codec.hpp"

namespace ferry {
namespace detail {

class PoolCore;
struct TaskState;

// Where finished tasks are announced, in completion order (as_completed, imap_unordered).
class CompletionQueue {
 public:
  void push(std::shared_ptr<TaskState> t);
  std::shared_ptr<TaskState> pop();  // waits

 private:
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<TaskState>> done_;
};

struct TaskState : std::enable_shared_from_this<TaskState> {
  std::uint64_t id = 0;
  std::uint32_t function = 0;
  bool batch = false;
  std::uint32_t items = 1;  // batch: number of items in the chunk
  std::int64_t first_item = -1;
  Bytes args;

  // Scheduling state, owned by the pool (guarded by its mutex).
  std::uint32_t runs = 0;
  bool cancel_requested = false;
  bool timeout_kill = false;
  std::chrono::steady_clock::time_point started{};
  std::size_t wire_bytes = 0;  // size of its task frame (flow control)
  bool released = false;       // its slot in the window was given back

  // Completion (guarded by m). done is also readable without the lock.
  std::mutex m;
  std::condition_variable cv;
  std::atomic<bool> done{false};
  Bytes value;
  std::optional<FailureInfo> failure;
  std::shared_ptr<CompletionQueue> sink;

  // First completion wins; later ones (a late duplicate) are dropped. True if this one won;
  // then *count (if given) is incremented before any waiter wakes.
  bool complete(Bytes v, std::optional<FailureInfo> f, std::atomic<std::uint64_t>* count = nullptr);
  // Announces completion to q now if done, else when it completes.
  void notify_into(std::shared_ptr<CompletionQueue> q);
  void wait();
  bool wait_until(std::chrono::steady_clock::time_point t);
};

bool cancel_task(const std::weak_ptr<PoolCore>& core, const std::shared_ptr<TaskState>& t);

template <class R>
R decode_result(TaskState& s) {
  if (s.failure) throw_failure(*s.failure);
  if constexpr (std::is_void_v<R>) {
    return;
  } else {
    auto v = decode_value<R>(s.value);
    if (!v) {
      FailureInfo f;
      f.kind = FailureKind::remote_error;
      f.task_id = s.id;
      f.type = "ferry::DecodeError";
      f.message = "the coordinator could not decode the result: " + v.error().message();
      throw RemoteError(std::move(f));
    }
    return std::move(*v);
  }
}

}  // namespace detail

template <class R>
class Future {
 public:
  Future() = default;
  Future(std::shared_ptr<detail::TaskState> s, std::weak_ptr<detail::PoolCore> core)
      : s_(std::move(s)), core_(std::move(core)) {}

  bool valid() const noexcept { return s_ != nullptr; }
  std::uint64_t id() const noexcept { return s_->id; }
  bool ready() const noexcept { return s_->done.load(std::memory_order_acquire); }
  void wait() const { s_->wait(); }
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> d) const {
    return s_->wait_until(std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(d));
  }
  // The value, or throws the task's TaskFailure.
  R get() const {
    s_->wait();
    std::lock_guard lk(s_->m);
    return detail::decode_result<R>(*s_);
  }
  // The failure, if it failed (after waiting).
  std::optional<FailureInfo> failure() const {
    s_->wait();
    std::lock_guard lk(s_->m);
    return s_->failure;
  }
  bool cancel() const { return detail::cancel_task(core_, s_); }

  const std::shared_ptr<detail::TaskState>& state() const noexcept { return s_; }

 private:
  std::shared_ptr<detail::TaskState> s_;
  std::weak_ptr<detail::PoolCore> core_;
};

}  // namespace ferry
