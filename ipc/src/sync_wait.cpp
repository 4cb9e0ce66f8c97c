// Event, Condition and Barrier: waiting on a futex word in the segment.
#include <atomic>
#include <new>

#include "ferry/ipc/sync_barrier.hpp"
#include "ferry/ipc/sync_event.hpp"
#include "sync_internal.hpp"

namespace ferry::ipc {

using detail::Journaled;
using detail::ProcId;
using detail::Segment;
using detail::SyncKind;

// ---- Event

struct Event::State {
  std::atomic<std::uint32_t> flag;
  std::atomic<std::uint32_t> seq;  // bumped by every set(); waiters sleep on it
};

Event::Event(Segment s) : seg_(std::move(s)), st_(static_cast<State*>(seg_.payload())) {}

Result<Event> Event::create(std::string_view name) {
  auto seg = Segment::create(name, SyncKind::event, sizeof(State));
  if (!seg) return std::move(seg).error();
  new (seg->payload()) State{};
  seg->publish();
  return Event(std::move(*seg));
}

Result<Event> Event::open(std::string_view name) {
  return detail::open_named<Event>(name);
}

Result<Event> Event::open_object(const std::string& shm_object) {
  auto seg = Segment::open(shm_object, SyncKind::event, sizeof(State));
  if (!seg) return std::move(seg).error();
  return Event(std::move(*seg));
}

void Event::set() noexcept {
  if (!st_) return;
  st_->flag.store(1, std::memory_order_seq_cst);
  st_->seq.fetch_add(1, std::memory_order_seq_cst);
  os::futex_wake_all(st_->seq);
}

void Event::clear() noexcept {
  if (st_) st_->flag.store(0, std::memory_order_seq_cst);
}

bool Event::is_set() const noexcept {
  return st_ && st_->flag.load(std::memory_order_seq_cst) != 0;
}

Status Event::wait(Deadline d) {
  if (!st_) return Error(Errc::invalid_argument, "empty Event handle");
  // Read the sequence before the flag: a set() after this point changes the sequence, so the
  // futex wait cannot sleep through it.
  const std::uint32_t seen = st_->seq.load(std::memory_order_seq_cst);
  for (;;) {
    if (st_->flag.load(std::memory_order_seq_cst) != 0) return {};
    if (st_->seq.load(std::memory_order_seq_cst) != seen) return {};  // set() (+clear) pulse
    if (d.expired()) return d.is_now() ? Errc::would_block : Errc::timeout;
    os::futex_wait(st_->seq, seen, d);
  }
}

// ---- Condition

struct Condition::State {
  detail::RobustMutex m;
  std::atomic<std::uint32_t> seq;  // bumped by every notify; waiters sleep on it
  std::atomic<std::uint32_t> waiters;
};

Condition::Condition(Segment s) : seg_(std::move(s)), st_(static_cast<State*>(seg_.payload())) {}

Result<Condition> Condition::create(std::string_view name) {
  auto seg = Segment::create(name, SyncKind::condition, sizeof(State));
  if (!seg) return std::move(seg).error();
  auto* st = new (seg->payload()) State{};
  if (auto s = detail::init_mutex(st->m); !s) return std::move(s).error();
  seg->publish();
  return Condition(std::move(*seg));
}

Result<Condition> Condition::open(std::string_view name) {
  return detail::open_named<Condition>(name);
}

Result<Condition> Condition::open_object(const std::string& shm_object) {
  auto seg = Segment::open(shm_object, SyncKind::condition, sizeof(State));
  if (!seg) return std::move(seg).error();
  return Condition(std::move(*seg));
}

Result<LockGuard> Condition::lock(Deadline d) {
  if (!st_) return Error(Errc::invalid_argument, "empty Condition handle");
  return LockGuard::acquire(st_->m, d);
}

Status Condition::wait(LockGuard& g, Deadline d) {
  if (!st_) return Error(Errc::invalid_argument, "empty Condition handle");
  if (g.m_ != &st_->m) {
    return Error(Errc::invalid_argument, "wait() needs a guard of this Condition's lock");
  }
  // Read under the lock: a notify (made under the lock) after we release it changes the word,
  // so the futex wait below cannot miss it.
  const std::uint32_t seen = st_->seq.load(std::memory_order_acquire);
  st_->waiters.fetch_add(1, std::memory_order_relaxed);
  if (auto s = detail::unlock_mutex(st_->m); !s) {
    st_->waiters.fetch_sub(1, std::memory_order_relaxed);
    return s;
  }
  os::futex_wait(st_->seq, seen, d);
  st_->waiters.fetch_sub(1, std::memory_order_relaxed);
  const bool notified = st_->seq.load(std::memory_order_acquire) != seen;
  // Retake the lock whatever the deadline (as std::condition_variable does): the caller's
  // guard must own it on return.
  Status s = detail::lock_mutex(st_->m, Deadline::never());
  if (s.code() == Errc::owner_died) {
    g.died_ = true;
    return s;
  }
  if (!s) {
    g.m_ = nullptr;  // not held: the guard must not unlock it
    g.died_ = false;
    return s;
  }
  if (!notified && d.expired()) return Errc::timeout;
  return {};
}

void Condition::notify(std::uint32_t n) noexcept {
  if (!st_ || n == 0) return;
  st_->seq.fetch_add(1, std::memory_order_release);
  if (st_->waiters.load(std::memory_order_relaxed) > 0) {
    os::futex_wake(st_->seq, n);
  }
}

void Condition::notify_all() noexcept {
  notify(0x7fffffffU);
}

// ---- Barrier

namespace {
struct BarState {
  std::uint32_t parties;
  std::uint32_t count;        // arrived in the current generation
  std::uint32_t gen;          // completed (or reset) generations
  std::uint32_t broken;       // sticky until reset()
  std::uint32_t reset_gen;    // the last generation that reset() ended (its waiters: broken)
  std::uint32_t has_reset;    // reset_gen is meaningful
  std::int64_t last_scan_ns;  // CLOCK_MONOTONIC of the last look for dead attached processes
  ProcId attached[Barrier::kAttachSlots];  // count = handles open in that process
};

bool prune_dead(BarState& s, const ProcId& me) {
  return detail::table_prune_dead(s.attached, me, [](const ProcId&) {});
}
}  // namespace

struct Barrier::State {
  detail::RobustMutex m;
  Journaled<BarState> j;
  std::atomic<std::uint32_t> seq;  // bumped whenever a generation ends or the barrier breaks
};

Barrier::Barrier(Segment s) : seg_(std::move(s)), st_(static_cast<State*>(seg_.payload())) {
  // Record this process as one that may be a party, so its death breaks the barrier.
  auto& j = st_->j;
  if (!detail::lock_state(st_->m, j, Deadline::never())) return;
  j.begin();
  detail::table_add(j.state.attached, detail::self_proc());
  j.commit();
  (void)detail::unlock_mutex(st_->m);
}

void Barrier::detach() noexcept {
  if (!st_) return;
  auto& j = st_->j;
  if (!detail::lock_state(st_->m, j, Deadline::never())) return;
  j.begin();
  detail::table_drop(j.state.attached, detail::self_proc());
  j.commit();
  (void)detail::unlock_mutex(st_->m);
}

Barrier::~Barrier() {
  detach();
}

Barrier& Barrier::operator=(Barrier&& o) noexcept {
  if (this != &o) {
    detach();
    st_ = std::move(o.st_);
    seg_ = std::move(o.seg_);
  }
  return *this;
}

Result<Barrier> Barrier::create(std::string_view name, std::uint32_t parties) {
  if (parties == 0 || parties > kMaxParties) {
    return Error(Errc::invalid_argument,
                 "Barrier parties must be 1.." + std::to_string(kMaxParties));
  }
  auto seg = Segment::create(name, SyncKind::barrier, sizeof(State));
  if (!seg) return std::move(seg).error();
  auto* st = new (seg->payload()) State{};
  if (auto s = detail::init_mutex(st->m); !s) return std::move(s).error();
  st->j.state.parties = parties;
  seg->publish();
  return Barrier(std::move(*seg));
}

Result<Barrier> Barrier::open(std::string_view name) {
  return detail::open_named<Barrier>(name);
}

Result<Barrier> Barrier::open_object(const std::string& shm_object) {
  auto seg = Segment::open(shm_object, SyncKind::barrier, sizeof(State));
  if (!seg) return std::move(seg).error();
  return Barrier(std::move(*seg));
}

Result<std::uint32_t> Barrier::wait(Deadline d) {
  if (!st_) return Error(Errc::invalid_argument, "empty Barrier handle");
  auto& j = st_->j;
  BarState& s = j.state;
  const ProcId me = detail::self_proc();
  if (auto ls = detail::lock_state(st_->m, j, detail::state_deadline(d)); !ls) {
    return std::move(ls).error();
  }
  auto unlock = [&] { (void)detail::unlock_mutex(st_->m); };
  // Ends the current generation badly (under the lock): everyone waiting wakes and sees it.
  auto break_barrier = [&](bool prune) {
    j.begin();
    s.broken = 1;
    if (prune) prune_dead(s, me);
    j.commit();
    st_->seq.fetch_add(1, std::memory_order_release);
    unlock();
    os::futex_wake_all(st_->seq);
  };
  if (s.broken != 0) {
    unlock();
    return Error(Errc::broken, "the barrier is broken");
  }
  const std::uint32_t index = s.count;
  if (index + 1 >= s.parties) {
    j.begin();
    s.count = 0;
    ++s.gen;
    j.commit();
    st_->seq.fetch_add(1, std::memory_order_release);
    unlock();
    os::futex_wake_all(st_->seq);
    return index;
  }
  j.begin();
  ++s.count;
  j.commit();
  const std::uint32_t my_gen = s.gen;
  for (;;) {
    if (s.gen != my_gen) {
      const bool was_reset = s.has_reset != 0 && s.reset_gen == my_gen;
      unlock();
      if (was_reset) return Error(Errc::broken, "the barrier was reset while waiting");
      return index;
    }
    if (s.broken != 0) {
      unlock();
      return Error(Errc::broken, "the barrier is broken");
    }
    if (d.expired()) {
      break_barrier(false);
      return Errc::timeout;
    }
    // A party that died will never arrive: look for dead attached processes.
    if (detail::scan_if_due(j, [&](BarState& st) { return prune_dead(st, me); })) {
      break_barrier(false);
      return Error(Errc::broken, "a process that had the barrier open died");
    }
    const std::uint32_t seen = st_->seq.load(std::memory_order_acquire);
    unlock();
    os::futex_wait(st_->seq, seen, d, detail::kDeathPollInterval);
    if (auto ls = detail::lock_state(st_->m, j, Deadline::never()); !ls) {
      return std::move(ls).error();
    }
  }
}

void Barrier::abort() noexcept {
  if (!st_) return;
  auto& j = st_->j;
  if (!detail::lock_state(st_->m, j, Deadline::never())) return;
  j.begin();
  j.state.broken = 1;
  j.commit();
  st_->seq.fetch_add(1, std::memory_order_release);
  (void)detail::unlock_mutex(st_->m);
  os::futex_wake_all(st_->seq);
}

void Barrier::reset() noexcept {
  if (!st_) return;
  auto& j = st_->j;
  BarState& s = j.state;
  if (!detail::lock_state(st_->m, j, Deadline::never())) return;
  j.begin();
  if (s.count > 0 || s.broken != 0) {
    // Parties still waiting in this generation must learn it ended without them.
    s.reset_gen = s.gen;
    s.has_reset = 1;
    ++s.gen;
  }
  s.count = 0;
  s.broken = 0;
  prune_dead(s, detail::self_proc());  // a dead process must not break the fresh barrier
  j.commit();
  st_->seq.fetch_add(1, std::memory_order_release);
  (void)detail::unlock_mutex(st_->m);
  os::futex_wake_all(st_->seq);
}

std::uint32_t Barrier::parties() const noexcept {
  if (!st_) return 0;
  return detail::read_state(st_->m, st_->j, std::uint32_t{0},
                            [](const BarState& s) { return s.parties; });
}

std::uint32_t Barrier::n_waiting() const noexcept {
  if (!st_) return 0;
  return detail::read_state(st_->m, st_->j, std::uint32_t{0},
                            [](const BarState& s) { return s.broken != 0 ? 0 : s.count; });
}

bool Barrier::broken() const noexcept {
  if (!st_) return false;
  return detail::read_state(st_->m, st_->j, false, [](const BarState& s) { return s.broken != 0; });
}

}  // namespace ferry::ipc
