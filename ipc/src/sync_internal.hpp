// Internals shared by the sync primitives' sources: process identity, tables of processes
// with dead-entry scans, and the undo record that keeps state consistent when a process is
// killed in the middle of an update. Futex waits and /proc reading are in os_util.hpp.
#pragma once

#include <time.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "ferry/ipc/deadline.hpp"
#include "ferry/ipc/sync_base.hpp"
#include "os_util.hpp"

namespace ferry::ipc::detail {

// How often waiters that must notice a dead peer (Semaphore holder, Barrier party) wake up
// to look for one.
inline constexpr auto kDeathPollInterval = std::chrono::milliseconds(100);

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

// Tables of processes in shared state (Semaphore holders, Barrier attachments): one entry
// per process, count = what it holds there; count == 0 is a free entry. Called with the
// state locked, inside a journal entry.

// Adds n to me's entry, or takes a free one; a full table leaves me untracked (documented
// by the primitives).
template <std::size_t N>
void table_add(ProcId (&table)[N], const ProcId& me, std::uint32_t n = 1) noexcept {
  ProcId* free_entry = nullptr;
  for (auto& e : table) {
    if (e.count != 0 && e.same_process(me)) {
      e.count += n;
      return;
    }
    if (e.count == 0 && free_entry == nullptr) free_entry = &e;
  }
  if (free_entry != nullptr) {
    *free_entry = me;
    free_entry->count = n;
  }
}

// Takes n from me's entry (not below zero); an entry that reaches zero is freed.
template <std::size_t N>
void table_drop(ProcId (&table)[N], const ProcId& me, std::uint32_t n = 1) noexcept {
  for (auto& e : table) {
    if (e.count != 0 && e.same_process(me)) {
      e.count = n >= e.count ? 0 : e.count - n;
      if (e.count == 0) e = ProcId{};
      return;
    }
  }
}

// Frees the entries of dead processes (never me's), calling on_dead(entry) first for each.
// Returns true if there was one. Reads /proc: see scan_if_due for how often.
template <std::size_t N, class OnDead>
bool table_prune_dead(ProcId (&table)[N], const ProcId& me, OnDead&& on_dead) {
  bool any = false;
  for (auto& e : table) {
    if (e.count == 0 || e.same_process(me) || proc_alive(e)) continue;
    on_dead(static_cast<const ProcId&>(e));
    e = ProcId{};
    any = true;
  }
  return any;
}

// CLOCK_MONOTONIC in ns: system-wide, so every process compares the same clock.
inline std::int64_t mono_ns() noexcept {
  timespec t{};
  ::clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<std::int64_t>(t.tv_sec) * 1000000000LL + t.tv_nsec;
}

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

// Runs scan(state) (a look for dead processes) if the last one, by any process, was at least
// kDeathPollInterval ago: the scan reads /proc, so contended waiters share one per interval
// through S::last_scan_ns. Called with the state locked; the scan is one journal entry.
// Returns what scan returned, false if it was not due.
template <class S, class Scan>
bool scan_if_due(Journaled<S>& j, Scan&& scan) {
  const std::int64_t now = mono_ns();
  if (now - j.state.last_scan_ns < std::chrono::nanoseconds(kDeathPollInterval).count()) {
    return false;
  }
  j.begin();
  j.state.last_scan_ns = now;
  const bool found = scan(j.state);
  j.commit();
  return found;
}

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

// read(state) under the state lock, for the accessors (value(), parties(), ...); `fallback`
// if the lock cannot be taken (broken).
template <class S, class R, class Read>
R read_state(RobustMutex& m, Journaled<S>& j, R fallback, Read&& read) {
  if (!lock_state(m, j, Deadline::never())) return fallback;
  const R v = read(static_cast<const S&>(j.state));
  (void)unlock_mutex(m);
  return v;
}

// Short critical sections on internal state: a try form still waits for the mutex (it is
// never held across a wait), timed forms honour their deadline.
inline Deadline state_deadline(Deadline d) noexcept {
  return d.is_now() ? Deadline::never() : d;
}

}  // namespace ferry::ipc::detail
