// Private OS helpers shared by the shared-memory transports (shm_*.cpp) and the sync
// primitives (sync_*.cpp): futex waits on words in shared memory, process identity and
// liveness read from /proc, and the mapped POSIX shared-memory object both are built on.
// One copy, so the two cannot drift apart (they once did, and clashed at link time).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>

#include "ferry/ipc/deadline.hpp"
#include "ferry/shared/error.hpp"

namespace ferry::ipc::os {

namespace bip = boost::interprocess;

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t) &&
                  std::atomic<std::uint32_t>::is_always_lock_free,
              "futex words must be plain lock-free 32-bit atomics");

// ---- futex words (shared between processes, so never FUTEX_PRIVATE)

// Sleeps while word == expected until woken, the deadline, or `slice` has passed (zero: no
// cap), whichever is first. Returns at once for Deadline::now() or a passed deadline. Callers
// re-check their condition after every return (wake-ups may be spurious, signals interrupt).
void futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected, Deadline d,
                Clock::duration slice = Clock::duration::zero()) noexcept;
// Wakes up to n sleepers (clamped to INT_MAX).
void futex_wake(std::atomic<std::uint32_t>& word, std::uint32_t n) noexcept;
inline void futex_wake_all(std::atomic<std::uint32_t>& word) noexcept {
  futex_wake(word, UINT32_MAX);
}
// Bumps the word, then wakes: the bump makes a waiter that has read the old value but not
// slept yet return at once from FUTEX_WAIT instead of missing the wake.
inline void bump_and_wake(std::atomic<std::uint32_t>& word, std::uint32_t n) noexcept {
  word.fetch_add(1, std::memory_order_seq_cst);
  futex_wake(word, n);
}

// ---- processes: pid + start time, so a recycled pid is not taken for the process that died

struct ProcStat {
  char state = '?';               // field 3 of /proc/<pid>/stat
  std::uint64_t start_ticks = 0;  // field 22: clock ticks after boot
};
// Reads /proc/<pid>/stat; false if the process does not exist (or the file is unreadable).
bool read_proc(pid_t pid, ProcStat& out) noexcept;
// This process's start time. Cached per pid: a fork()ed child has its own.
std::uint64_t self_start_ticks() noexcept;
// True if pid names a running process (a zombie counts as dead) that started at start_ticks
// (start_ticks == 0: at any time).
bool process_alive(pid_t pid, std::uint64_t start_ticks) noexcept;

// ---- named shared-memory objects (/dev/shm/NAME)

// Bounded wait for another process's initialisation step (between its shm_open and its
// ftruncate, or its publish, there are no more than a few syscalls): short sleeps, ~1 s.
template <class Pred>
bool wait_briefly(Pred ready) {
  for (int i = 0; i < 1000; ++i) {
    if (ready()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return ready();
}

// 1-200 characters, no '/' and no NUL (shm_open would take another name).
Status check_object_name(std::string_view name);

// A POSIX shared-memory object mapped read-write in this process. Move-only; unmaps when
// destroyed. It never unlinks by itself: the owner of the name calls unlink().
class ShmObject {
 public:
  ShmObject() = default;
  ShmObject(ShmObject&& o) noexcept;
  ShmObject& operator=(ShmObject&& o) noexcept;
  ShmObject(const ShmObject&) = delete;
  ShmObject& operator=(const ShmObject&) = delete;
  ~ShmObject();

  // Creates /dev/shm/NAME exclusively (AlreadyExists if taken), mode 0600, `size` zero bytes,
  // mapped. Its pages are reserved (posix_fallocate), so a full /dev/shm is NoSpace here
  // instead of a SIGBUS at some later first touch. On failure the name is removed again.
  // reserve_now < size: only the first reserve_now bytes (rounded up to a page) are reserved
  // and mapped (size() says how many) until reserve_rest(), and the object stays open till
  // then (one descriptor). So a pending object costs a page of memory and address space.
  static Result<ShmObject> create(const std::string& name, std::size_t size,
                                  std::size_t reserve_now = SIZE_MAX);
  // Reserves and maps what create() left out, then closes the object: data() moves. NoSpace as
  // create() (naming the whole object's size); on failure the name is removed again and the
  // first part stays mapped.
  Status reserve_rest();
  // Maps all of an existing object (NotFound if there is none). min_size > 0: waits briefly
  // (at most ~1 s) for a creator that is still sizing it, then InvalidArgument if smaller.
  static Result<ShmObject> open(const std::string& name, std::size_t min_size = 0);

  std::uint8_t* data() const noexcept { return static_cast<std::uint8_t*>(region_.get_address()); }
  std::size_t size() const noexcept { return region_.get_size(); }
  const std::string& name() const noexcept { return name_; }
  // Removes the name from /dev/shm (mappings stay valid). True if this call removed it;
  // later calls do nothing.
  bool unlink() noexcept;

 private:
  std::string name_;
  boost::interprocess::mapped_region region_;  // the mapping
  // Open only while part of it is pending (create's reserve_now); closed once all is mapped.
  boost::interprocess::shared_memory_object pending_;
  std::size_t total_ = 0;  // the object's size
  bool unlinked_ = false;
};

}  // namespace ferry::ipc::os
