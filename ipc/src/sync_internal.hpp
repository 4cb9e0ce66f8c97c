// Internals shared by the sync primitives' sources: futex waits on a shared word, process
// identity and liveness, and the undo record that keeps state consistent when a process is
// killed in the middle of an update.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <type_traits>

#include "ferry/ipc/deadline.hpp"
#include "ferry/ipc/sync_base.hpp"

namespace ferry::ipc::detail {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t) &&
                  std::atomic<std::uint32_t>::is_always_lock_free,
              "futex words must be plain lock-free 32-bit atomics");

// How often waiters that must notice a dead peer (Semaphore holder, Barrier party) wake up
// to look for one.
inline constexpr auto kDeathPollInterval = std::chrono::milliseconds(100);

// Sleeps while w == expected (FUTEX_WAIT, shared across processes) until woken, the deadline,
// or `slice` has passed (zero: no cap). Returns at once for Deadline::now(). Callers re-check
// their condition after every return (wake-ups may be spurious).
void futex_wait(const std::atomic<std::uint32_t>& w, std::uint32_t expected, Deadline d,
                Clock::duration slice = Clock::duration::zero()) noexcept;
void futex_wake(std::atomic<std::uint32_t>& w, int n) noexcept;
inline void futex_wake_all(std::atomic<std::uint32_t>& w) noexcept {
  futex_wake(w, 0x7fffffff);
}

// A process, robust against pid reuse: pid + start time (clock ticks since boot).
struct ProcId {
  std::int32_t pid = 0;
  std::uint32_t count = 0;  // per-table use (units held, handles open)
  std::uint64_t ticks = 0;
  bool same_process(const ProcId& o) const noexcept { return pid == o.pid && ticks == o.ticks; }
};
ProcId self_proc() noexcept;
// False once the process has exited (a zombie counts as dead) or its pid was reused.
bool proc_alive(const ProcId& p) noexcept;

// State S with an undo record: begin() saves S, commit() drops the save. A process killed
// between them leaves `active` set, and the next owner of the (robust) mutex rolls the state
// back with recover(), as if the dead process's operation never started.
template <class S>
struct Journaled {
  static_assert(std::is_trivially_copyable_v<S>);
  S state;
  S backup;
  std::uint32_t active;

  void begin() noexcept {
    backup = state;
    std::atomic_signal_fence(std::memory_order_seq_cst);  // the save is complete before ...
    active = 1;
    std::atomic_signal_fence(std::memory_order_seq_cst);  // ... any change is made
  }
  void commit() noexcept {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    active = 0;
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
  // Returns true if an interrupted update was rolled back.
  bool recover() noexcept {
    if (active == 0) return false;
    state = backup;
    std::atomic_signal_fence(std::memory_order_seq_cst);
    active = 0;
    return true;
  }
};

// Locks an internal state mutex: a dead previous owner is repaired (rollback + consistent)
// and not reported. ok / would_block / timeout, or broken if the mutex is unusable.
// rolled_back (optional) tells whether a dead owner's update was undone.
template <class S>
Status lock_state(RobustMutex& m, Journaled<S>& j, Deadline d, bool* owner_was_dead = nullptr) {
  Status st = lock_mutex(m, d);
  if (st.code() == Errc::owner_died) {
    j.recover();
    if (owner_was_dead != nullptr) *owner_was_dead = true;
    return make_mutex_consistent(m);
  }
  return st;
}

// Short critical sections on internal state: a try form still waits for the mutex (it is
// never held across a wait), timed forms honour their deadline.
inline Deadline state_deadline(Deadline d) noexcept {
  return d.is_now() ? Deadline::never() : d;
}

}  // namespace ferry::ipc::detail
