// Event and Condition: named cross-process waiting primitives.
//
// Waiting is a FUTEX_WAIT (shared, not private) on a 32-bit sequence word in the segment;
// no pthread condition variable is used, so a waiter that dies leaves nothing behind that
// could wedge the others.
//
// Event (Python's): a flag. wait() returns ok once the flag is set, or once set() has been
// called after the wait began (a set() + clear() pulse still wakes every waiter present);
// timeout otherwise. The Event holds no lock, so a process dying anywhere in set/clear/wait
// cannot block the others; nothing to recover.
//
// Condition: a condition variable with its own robust lock (Python's Condition() with its
// default lock). Hold the lock (lock()/guard) around wait and notify. wait() releases it,
// sleeps until notified, deadline or spurious wake-up, and retakes it before returning (also
// on timeout). Owner death: if the lock's holder died, the waiter or locker that takes it
// over gets owner_died with the lock held (LockGuard::owner_died()), as for Lock; waiters that
// die are simply gone.
//
// Names, ownership, threading: see sync_base.hpp.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "ferry/ipc/sync_base.hpp"
#include "ferry/ipc/sync_lock.hpp"

namespace ferry::ipc {

class Event {
 public:
  Event() = default;
  static Result<Event> create(std::string_view name);
  static Result<Event> open(std::string_view name);
  static Result<Event> open_object(const std::string& shm_object);

  void set() noexcept;    // wakes every waiter
  void clear() noexcept;  // later waits block again
  bool is_set() const noexcept;

  // ok (set), timeout (timed form: not set by the deadline), would_block (try form).
  Status wait(Deadline d = Deadline::never());
  Status try_wait() { return wait(Deadline::now()); }
  template <class Rep, class Period>
  Status wait_for(std::chrono::duration<Rep, Period> d) {
    return wait(Deadline::after(d));
  }

  bool valid() const noexcept { return seg_.valid(); }
  const std::string& shm_object() const noexcept { return seg_.shm_object(); }
  FERRY_SYNC_SERIALIZE_BY_NAME(Event)

  struct State;

 private:
  explicit Event(detail::Segment s);
  detail::Segment seg_;
  detail::MovePtr<State> st_;
};

class Condition {
 public:
  Condition() = default;
  static Result<Condition> create(std::string_view name);
  static Result<Condition> open(std::string_view name);
  static Result<Condition> open_object(const std::string& shm_object);

  // The condition's lock (same statuses as Lock::guard).
  Result<LockGuard> lock(Deadline d = Deadline::never());
  Result<LockGuard> try_lock() { return lock(Deadline::now()); }

  // g must hold this condition's lock (else invalid_argument). Returns ok (notified or a
  // spurious wake-up: re-check your predicate), timeout, or owner_died (woken, and the lock
  // was retaken from a holder that died: g.owner_died() is set). The lock is held on return
  // in all three cases.
  Status wait(LockGuard& g, Deadline d = Deadline::never());
  template <class Rep, class Period>
  Status wait_for(LockGuard& g, std::chrono::duration<Rep, Period> d) {
    return wait(g, Deadline::after(d));
  }
  // Waits until pred() holds (checked with the lock held): ok, or timeout with pred() false.
  // An owner_died wake-up is reported at once (with the lock held) so the caller can repair.
  template <class Pred>
  Status wait(LockGuard& g, Pred pred, Deadline d = Deadline::never()) {
    while (!pred()) {
      Status st = wait(g, d);
      if (st.code() == Errc::timeout) return pred() ? Status{} : st;
      if (!st) return st;
    }
    return {};
  }
  template <class Rep, class Period, class Pred>
  Status wait_for(LockGuard& g, std::chrono::duration<Rep, Period> d, Pred pred) {
    return wait(g, std::move(pred), Deadline::after(d));
  }

  // Wake up to n waiters / all waiters. Call with the lock held (as Python requires), so a
  // waiter cannot miss a notify sent between its predicate check and its sleep.
  void notify(std::uint32_t n = 1) noexcept;
  void notify_all() noexcept;

  bool valid() const noexcept { return seg_.valid(); }
  const std::string& shm_object() const noexcept { return seg_.shm_object(); }
  FERRY_SYNC_SERIALIZE_BY_NAME(Condition)

  struct State;

 private:
  explicit Condition(detail::Segment s);
  detail::Segment seg_;
  detail::MovePtr<State> st_;
};

}  // namespace ferry::ipc
