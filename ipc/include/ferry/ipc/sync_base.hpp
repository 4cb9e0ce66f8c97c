// Building blocks shared by ferry's cross-process synchronization primitives (sync.hpp):
// the named shared-memory segment every primitive lives in, the robust mutex placed in it,
// and LockGuard, the RAII guard of Lock, Condition, Value and Array.
//
// Names: a primitive called "jobs" lives in /dev/shm/ferry.<session>.jobs (ferry::shm_name),
// so segments left by a dead session are removed by ferry::sweep_stale_shm() and
// `ferry-coordinator cleanup`. create() fails with AlreadyExists if the name is taken;
// open() fails with NotFound if it does not exist (or has been removed by its creator).
//
// Ownership: a handle owns its mapping and is move-only. The handle returned by create()
// removes the name when destroyed (processes that have it open keep working; new open()s
// fail). Guards point into the mapping: a guard must not outlive its handle.
//
// Threading: a handle may be used by several threads of one process at once (all state is in
// the segment); a guard belongs to the thread that made it.
#pragma once

#include <pthread.h>

#include <cereal/types/string.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "ferry/ipc/deadline.hpp"
#include "ferry/shared/error.hpp"
#include "ferry/shared/session.hpp"

namespace ferry::ipc {
class Condition;
namespace os {
class ShmObject;  // src/os_util.hpp
}

namespace detail {

// Which primitive a segment holds; open() refuses a segment of another kind.
enum class SyncKind : std::uint16_t {
  lock = 1,
  rlock,
  semaphore,
  bounded_semaphore,
  event,
  condition,
  barrier,
  value,
  array,
};

// A mapped, named shared-memory segment with a small header (magic, kind, layout size,
// ready flag). The creator initialises the payload and then publish()es it; open() waits
// (briefly, bounded) for that, so an opener never sees a half-built primitive. The mapping
// itself is the shared-memory object the shm transports use too (src/os_util.hpp).
class Segment {
 public:
  // Out of line: the mapping's type is private to the library.
  Segment() noexcept;
  Segment(Segment&& o) noexcept;
  Segment& operator=(Segment&& o) noexcept;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment();  // unmaps; the creator's handle also removes the name

  // name: the user's name (without the session prefix); payload: bytes after the header.
  static Result<Segment> create(std::string_view name, SyncKind kind, std::size_t payload);
  // shm_object: the full object name "ferry.<session>.<name>" (what handles serialize).
  static Result<Segment> open(const std::string& shm_object, SyncKind kind, std::size_t payload);

  void publish() noexcept;  // creator: payload is initialised
  void* payload() const noexcept;
  const std::string& shm_object() const noexcept;  // "" for an empty handle
  std::size_t payload_size() const noexcept;
  bool valid() const noexcept { return obj_ != nullptr; }
  bool creator() const noexcept { return creator_; }

 private:
  std::unique_ptr<os::ShmObject> obj_;
  bool creator_ = false;
};

// A PTHREAD_PROCESS_SHARED + PTHREAD_MUTEX_ROBUST mutex: when its owner dies, the kernel
// hands it to the next locker with EOWNERDEAD instead of leaving everyone blocked.
struct RobustMutex {
  pthread_mutex_t m;
};

Status init_mutex(RobustMutex& m);
// ok; owner_died (acquired: the previous owner died holding it, call consistent() or the
// mutex becomes unrecoverable at unlock); would_block (try form); timeout; broken (a previous
// recovering owner unlocked without consistent(): the mutex can never be locked again).
Status lock_mutex(RobustMutex& m, Deadline d) noexcept;
// invalid_argument if the caller does not own it.
Status unlock_mutex(RobustMutex& m) noexcept;
Status make_mutex_consistent(RobustMutex& m) noexcept;
// True if the calling thread owns m (reads the owner tid the kernel keeps in the futex word).
bool mutex_owned_by_me(const RobustMutex& m) noexcept;

Status check_name(std::string_view name);

// Every primitive's open(name): checks the name, then opens the session's object by its full
// name (Handle::open_object, which handles deserialized by name use too).
template <class Handle>
Result<Handle> open_named(std::string_view name) {
  if (auto c = check_name(name); !c) return std::move(c).error();
  return Handle::open_object(::ferry::shm_name(name));
}

// A pointer into a mapping that is null in a moved-from handle (so a moved-from handle is
// recognisably empty instead of dangling).
template <class T>
struct MovePtr {
  T* p = nullptr;
  MovePtr() = default;
  MovePtr(T* q) noexcept : p(q) {}  // NOLINT: implicit by design
  MovePtr(MovePtr&& o) noexcept : p(std::exchange(o.p, nullptr)) {}
  MovePtr& operator=(MovePtr&& o) noexcept {
    p = std::exchange(o.p, nullptr);
    return *this;
  }
  T* operator->() const noexcept { return p; }
  T& operator*() const noexcept { return *p; }
  explicit operator bool() const noexcept { return p != nullptr; }
};

}  // namespace detail

// Holds a Lock (or the lock of a Condition, Value or Array) and releases it when destroyed.
// owner_died(): the lock was taken over from a process (or thread) that died holding it; the
// data it protects may be half-updated. Repair it, then call make_consistent(); releasing
// without doing so marks the lock unrecoverable and every later acquire returns Broken
// (POSIX robust-mutex semantics: nobody is ever handed data known to be inconsistent).
class [[nodiscard]] LockGuard {
 public:
  LockGuard() = default;
  LockGuard(LockGuard&& o) noexcept
      : m_(std::exchange(o.m_, nullptr)), died_(std::exchange(o.died_, false)) {}
  LockGuard& operator=(LockGuard&& o) noexcept {
    if (this != &o) {
      unlock();
      m_ = std::exchange(o.m_, nullptr);
      died_ = std::exchange(o.died_, false);
    }
    return *this;
  }
  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;
  ~LockGuard() { unlock(); }

  bool owns_lock() const noexcept { return m_ != nullptr; }
  explicit operator bool() const noexcept { return owns_lock(); }
  bool owner_died() const noexcept { return died_; }
  Status make_consistent() noexcept;
  void unlock() noexcept;

  // Takes the lock of m within d; the guard owns it on ok and on owner_died.
  static Result<LockGuard> acquire(detail::RobustMutex& m, Deadline d);
  detail::RobustMutex* mutex() const noexcept { return m_; }

 private:
  friend class Condition;  // wait() drops and retakes the lock under the guard
  LockGuard(detail::RobustMutex* m, bool died) noexcept : m_(m), died_(died) {}
  detail::RobustMutex* m_ = nullptr;
  bool died_ = false;
};

// Every primitive's handle serializes as its shm object name, so a task can take it as an
// argument and open the same primitive in a worker on the same host.
#define FERRY_SYNC_SERIALIZE_BY_NAME(Type)                            \
  template <class Archive>                                            \
  void save(Archive& ar) const {                                      \
    ar(seg_.shm_object());                                            \
  }                                                                   \
  template <class Archive>                                            \
  void load(Archive& ar) {                                            \
    std::string n;                                                    \
    ar(n);                                                            \
    auto opened = Type::open_object(n);                               \
    if (!opened) throw ::ferry::Exception(std::move(opened).error()); \
    *this = std::move(*opened);                                       \
  }

}  // namespace ferry::ipc
