// Private helpers of the shared-memory transports (ring, channel, queue): bounded spinning,
// pidfd peer watches and segment names. Futex waits, process liveness and the mapped
// segment itself come from os_util.hpp, which the sync primitives share.
#pragma once

#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "ferry/ipc/deadline.hpp"
#include "ferry/shared/error.hpp"
#include "os_util.hpp"

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

// "shm://<full>" → full; NAME → shm_name(NAME). Refuses names os::check_object_name refuses.
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
