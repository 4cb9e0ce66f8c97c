#include "shm_util.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "ferry/shared/session.hpp"

namespace ferry::ipc::shm_detail {

PeerWatch::~PeerWatch() {
  if (const int fd = fd_.load(); fd >= 0) ::close(fd);
}

bool PeerWatch::dead(pid_t pid, std::uint64_t start_ticks) noexcept {
  if (known_dead_.load(std::memory_order_acquire)) return true;
  if (pid <= 0) return false;
  if (pid == ::getpid()) return false;  // both ends in one process (tests, threads)
  int fd = fd_.load(std::memory_order_acquire);
  if (fd < 0) {
    const int nfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (nfd < 0) {
      if (errno == ESRCH) {
        known_dead_.store(true, std::memory_order_release);
        return true;
      }
      // Out of descriptors: nothing can be concluded (/proc needs one too); ask again later,
      // rather than declare a live peer dead.
      if (errno == EMFILE || errno == ENFILE) return ::kill(pid, 0) != 0 && errno == ESRCH;
      // No pidfd (old kernel, seccomp): fall back to /proc.
      const bool gone = !os::process_alive(pid, start_ticks);
      if (gone) known_dead_.store(true, std::memory_order_release);
      return gone;
    }
    ::fcntl(nfd, F_SETFD, FD_CLOEXEC);
    // The pidfd pins whatever process has this pid now; make sure it is the peer and not a
    // process that reused a dead peer's pid.
    os::ProcStat st;
    if (!os::read_proc(pid, st) || (start_ticks != 0 && st.start_ticks != start_ticks)) {
      ::close(nfd);
      known_dead_.store(true, std::memory_order_release);
      return true;
    }
    int expected = -1;
    if (fd_.compare_exchange_strong(expected, nfd)) {
      fd = nfd;
    } else {
      ::close(nfd);
      fd = expected;
    }
  }
  pollfd p{fd, POLLIN, 0};
  const int r = ::poll(&p, 1, 0);
  if (r > 0) {
    known_dead_.store(true, std::memory_order_release);
    return true;
  }
  return false;
}

Result<std::string> new_segment_name(std::string_view name) {
  if (auto st = os::check_object_name(name); !st) return std::move(st).error();
  return shm_name(name);
}

Result<std::string> segment_name_of(std::string_view s) {
  constexpr std::string_view scheme = "shm://";
  if (s.substr(0, scheme.size()) == scheme) {
    s.remove_prefix(scheme.size());
    if (auto st = os::check_object_name(s); !st) return std::move(st).error();
    return std::string(s);
  }
  return new_segment_name(s);
}

}  // namespace ferry::ipc::shm_detail
