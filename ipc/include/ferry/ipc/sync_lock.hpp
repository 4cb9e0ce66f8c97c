// Lock and RLock: named cross-process mutexes that survive their holder being killed.
//
// Both are POSIX robust, process-shared mutexes in a shared-memory segment (sync_base.hpp
// for names, ownership and threading). Every acquire comes in try / blocking / timed forms,
// all funnelled into acquire(Deadline), and returns a Status:
//   ok           acquired;
//   owner_died   ACQUIRED, but the previous holder died holding it: the protected data may
//                be half-updated. Repair it and call make_consistent(), else the release
//                makes the lock unrecoverable (every later acquire returns broken);
//   would_block  try form, held by someone else;   timeout  timed form expired;
//   broken       unrecoverable (see above); never a hang.
// A blocked acquirer is woken by the kernel as soon as the holder dies: no polling.
//
// Lock is owned by a thread (as pthread mutexes are): release it from the thread that took
// it (release() from another thread returns invalid_argument). RLock may be re-acquired by
// its owning thread; each acquire needs a release. The depth lives in the segment; the owner
// is the tid the kernel keeps in the robust mutex's futex word (cleared when the owner dies,
// so a recycled tid is never mistaken for the dead owner). A Lock is not re-entrant: a thread
// asking again for a Lock it holds gets what Python's multiprocessing.Lock gives — would_block
// from the try form, timeout once the timed form's deadline has passed — and invalid_argument
// at once from the blocking form, which would otherwise wait forever.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "ferry/ipc/sync_base.hpp"

namespace ferry::ipc {

// try_acquire / acquire_for / acquire_until from acquire(Deadline).
#define FERRY_SYNC_ACQUIRE_FORMS                             \
  Status try_acquire() {                                     \
    return acquire(Deadline::now());                         \
  }                                                          \
  template <class Rep, class Period>                         \
  Status acquire_for(std::chrono::duration<Rep, Period> d) { \
    return acquire(Deadline::after(d));                      \
  }                                                          \
  Status acquire_until(Clock::time_point t) {                \
    return acquire(Deadline::at(t));                         \
  }

class Lock {
 public:
  Lock() = default;
  static Result<Lock> create(std::string_view name);
  static Result<Lock> open(std::string_view name);
  static Result<Lock> open_object(const std::string& shm_object);

  Status acquire(Deadline d = Deadline::never());
  FERRY_SYNC_ACQUIRE_FORMS
  Status release();
  // After owner_died: the protected state is repaired; the lock is usable again.
  Status make_consistent();

  // RAII forms: the guard owns the lock on ok and on owner_died (guard.owner_died()).
  Result<LockGuard> guard(Deadline d = Deadline::never());
  Result<LockGuard> try_guard() { return guard(Deadline::now()); }
  template <class Rep, class Period>
  Result<LockGuard> guard_for(std::chrono::duration<Rep, Period> d) {
    return guard(Deadline::after(d));
  }

  bool valid() const noexcept { return seg_.valid(); }
  const std::string& shm_object() const noexcept { return seg_.shm_object(); }
  FERRY_SYNC_SERIALIZE_BY_NAME(Lock)

 private:
  explicit Lock(detail::Segment s);
  detail::Segment seg_;
  detail::MovePtr<detail::RobustMutex> m_;
};

class RLock;

// Releases one level of an RLock when destroyed.
class [[nodiscard]] RLockGuard {
 public:
  RLockGuard() = default;
  RLockGuard(RLockGuard&& o) noexcept
      : l_(std::exchange(o.l_, nullptr)), died_(std::exchange(o.died_, false)) {}
  RLockGuard& operator=(RLockGuard&& o) noexcept;
  RLockGuard(const RLockGuard&) = delete;
  RLockGuard& operator=(const RLockGuard&) = delete;
  ~RLockGuard() { unlock(); }

  bool owns_lock() const noexcept { return l_ != nullptr; }
  bool owner_died() const noexcept { return died_; }
  Status make_consistent() noexcept;
  void unlock() noexcept;

 private:
  friend class RLock;
  RLockGuard(RLock* l, bool died) noexcept : l_(l), died_(died) {}
  RLock* l_ = nullptr;
  bool died_ = false;
};

class RLock {
 public:
  RLock() = default;
  static Result<RLock> create(std::string_view name);
  static Result<RLock> open(std::string_view name);
  static Result<RLock> open_object(const std::string& shm_object);

  // Re-entry by the owning thread only increments the depth (never owner_died/timeout).
  // Taking over from a dead owner: depth restarts at 1, status owner_died.
  Status acquire(Deadline d = Deadline::never());
  FERRY_SYNC_ACQUIRE_FORMS
  // Drops one level; the lock is free when the depth reaches 0. invalid_argument if the
  // calling thread does not own it.
  Status release();
  Status make_consistent();
  // The calling thread's depth: 0 when it does not own the lock.
  std::uint32_t depth() const noexcept;

  Result<RLockGuard> guard(Deadline d = Deadline::never());
  Result<RLockGuard> try_guard() { return guard(Deadline::now()); }

  bool valid() const noexcept { return seg_.valid(); }
  const std::string& shm_object() const noexcept { return seg_.shm_object(); }
  FERRY_SYNC_SERIALIZE_BY_NAME(RLock)

  struct State;

 private:
  explicit RLock(detail::Segment s);
  detail::Segment seg_;
  detail::MovePtr<State> st_;
};

}  // namespace ferry::ipc
