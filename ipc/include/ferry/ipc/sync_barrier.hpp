// Barrier: a named cross-process barrier for a fixed number of parties (Python's Barrier).
//
// wait(Deadline) returns the arrival index (0 for the first to arrive, parties-1 for the
// last) once `parties` waiters have arrived, or an error:
//   timeout  this waiter's deadline passed; the barrier is now broken for everyone else;
//   broken   the barrier is broken: a waiter timed out, abort() was called, or a process that
//            had the barrier open died without closing it (it may have been a party that will
//            never arrive). Every current waiter learns it, and later waits fail at once
//            until reset().
// Owner death: every process that creates or opens a Barrier is recorded in the segment
// (pid + start time, kAttachSlots entries) until its last handle is destroyed. Waiters wake
// every 100 ms to look for recorded processes that died; one found breaks the barrier, so
// survivors learn of a dead party within about 100 ms instead of hanging. (Processes beyond
// kAttachSlots are not recorded; their death is noticed only through waits' deadlines.)
// The state is protected by a robust mutex with an undo record, so a process killed inside
// wait() cannot corrupt it.
//
// Names, ownership, threading: see sync_base.hpp. A handle is attached to the process that
// made it; destroying it detaches (after a clean detach the process's exit breaks nothing).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "ferry/ipc/sync_base.hpp"

namespace ferry::ipc {

class Barrier {
 public:
  static constexpr std::uint32_t kMaxParties = 1024;
  static constexpr std::uint32_t kAttachSlots = 64;

  Barrier() = default;
  Barrier(Barrier&&) noexcept = default;
  Barrier& operator=(Barrier&& o) noexcept;
  Barrier(const Barrier&) = delete;
  Barrier& operator=(const Barrier&) = delete;
  ~Barrier();

  static Result<Barrier> create(std::string_view name, std::uint32_t parties);
  static Result<Barrier> open(std::string_view name);
  static Result<Barrier> open_object(const std::string& shm_object);

  Result<std::uint32_t> wait(Deadline d = Deadline::never());
  template <class Rep, class Period>
  Result<std::uint32_t> wait_for(std::chrono::duration<Rep, Period> d) {
    return wait(Deadline::after(d));
  }

  // Breaks the barrier: current and later waiters get broken until reset().
  void abort() noexcept;
  // Back to the empty, unbroken state; parties waiting now get broken.
  void reset() noexcept;

  std::uint32_t parties() const noexcept;
  std::uint32_t n_waiting() const noexcept;
  bool broken() const noexcept;

  bool valid() const noexcept { return seg_.valid(); }
  const std::string& shm_object() const noexcept { return seg_.shm_object(); }
  FERRY_SYNC_SERIALIZE_BY_NAME(Barrier)

  struct State;

 private:
  explicit Barrier(detail::Segment s);
  void detach() noexcept;
  detail::Segment seg_;
  detail::MovePtr<State> st_;
};

}  // namespace ferry::ipc
