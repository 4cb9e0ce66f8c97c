#include "shm_util.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "ferry/shared/session.hpp"

namespace bip = boost::interprocess;

namespace ferry::ipc::shm_detail {

void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                std::chrono::nanoseconds timeout) noexcept {
  if (timeout.count() <= 0) return;
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
  // std::atomic<uint32_t> has the size and alignment of uint32_t, which is what futex needs.
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, expected, &ts, nullptr,
            0);
}

void futex_wake(std::atomic<std::uint32_t>& word, int count) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, count, nullptr, nullptr,
            0);
}

bool read_proc(pid_t pid, ProcInfo& out) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[1024];
  const auto n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  // The command name may contain spaces and ')'; fields resume after the last ')'.
  const char* close = std::strrchr(buf, ')');
  if (close == nullptr || close[1] == '\0') return false;
  const char* p = close + 2;
  out.state = *p;
  // Skip to field 22 (starttime): we are at field 3.
  for (int field = 3; field < 22; ++field) {
    p = std::strchr(p, ' ');
    if (p == nullptr) return false;
    ++p;
  }
  out.start_ticks = std::strtoull(p, nullptr, 10);
  return true;
}

std::uint64_t self_start_ticks() noexcept {
  // Cached per pid: a child made by fork() inherits the cache but has its own start time, and
  // publishing the parent's would make peers take the child for dead.
  struct Cache {
    std::atomic<pid_t> pid{0};
    std::atomic<std::uint64_t> ticks{0};
  };
  static Cache cache;
  const pid_t self = ::getpid();
  if (cache.pid.load(std::memory_order_acquire) == self) {
    return cache.ticks.load(std::memory_order_relaxed);
  }
  ProcInfo pi;
  const std::uint64_t t = read_proc(self, pi) ? pi.start_ticks : 0;
  cache.ticks.store(t, std::memory_order_relaxed);
  cache.pid.store(self, std::memory_order_release);
  return t;
}

bool process_alive(pid_t pid, std::uint64_t start_ticks) noexcept {
  if (pid <= 0) return false;
  if (pid == ::getpid()) return true;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  ProcInfo pi;
  if (!read_proc(pid, pi)) return false;
  if (pi.state == 'Z' || pi.state == 'X' || pi.state == 'x') return false;
  return start_ticks == 0 || pi.start_ticks == start_ticks;
}

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
      // No pidfd (old kernel, seccomp): fall back to /proc.
      const bool gone = !process_alive(pid, start_ticks);
      if (gone) known_dead_.store(true, std::memory_order_release);
      return gone;
    }
    ::fcntl(nfd, F_SETFD, FD_CLOEXEC);
    // The pidfd pins whatever process has this pid now; make sure it is the peer and not a
    // process that reused a dead peer's pid.
    ProcInfo pi;
    if (!read_proc(pid, pi) || (start_ticks != 0 && pi.start_ticks != start_ticks)) {
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

struct Segment::Impl {
  bip::mapped_region region;
};

Segment::Segment() = default;
Segment::Segment(Segment&&) noexcept = default;
Segment& Segment::operator=(Segment&& o) noexcept {
  if (this != &o) {
    impl_ = std::move(o.impl_);
    name_ = std::move(o.name_);
    removed_ = o.removed_;
  }
  return *this;
}
Segment::~Segment() = default;

std::uint8_t* Segment::data() const noexcept {
  return impl_ ? static_cast<std::uint8_t*>(impl_->region.get_address()) : nullptr;
}
std::size_t Segment::size() const noexcept {
  return impl_ ? impl_->region.get_size() : 0;
}

bool Segment::remove() noexcept {
  if (removed_ || name_.empty()) return false;
  removed_ = true;
  try {
    return bip::shared_memory_object::remove(name_.c_str());
  } catch (...) {
    return false;
  }
}

namespace {
Error bip_error(const std::string& what, const bip::interprocess_exception& e) {
  switch (e.get_error_code()) {
    case bip::already_exists_error:
      return Error{Errc::already_exists, what + ": " + e.what()};
    case bip::not_found_error:
      return Error{Errc::not_found, what + ": " + e.what()};
    default:
      return Error{Errc::system_error, what + ": " + e.what(),
                   static_cast<int>(e.get_native_error())};
  }
}
}  // namespace

Result<Segment> Segment::create(const std::string& name, std::size_t size) {
  Segment s;
  s.name_ = name;
  try {
    // The object (its fd) is only needed until the mapping exists.
    bip::shared_memory_object obj(bip::create_only, name.c_str(), bip::read_write);
    s.removed_ = false;
    try {
      obj.truncate(static_cast<bip::offset_t>(size));
      s.impl_ = std::make_unique<Impl>(Impl{bip::mapped_region(obj, bip::read_write)});
    } catch (...) {
      bip::shared_memory_object::remove(name.c_str());
      throw;
    }
  } catch (const bip::interprocess_exception& e) {
    s.removed_ = true;
    return bip_error("create shared memory /dev/shm/" + name, e);
  }
  return s;
}

Result<Segment> Segment::open(const std::string& name) {
  Segment s;
  s.name_ = name;
  s.removed_ = true;  // the opener never unlinks
  try {
    bip::shared_memory_object obj(bip::open_only, name.c_str(), bip::read_write);
    s.impl_ = std::make_unique<Impl>(Impl{bip::mapped_region(obj, bip::read_write)});
  } catch (const bip::interprocess_exception& e) {
    return bip_error("open shared memory /dev/shm/" + name, e);
  }
  return s;
}

namespace {
Status check_name(std::string_view n) {
  if (n.empty()) return Error{Errc::invalid_argument, "empty shared-memory name"};
  if (n.size() > 200) return Error{Errc::invalid_argument, "shared-memory name too long"};
  if (n.find('/') != std::string_view::npos)
    return Error{Errc::invalid_argument, "shared-memory name '" + std::string(n) + "' has a '/'"};
  return {};
}
}  // namespace

Result<std::string> new_segment_name(std::string_view name) {
  if (auto st = check_name(name); !st) return std::move(st).error();
  return shm_name(name);
}

Result<std::string> segment_name_of(std::string_view s) {
  constexpr std::string_view scheme = "shm://";
  if (s.substr(0, scheme.size()) == scheme) {
    s.remove_prefix(scheme.size());
    if (auto st = check_name(s); !st) return std::move(st).error();
    return std::string(s);
  }
  return new_segment_name(s);
}

}  // namespace ferry::ipc::shm_detail
