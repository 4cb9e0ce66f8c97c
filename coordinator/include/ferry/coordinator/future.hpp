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

#include "ferry/coordinator/detail/task_state.hpp"
#include "ferry/coordinator/errors.hpp"
#include "ferry/shared/codec.hpp"

namespace ferry {
namespace detail {

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

// What every Future is, whatever its result type: a handle to wait on, inspect and cancel a
// task, and read its encoded result (for callers that decode by themselves, such as a command
// line mapping a task it knows only by name). Futures of different types mix as FutureBase.
class FutureBase {
 public:
  FutureBase() = default;
  FutureBase(std::shared_ptr<detail::TaskState> s, std::weak_ptr<detail::PoolCore> core)
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
  bool wait_until(std::chrono::steady_clock::time_point t) const { return s_->wait_until(t); }
  // The failure, if it failed (after waiting).
  std::optional<FailureInfo> failure() const {
    s_->wait();
    std::lock_guard lk(s_->m);
    return s_->failure;
  }
  // The result's encoding (cereal, as the task's result type), or throws its TaskFailure.
  Bytes encoded() const {
    s_->wait();
    std::lock_guard lk(s_->m);
    if (s_->failure) throw_failure(*s_->failure);
    return s_->value;
  }
  // Removes it if queued, or stops the worker running it; false if it had finished already.
  bool cancel() const { return detail::cancel_task(core_, s_); }

  const std::shared_ptr<detail::TaskState>& state() const noexcept { return s_; }

 protected:
  std::shared_ptr<detail::TaskState> s_;
  std::weak_ptr<detail::PoolCore> core_;
};

template <class R>
class Future : public FutureBase {
 public:
  using FutureBase::FutureBase;
  // The value, or throws the task's TaskFailure.
  R get() const {
    s_->wait();
    std::lock_guard lk(s_->m);
    return detail::decode_result<R>(*s_);
  }
};

}  // namespace ferry
