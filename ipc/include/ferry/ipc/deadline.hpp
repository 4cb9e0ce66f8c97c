// Deadlines: the one way every send/recv is told how long it may wait.
// Deadline::now() is the try form, Deadline::never() the blocking form, after(d) the timed form.
#pragma once

#include <chrono>
#include <climits>

namespace ferry::ipc {

using Clock = std::chrono::steady_clock;

class Deadline {
 public:
  static Deadline now() noexcept { return Deadline(Clock::time_point::min()); }
  static Deadline never() noexcept { return Deadline(Clock::time_point::max()); }
  static Deadline at(Clock::time_point t) noexcept { return Deadline(t); }
  template <class Rep, class Period>
  static Deadline after(std::chrono::duration<Rep, Period> d) noexcept {
    return Deadline(Clock::now() + std::chrono::duration_cast<Clock::duration>(d));
  }

  bool is_now() const noexcept { return t_ == Clock::time_point::min(); }
  bool is_never() const noexcept { return t_ == Clock::time_point::max(); }
  Clock::time_point when() const noexcept { return t_; }
  bool expired() const noexcept { return !is_never() && (is_now() || Clock::now() >= t_); }

  // Time left, clamped at zero; Clock::duration::max() for never.
  Clock::duration remaining() const noexcept {
    if (is_never()) return Clock::duration::max();
    if (is_now()) return Clock::duration::zero();
    auto left = t_ - Clock::now();
    return left < Clock::duration::zero() ? Clock::duration::zero() : left;
  }
  // For poll(2)/zmq_poll: -1 = forever, else milliseconds left rounded up.
  int poll_ms() const noexcept {
    if (is_never()) return -1;
    auto left = remaining();
    auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
    return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
  }

 private:
  explicit Deadline(Clock::time_point t) noexcept : t_(t) {}
  Clock::time_point t_;
};

}  // namespace ferry::ipc
