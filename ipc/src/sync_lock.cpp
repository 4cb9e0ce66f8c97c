#include <new>

#include "ferry/ipc/sync_lock.hpp"
#include "sync_internal.hpp"

namespace ferry::ipc {

using detail::Segment;
using detail::SyncKind;

// ---- Lock

Lock::Lock(Segment s) : seg_(std::move(s)), m_(static_cast<detail::RobustMutex*>(seg_.payload())) {}

Result<Lock> Lock::create(std::string_view name) {
  auto seg = Segment::create(name, SyncKind::lock, sizeof(detail::RobustMutex));
  if (!seg) return std::move(seg).error();
  auto* m = new (seg->payload()) detail::RobustMutex{};
  if (auto st = detail::init_mutex(*m); !st) return std::move(st).error();
  seg->publish();
  return Lock(std::move(*seg));
}

Result<Lock> Lock::open(std::string_view name) {
  return detail::open_named<Lock>(name);
}

Result<Lock> Lock::open_object(const std::string& shm_object) {
  auto seg = Segment::open(shm_object, SyncKind::lock, sizeof(detail::RobustMutex));
  if (!seg) return std::move(seg).error();
  return Lock(std::move(*seg));
}

Status Lock::acquire(Deadline d) {
  if (!m_) return Error(Errc::invalid_argument, "empty Lock handle");
  return detail::lock_mutex(*m_, d);
}

Status Lock::release() {
  if (!m_) return Error(Errc::invalid_argument, "empty Lock handle");
  return detail::unlock_mutex(*m_);
}

Status Lock::make_consistent() {
  if (!m_) return Error(Errc::invalid_argument, "empty Lock handle");
  return detail::make_mutex_consistent(*m_);
}

Result<LockGuard> Lock::guard(Deadline d) {
  if (!m_) return Error(Errc::invalid_argument, "empty Lock handle");
  return LockGuard::acquire(*m_, d);
}

// ---- RLock

struct RLock::State {
  detail::RobustMutex m;
  std::uint32_t depth;  // touched only by the owning thread
};

RLock::RLock(Segment s) : seg_(std::move(s)), st_(static_cast<State*>(seg_.payload())) {}

Result<RLock> RLock::create(std::string_view name) {
  auto seg = Segment::create(name, SyncKind::rlock, sizeof(State));
  if (!seg) return std::move(seg).error();
  auto* st = new (seg->payload()) State{};
  if (auto s = detail::init_mutex(st->m); !s) return std::move(s).error();
  seg->publish();
  return RLock(std::move(*seg));
}

Result<RLock> RLock::open(std::string_view name) {
  return detail::open_named<RLock>(name);
}

Result<RLock> RLock::open_object(const std::string& shm_object) {
  auto seg = Segment::open(shm_object, SyncKind::rlock, sizeof(State));
  if (!seg) return std::move(seg).error();
  return RLock(std::move(*seg));
}

Status RLock::acquire(Deadline d) {
  if (!st_) return Error(Errc::invalid_argument, "empty RLock handle");
  if (detail::mutex_owned_by_me(st_->m)) {
    if (st_->depth == UINT32_MAX) return Error(Errc::invalid_argument, "RLock depth overflow");
    ++st_->depth;
    return {};
  }
  Status s = detail::lock_mutex(st_->m, d);
  // Taken over from a dead owner: its depth is meaningless; this acquire is the first level.
  if (s || s.code() == Errc::owner_died) st_->depth = 1;
  return s;
}

Status RLock::release() {
  if (!st_) return Error(Errc::invalid_argument, "empty RLock handle");
  if (!detail::mutex_owned_by_me(st_->m) || st_->depth == 0) {
    return Error(Errc::invalid_argument, "the RLock is not held by this thread");
  }
  if (--st_->depth > 0) return {};
  return detail::unlock_mutex(st_->m);
}

Status RLock::make_consistent() {
  if (!st_) return Error(Errc::invalid_argument, "empty RLock handle");
  return detail::make_mutex_consistent(st_->m);
}

std::uint32_t RLock::depth() const noexcept {
  if (!st_ || !detail::mutex_owned_by_me(st_->m)) return 0;
  return st_->depth;
}

Result<RLockGuard> RLock::guard(Deadline d) {
  Status s = acquire(d);
  if (s) return RLockGuard(this, false);
  if (s.code() == Errc::owner_died) return RLockGuard(this, true);
  return std::move(s).error();
}

RLockGuard& RLockGuard::operator=(RLockGuard&& o) noexcept {
  if (this != &o) {
    unlock();
    l_ = std::exchange(o.l_, nullptr);
    died_ = std::exchange(o.died_, false);
  }
  return *this;
}

Status RLockGuard::make_consistent() noexcept {
  if (l_ == nullptr) return Error(Errc::invalid_argument, "the guard holds no lock");
  if (!died_) return {};
  Status s = l_->make_consistent();
  if (s) died_ = false;
  return s;
}

void RLockGuard::unlock() noexcept {
  if (l_ != nullptr) (void)std::exchange(l_, nullptr)->release();
  died_ = false;
}

}  // namespace ferry::ipc
