// Private helpers shared by the shared-memory transports: futex waits on shared words,
// bounded spinning, process liveness, and segment create/open with Boost.Interprocess.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "ferry/ipc/deadline.hpp"
#include "ferry/shared/error.hpp"

namespace ferry::ipc::shm_detail {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#else
  std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
}

// FUTEX_WAIT on a word in shared memory (not FUTEX_PRIVATE: the waker is another process).
// Returns when woken, when *word != expected, on a signal, or after `timeout`.
void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                std::chrono::nanoseconds timeout) noexcept;
void futex_wake(std::atomic<std::uint32_t>& word, int count) noexcept;

// Bumps the futex word and wakes: the bump makes a waiter that has not slept yet return at
// once from FUTEX_WAIT instead of missing the wake.
inline void bump_and_wake(std::atomic<std::uint32_t>& word, int count) noexcept {
  word.fetch_add(1, std::memory_order_seq_cst);
  futex_wake(word, count);
}

struct ProcInfo {
  char state = '?';  // field 3 of /proc/<pid>/stat
  std::uint64_t start_ticks = 0;
};
// Reads /proc/<pid>/stat; false if the process does not exist.
bool read_proc(pid_t pid, ProcInfo& out) noexcept;
std::uint64_t self_start_ticks() noexcept;

// True if pid names a running (not zombie) process that started at start_ticks
// (start_ticks == 0: any start time).
bool process_alive(pid_t pid, std::uint64_t start_ticks) noexcept;

// A pidfd on a peer, opened once its pid and start time are known. A pidfd polls readable
// when the process has exited, zombie or not, so a dead-but-unreaped child counts as dead.
class PeerWatch {
 public:
  PeerWatch() = default;
  PeerWatch(const PeerWatch&) = delete;
  PeerWatch& operator=(const PeerWatch&) = delete;
  ~PeerWatch();
  // Thread-safe: the sending and the receiving thread may both call it.
  bool dead(pid_t pid, std::uint64_t start_ticks) noexcept;

 private:
  std::atomic<int> fd_{-1};
  std::atomic<bool> known_dead_{false};
};

// A mapped shared-memory segment made with Boost.Interprocess. Move-only; unmaps on
// destruction; remove() unlinks the name (idempotent).
class Segment {
 public:
  Segment();
  Segment(Segment&&) noexcept;
  Segment& operator=(Segment&&) noexcept;
  ~Segment();

  static Result<Segment> create(const std::string& name, std::size_t size);
  static Result<Segment> open(const std::string& name);

  std::uint8_t* data() const noexcept;
  std::size_t size() const noexcept;
  const std::string& name() const noexcept { return name_; }
  // Unlinks the name from /dev/shm (the mapping stays valid). Returns true if it was removed
  // by this call.
  bool remove() noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string name_;
  bool removed_ = false;
};

// "shm://<full>" → full; NAME → shm_name(NAME). Refuses names with '/' or empty ones.
Result<std::string> segment_name_of(std::string_view name_or_endpoint);
Result<std::string> new_segment_name(std::string_view name);

// Spins (with pause) while !ready() for at most `spin`, or until the deadline.
template <class Ready>
bool spin_until(Ready&& ready, std::chrono::nanoseconds spin, Deadline d) {
  if (spin.count() <= 0) return ready();
  const auto until =
      std::min(Clock::now() + spin, d.is_never() ? Clock::time_point::max() : d.when());
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
      cpu_relax();
    }
    if (Clock::now() >= until) return ready();
  }
}

}  // namespace ferry::ipc::shm_detail
