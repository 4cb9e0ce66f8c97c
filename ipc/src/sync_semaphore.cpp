#include <atomic>
#include <new>

#include "ferry/ipc/sync_semaphore.hpp"
#include "sync_internal.hpp"

namespace ferry::ipc {

using detail::Journaled;
using detail::ProcId;
using detail::Segment;
using detail::SyncKind;

namespace {

struct SemState {
  std::uint32_t value;
  std::uint32_t max;      // UINT32_MAX for an unbounded Semaphore
  std::uint32_t reclaim;  // SemaphoreOptions::reclaim_dead_holders
  std::uint32_t pad;
  std::int64_t last_scan_ns;  // CLOCK_MONOTONIC (system-wide) time of the last dead-holder scan
  ProcId holders[Semaphore::kHolderSlots];  // count = units held
};

// Returns the units of holders that died to the count. Called with the state locked, inside
// a journal entry.
bool reclaim_dead(SemState& s, const ProcId& me) {
  return detail::table_prune_dead(s.holders, me, [&](const ProcId& h) {
    const std::uint64_t v = std::uint64_t{s.value} + h.count;
    s.value = static_cast<std::uint32_t>(v > s.max ? s.max : v);
  });
}

}  // namespace

struct Semaphore::State {
  detail::RobustMutex m;
  Journaled<SemState> j;
  std::atomic<std::uint32_t> seq;      // bumped by every release; waiters sleep on it
  std::atomic<std::uint32_t> waiters;  // lets release skip the wake syscall when nobody waits
};

Semaphore::Semaphore(Segment s) : seg_(std::move(s)), st_(static_cast<State*>(seg_.payload())) {}

Result<Semaphore> Semaphore::make(std::string_view name, SyncKind kind, std::uint32_t initial,
                                  std::uint32_t max, SemaphoreOptions opt) {
  auto seg = Segment::create(name, kind, sizeof(State));
  if (!seg) return std::move(seg).error();
  auto* st = new (seg->payload()) State{};
  if (auto s = detail::init_mutex(st->m); !s) return std::move(s).error();
  st->j.state.value = initial;
  st->j.state.max = max;
  st->j.state.reclaim = opt.reclaim_dead_holders ? 1 : 0;
  seg->publish();
  return Semaphore(std::move(*seg));
}

Result<Semaphore> Semaphore::open_kind(const std::string& shm_object, SyncKind kind) {
  auto seg = Segment::open(shm_object, kind, sizeof(State));
  if (!seg) return std::move(seg).error();
  return Semaphore(std::move(*seg));
}

Result<Semaphore> Semaphore::create(std::string_view name, std::uint32_t initial,
                                    SemaphoreOptions opt) {
  return make(name, SyncKind::semaphore, initial, UINT32_MAX, opt);
}

Result<Semaphore> Semaphore::open(std::string_view name) {
  return detail::open_named<Semaphore>(name);
}

Result<Semaphore> Semaphore::open_object(const std::string& shm_object) {
  return open_kind(shm_object, SyncKind::semaphore);
}

Status Semaphore::acquire(Deadline d) {
  if (!st_) return Error(Errc::invalid_argument, "empty Semaphore handle");
  auto& j = st_->j;
  const ProcId me = detail::self_proc();
  for (;;) {
    if (auto ls = detail::lock_state(st_->m, j, detail::state_deadline(d)); !ls) return ls;
    SemState& s = j.state;
    // Contention: maybe a holder died.
    const bool reclaimed =
        s.value == 0 && s.reclaim != 0 &&
        detail::scan_if_due(j, [&](SemState& st) { return reclaim_dead(st, me); });
    if (s.value > 0) {
      j.begin();
      --s.value;
      if (s.reclaim != 0) detail::table_add(s.holders, me);
      j.commit();
      const bool more = reclaimed && s.value > 0;
      if (more) st_->seq.fetch_add(1, std::memory_order_release);
      (void)detail::unlock_mutex(st_->m);
      if (more) os::futex_wake_all(st_->seq);  // the others may take the rest
      if (reclaimed) {
        return Error(Errc::owner_died,
                     "acquired a unit reclaimed from a process that died holding it");
      }
      return {};
    }
    const bool poll_for_dead = s.reclaim != 0;
    const std::uint32_t seen = st_->seq.load(std::memory_order_acquire);
    st_->waiters.fetch_add(1, std::memory_order_relaxed);
    (void)detail::unlock_mutex(st_->m);
    if (d.expired()) {
      st_->waiters.fetch_sub(1, std::memory_order_relaxed);
      return d.is_now() ? Errc::would_block : Errc::timeout;
    }
    os::futex_wait(st_->seq, seen, d,
                   poll_for_dead ? detail::kDeathPollInterval : Clock::duration::zero());
    st_->waiters.fetch_sub(1, std::memory_order_relaxed);
  }
}

Status Semaphore::release(std::uint32_t n) {
  if (!st_) return Error(Errc::invalid_argument, "empty Semaphore handle");
  if (n == 0) return {};
  auto& j = st_->j;
  if (auto ls = detail::lock_state(st_->m, j, Deadline::never()); !ls) return ls;
  SemState& s = j.state;
  if (std::uint64_t{s.value} + n > s.max) {
    (void)detail::unlock_mutex(st_->m);
    return Error(Errc::invalid_argument, s.max == UINT32_MAX
                                             ? "Semaphore count would overflow"
                                             : "BoundedSemaphore released more than acquired");
  }
  j.begin();
  s.value += n;
  if (s.reclaim != 0) detail::table_drop(s.holders, detail::self_proc(), n);
  j.commit();
  st_->seq.fetch_add(1, std::memory_order_release);
  const bool wake = st_->waiters.load(std::memory_order_relaxed) > 0;
  (void)detail::unlock_mutex(st_->m);
  if (wake) os::futex_wake(st_->seq, n);
  return {};
}

std::uint32_t Semaphore::value() const {
  if (!st_) return 0;
  return detail::read_state(st_->m, st_->j, std::uint32_t{0},
                            [](const SemState& s) { return s.value; });
}

Result<SemaphoreGuard> Semaphore::guard(Deadline d) {
  Status s = acquire(d);
  if (s) return SemaphoreGuard(this, false);
  if (s.code() == Errc::owner_died) return SemaphoreGuard(this, true);
  return std::move(s).error();
}

SemaphoreGuard& SemaphoreGuard::operator=(SemaphoreGuard&& o) noexcept {
  if (this != &o) {
    release();
    s_ = std::exchange(o.s_, nullptr);
    died_ = std::exchange(o.died_, false);
  }
  return *this;
}

void SemaphoreGuard::release() noexcept {
  if (s_ != nullptr) (void)std::exchange(s_, nullptr)->release(1);
  died_ = false;
}

// ---- BoundedSemaphore

Result<BoundedSemaphore> BoundedSemaphore::create(std::string_view name, std::uint32_t initial,
                                                  SemaphoreOptions opt) {
  auto s = make(name, SyncKind::bounded_semaphore, initial, initial, opt);
  if (!s) return std::move(s).error();
  return BoundedSemaphore(std::move(*s));
}

Result<BoundedSemaphore> BoundedSemaphore::open(std::string_view name) {
  return detail::open_named<BoundedSemaphore>(name);
}

Result<BoundedSemaphore> BoundedSemaphore::open_object(const std::string& shm_object) {
  auto s = open_kind(shm_object, SyncKind::bounded_semaphore);
  if (!s) return std::move(s).error();
  return BoundedSemaphore(std::move(*s));
}

std::uint32_t BoundedSemaphore::bound() const {
  if (!st_) return 0;
  return detail::read_state(st_->m, st_->j, std::uint32_t{0},
                            [](const SemState& s) { return s.max; });
}

}  // namespace ferry::ipc
