// Future<R>: the result of one task submitted to a Pool.
//
// get() waits and returns the value or throws the task's TaskFailure (errors.hpp); the value is
// decoded in the caller's thread, so a result that cannot be decoded fails this future only.
// wait_for/ready never throw. cancel() removes a queued task, or kills the worker running it
// (the pool replaces the worker); it returns false if the task had already finished.
//
// Composition: then(fn) gives a Future of fn's result, run once this one finishes; on_done(cb)
// calls cb once it has finished. Both run on the pool's callback thread, never on the threads
// that read results (so they may submit tasks and wait), one at a time in the order they became
// runnable; after the pool shut down, in the calling thread. wait_any, wait_all and
// as_completed (pool.hpp) take futures of any result types as FutureBase.
//
// Threading: a Future may be copied and used from several threads; get() may be called more
// than once (each call decodes again). Ownership: shares the task's state with the pool; a
// Future outliving its Pool still answers (a task unfinished at shutdown is Cancelled).
#pragma once

#include <cxxabi.h>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>

#include <deque>
#include <exception>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "ferry/coordinator/detail/task_state.hpp"
#include "ferry/coordinator/errors.hpp"
#include "ferry/shared/archive.hpp"
#include "ferry/shared/codec.hpp"
#include "ferry/shared/object_ref.hpp"

namespace ferry {
namespace detail {

template <class R>
R decode_result(TaskState& s) {
  if (s.failure) throw_failure(*s.failure);
  if constexpr (std::is_void_v<R>) {
    return;
  } else {
    if (s.local) return *static_cast<const R*>(s.local.get());
    if constexpr (!cereal::traits::is_input_serializable<R, BoundedInputArchive>::value) {
      // Only then() makes futures of such types, and it always gives a local value.
      throw std::logic_error("ferry: a Future of a type without a cereal encoding has no value");
    } else {
      // A value kept in the object store is decoded from its bytes, on each get as a plain one.
      auto v = decode_value<R>(s.value_object ? s.value_object->encoded() : ByteView(s.value));
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
    if (s_->value_object) {
      const ByteView b = s_->value_object->encoded();
      return Bytes(b.begin(), b.end());
    }
    return s_->value;
  }
  // Removes it if queued, or stops the worker running it; false if it had finished already.
  bool cancel() const { return detail::cancel_task(core_, s_); }
  // Calls cb(*this) once it has finished (see Composition above). An exception cb throws is
  // reported as a pool event and otherwise ignored.
  void on_done(std::function<void(const FutureBase&)> cb) const {
    FutureBase self = *this;
    when_done([self, cb = std::move(cb)] { cb(self); });
  }

  const std::shared_ptr<detail::TaskState>& state() const noexcept { return s_; }

 protected:
  void when_done(std::function<void()> run) const {
    s_->listen([core = core_, run = std::move(run)](const std::shared_ptr<detail::TaskState>&) {
      detail::post_callback(core, run);
    });
  }

  std::shared_ptr<detail::TaskState> s_;
  std::weak_ptr<detail::PoolCore> core_;
};

template <class R>
class Future;

namespace detail {

// fn's result when given the value of a Future<R> (or nothing, for R = void).
template <class F, class R>
struct ThenResult {
  using type = std::invoke_result_t<F&, R>;
};
template <class F>
struct ThenResult<F, void> {
  using type = std::invoke_result_t<F&>;
};

FailureInfo continuation_failure(const TaskState& from, std::string type, std::string message);

inline std::string exception_type(const std::exception& e) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> name(
      abi::__cxa_demangle(typeid(e).name(), nullptr, nullptr, &status), std::free);
  return status == 0 && name ? std::string(name.get()) : std::string(typeid(e).name());
}

}  // namespace detail

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

  // A Future of fn(value) (fn() for a void task), run on the pool's callback thread once this
  // one has a value. If this one failed, the new one fails the same way and fn does not run;
  // if fn throws, it fails with ContinuationError (a TaskFailure thrown by fn, e.g. from
  // another future's get(), is passed on as it is). fn may instead take the Future<R> itself,
  // to look at a failure. The value of the new Future is kept as it is (no encoding).
  template <class F>
  auto then(F fn) const {
    constexpr bool takes_future = std::is_invocable_v<F&, const Future<R>&>;
    using U = std::remove_cvref_t<typename std::conditional_t<
        takes_future, std::invoke_result<F&, const Future<R>&>, detail::ThenResult<F, R>>::type>;
    auto next = std::make_shared<detail::TaskState>();
    next->id = s_->id;
    Future<R> self(s_, core_);
    when_done([self, next, fn = std::move(fn)]() mutable {
      try {
        auto call = [&]() -> U {
          if constexpr (takes_future) {
            return fn(self);
          } else if constexpr (std::is_void_v<R>) {
            self.get();
            return fn();
          } else {
            return fn(self.get());
          }
        };
        if constexpr (std::is_void_v<U>) {
          call();
          next->complete_local(nullptr);
        } else {
          next->complete_local(std::make_shared<const U>(call()));
        }
      } catch (const TaskFailure& e) {
        next->complete({}, e.info());
      } catch (const std::exception& e) {
        next->complete({},
                       detail::continuation_failure(*next, detail::exception_type(e), e.what()));
      } catch (...) {
        next->complete({}, detail::continuation_failure(*next, "unknown", "not a std::exception"));
      }
    });
    return Future<U>(std::move(next), core_);
  }

  // Calls cb(*this) once it has finished (see Composition above).
  void on_done(std::function<void(const Future<R>&)> cb) const {
    Future<R> self(s_, core_);
    when_done([self, cb = std::move(cb)] { cb(self); });
  }
};

namespace detail {
template <class T>
struct is_future : std::false_type {};
template <class R>
struct is_future<Future<R>> : std::true_type {};
template <class A>
constexpr bool is_future_v = is_future<std::remove_cvref_t<A>>::value;

template <class T>
struct is_object_ref : std::false_type {};
template <class T>
struct is_object_ref<ObjectRef<T>> : std::true_type {};
// True where argument A is an ObjectRef<T> and parameter P takes the value (T, const T&):
// such a task's arguments travel as task_detail::RefOr. A Future<ObjectRef<T>> counts too
// (resolve_arg gives the ref).
template <class P, class A>
constexpr bool feeds_by_ref_v = [] {
  using D = std::remove_cvref_t<A>;
  if constexpr (is_object_ref<std::decay_t<P>>::value) {
    return false;
  } else if constexpr (is_object_ref<D>::value) {
    static_assert(std::is_same_v<typename D::value_type, std::decay_t<P>>,
                  "an ObjectRef<T> argument feeds a parameter of type T or const T& only");
    return true;
  } else if constexpr (is_future_v<D>) {
    return is_object_ref<std::remove_cvref_t<decltype(std::declval<D&>().get())>>::value;
  } else {
    return false;
  }
}();

// A task argument as the task takes it: a Future's value (it has one by now), or the value.
template <class A>
decltype(auto) resolve_arg(A& a) {
  if constexpr (is_future_v<A>) {
    return a.get();
  } else {
    return std::move(a);  // build() runs once
  }
}

// Submits t once every dependency has finished (see Pool::submit).
void submit_after(const std::shared_ptr<PoolCore>& core, const std::shared_ptr<TaskState>& t,
                  std::vector<FutureBase> deps, std::function<Bytes()> build);

// The index of a finished one (the first found), or nullopt at the deadline.
std::optional<std::size_t> wait_any(const std::vector<std::shared_ptr<TaskState>>& states,
                                    std::optional<std::chrono::steady_clock::time_point> deadline);
bool wait_all(const std::vector<std::shared_ptr<TaskState>>& states,
              std::optional<std::chrono::steady_clock::time_point> deadline);

template <class Range>
std::vector<std::shared_ptr<TaskState>> states_of(const Range& futures) {
  std::vector<std::shared_ptr<TaskState>> out;
  for (const FutureBase& f : futures)
    out.push_back(f.state());
  return out;
}
template <class Rep, class Period>
std::chrono::steady_clock::time_point deadline_after(std::chrono::duration<Rep, Period> d) {
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(d);
}
}  // namespace detail

// A range of futures of one type (std::vector<Future<int>>) or of mixed types (FutureBase).
template <class Range>
concept FutureRange = std::ranges::input_range<Range> &&
    std::derived_from<std::ranges::range_value_t<Range>, FutureBase>;

// The index of a finished future (the lowest, if several have), or nullopt if none finished
// within timeout. Empty: nullopt at once. Never throws for a failed task: it has finished.
template <FutureRange Range, class Rep, class Period>
std::optional<std::size_t> wait_any(const Range& futures,
                                    std::chrono::duration<Rep, Period> timeout) {
  return detail::wait_any(detail::states_of(futures), detail::deadline_after(timeout));
}
template <class Rep, class Period>
std::optional<std::size_t> wait_any(std::initializer_list<FutureBase> futures,
                                    std::chrono::duration<Rep, Period> timeout) {
  return detail::wait_any(detail::states_of(futures), detail::deadline_after(timeout));
}
// Waits without a bound; futures must not be empty (std::invalid_argument).
template <FutureRange Range>
std::size_t wait_any(const Range& futures) {
  auto states = detail::states_of(futures);
  if (states.empty()) throw std::invalid_argument("ferry::wait_any: no futures to wait for");
  return *detail::wait_any(states, std::nullopt);
}

// True once every future has finished (succeeded or failed); false at timeout.
template <FutureRange Range, class Rep, class Period>
bool wait_all(const Range& futures, std::chrono::duration<Rep, Period> timeout) {
  return detail::wait_all(detail::states_of(futures), detail::deadline_after(timeout));
}
template <class Rep, class Period>
bool wait_all(std::initializer_list<FutureBase> futures,
              std::chrono::duration<Rep, Period> timeout) {
  return detail::wait_all(detail::states_of(futures), detail::deadline_after(timeout));
}
template <FutureRange Range>
void wait_all(const Range& futures) {
  detail::wait_all(detail::states_of(futures), std::nullopt);
}

}  // namespace ferry
