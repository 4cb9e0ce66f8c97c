// Semaphore and BoundedSemaphore: named cross-process counting semaphores.
//
// acquire(Deadline) (and try_acquire / acquire_for / acquire_until) returns:
//   ok; owner_died (ACQUIRED: the unit was reclaimed from a process that died holding it);
//   would_block (try form); timeout (timed form). release() never blocks.
//
// Owner death (SemaphoreOptions::reclaim_dead_holders, the default): a unit belongs to the
// process that acquired it until that process releases it. The segment keeps a small table
// of holder processes (pid + start time, kHolderSlots entries); an acquirer that finds no
// unit free (and waiters, every 100 ms while they wait) checks the table, and the units of
// dead holders are returned to the count. Limits, by design: units taken by more than
// kHolderSlots distinct live processes at once are not tracked (they cannot be reclaimed);
// a release by a process that holds no unit adds a unit (so "acquire here, release there"
// still works, but a unit acquired by A and released by B stays charged to A, and is
// returned a second time if A then dies). For that signalling/counting use, create with
// reclaim_dead_holders = false: units taken are consumed and a dead process returns nothing.
// The semaphore's own state is protected by a robust mutex with an undo record, so a process
// killed in the middle of acquire/release never corrupts the count or wedges the others.
//
// BoundedSemaphore (Python's): the count may never exceed its initial value; a release past
// it returns Errc::invalid_argument and changes nothing.
//
// Names, ownership, threading: see sync_base.hpp.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "ferry/ipc/sync_base.hpp"
#include "ferry/ipc/sync_lock.hpp"

namespace ferry::ipc {

struct SemaphoreOptions {
  bool reclaim_dead_holders = true;
};

class Semaphore;

// Releases one unit when destroyed.
class [[nodiscard]] SemaphoreGuard {
 public:
  SemaphoreGuard() = default;
  SemaphoreGuard(SemaphoreGuard&& o) noexcept
      : s_(std::exchange(o.s_, nullptr)), died_(std::exchange(o.died_, false)) {}
  SemaphoreGuard& operator=(SemaphoreGuard&& o) noexcept;
  SemaphoreGuard(const SemaphoreGuard&) = delete;
  SemaphoreGuard& operator=(const SemaphoreGuard&) = delete;
  ~SemaphoreGuard() { release(); }

  bool owns_unit() const noexcept { return s_ != nullptr; }
  bool owner_died() const noexcept { return died_; }
  void release() noexcept;

 private:
  friend class Semaphore;
  SemaphoreGuard(Semaphore* s, bool died) noexcept : s_(s), died_(died) {}
  Semaphore* s_ = nullptr;
  bool died_ = false;
};

class Semaphore {
 public:
  static constexpr std::uint32_t kHolderSlots = 32;

  Semaphore() = default;
  static Result<Semaphore> create(std::string_view name, std::uint32_t initial,
                                  SemaphoreOptions opt = {});
  static Result<Semaphore> open(std::string_view name);
  static Result<Semaphore> open_object(const std::string& shm_object);

  Status acquire(Deadline d = Deadline::never());
  FERRY_SYNC_ACQUIRE_FORMS
  // Adds n units (invalid_argument past the bound of a BoundedSemaphore, or on overflow).
  Status release(std::uint32_t n = 1);
  // The count now (a snapshot; it may change at once).
  std::uint32_t value() const;

  Result<SemaphoreGuard> guard(Deadline d = Deadline::never());
  Result<SemaphoreGuard> try_guard() { return guard(Deadline::now()); }

  bool valid() const noexcept { return seg_.valid(); }
  const std::string& shm_object() const noexcept { return seg_.shm_object(); }
  FERRY_SYNC_SERIALIZE_BY_NAME(Semaphore)

  struct State;

 protected:
  static Result<Semaphore> make(std::string_view name, detail::SyncKind kind, std::uint32_t initial,
                                std::uint32_t max, SemaphoreOptions opt);
  static Result<Semaphore> open_kind(const std::string& shm_object, detail::SyncKind kind);
  explicit Semaphore(detail::Segment s);

  detail::Segment seg_;
  detail::MovePtr<State> st_;
};

class BoundedSemaphore : public Semaphore {
 public:
  BoundedSemaphore() = default;
  // The bound is the initial value.
  static Result<BoundedSemaphore> create(std::string_view name, std::uint32_t initial,
                                         SemaphoreOptions opt = {});
  static Result<BoundedSemaphore> open(std::string_view name);
  static Result<BoundedSemaphore> open_object(const std::string& shm_object);
  std::uint32_t bound() const;
  FERRY_SYNC_SERIALIZE_BY_NAME(BoundedSemaphore)

 private:
  explicit BoundedSemaphore(Semaphore&& s) noexcept : Semaphore(std::move(s)) {}
};

}  // namespace ferry::ipc
