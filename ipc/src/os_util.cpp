#include "os_util.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace ferry::ipc::os {

static_assert(std::is_same_v<Clock::duration, std::chrono::nanoseconds>);

void futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected, Deadline d,
                Clock::duration slice) noexcept {
  if (d.is_now()) return;
  Clock::duration left = d.remaining();
  if (!d.is_never() && left <= Clock::duration::zero()) return;
  if (slice > Clock::duration::zero() && slice < left) left = slice;
  timespec ts{};
  const timespec* tp = nullptr;  // no timeout
  if (left != Clock::duration::max()) {
    const auto s = std::chrono::duration_cast<std::chrono::seconds>(left);
    ts.tv_sec = static_cast<time_t>(s.count());
    ts.tv_nsec = static_cast<long>((left - s).count());
    tp = &ts;
  }
  // EAGAIN (the word already changed), EINTR and ETIMEDOUT all just mean "re-check".
  ::syscall(SYS_futex, reinterpret_cast<const std::uint32_t*>(&word), FUTEX_WAIT, expected, tp,
            nullptr, 0);
}

void futex_wake(std::atomic<std::uint32_t>& word, std::uint32_t n) noexcept {
  const int count = n > static_cast<std::uint32_t>(INT_MAX) ? INT_MAX : static_cast<int>(n);
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, count, nullptr, nullptr,
            0);
}

bool read_proc(pid_t pid, ProcStat& out) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[1024];
  const auto n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  // The command name (field 2) may contain spaces and ')'; fields resume after the last ')'.
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr || p[1] == '\0') return false;
  p += 2;
  out.state = *p;
  // Skip from field 3 (state) to field 22 (starttime).
  for (int field = 3; field < 22; ++field) {
    p = std::strchr(p, ' ');
    if (p == nullptr) return false;
    ++p;
  }
  char* end = nullptr;
  out.start_ticks = std::strtoull(p, &end, 10);
  return end != p;
}

std::uint64_t self_start_ticks() noexcept {
  // Cached per pid: a child made by fork() inherits the cache but has its own start time, and
  // publishing the parent's would make peers take the child for dead.
  static std::atomic<pid_t> cached_pid{0};
  static std::atomic<std::uint64_t> cached_ticks{0};
  const pid_t self = ::getpid();
  if (cached_pid.load(std::memory_order_acquire) == self) {
    return cached_ticks.load(std::memory_order_relaxed);
  }
  ProcStat st;
  const std::uint64_t ticks = read_proc(self, st) ? st.start_ticks : 0;
  cached_ticks.store(ticks, std::memory_order_relaxed);
  cached_pid.store(self, std::memory_order_release);
  return ticks;
}

bool process_alive(pid_t pid, std::uint64_t start_ticks) noexcept {
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  ProcStat st;
  if (!read_proc(pid, st)) return false;
  if (st.state == 'Z' || st.state == 'X' || st.state == 'x') return false;  // exited, unreaped
  return start_ticks == 0 || st.start_ticks == start_ticks;
}

Status check_object_name(std::string_view name) {
  if (name.empty() || name.size() > 200 || name.find('/') != std::string_view::npos ||
      name.find('\0') != std::string_view::npos) {
    return Error(Errc::invalid_argument, "shared-memory names are 1-200 characters without '/': '" +
                                             std::string(name) + "'");
  }
  return {};
}

ShmObject::ShmObject(ShmObject&& o) noexcept
    : name_(std::move(o.name_)),
      base_(std::exchange(o.base_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      unlinked_(std::exchange(o.unlinked_, false)) {}

ShmObject& ShmObject::operator=(ShmObject&& o) noexcept {
  if (this != &o) {
    reset();
    name_ = std::move(o.name_);
    base_ = std::exchange(o.base_, nullptr);
    size_ = std::exchange(o.size_, 0);
    unlinked_ = std::exchange(o.unlinked_, false);
  }
  return *this;
}

ShmObject::~ShmObject() {
  reset();
}

void ShmObject::reset() noexcept {
  if (base_ != nullptr) ::munmap(base_, size_);
  base_ = nullptr;
  size_ = 0;
}

bool ShmObject::unlink() noexcept {
  if (unlinked_ || name_.empty()) return false;
  unlinked_ = true;
  return ::shm_unlink(("/" + name_).c_str()) == 0;
}

Result<ShmObject> ShmObject::create(const std::string& name, std::size_t size) {
  const std::string path = "/" + name;
  // O_CLOEXEC: a process spawned by another thread meanwhile must not inherit the fd.
  const int fd = ::shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int e = errno;
    if (e == EEXIST) return Error(Errc::already_exists, "/dev/shm" + path + " exists", e);
    return system_error("shm_open " + path, e);
  }
  ShmObject s;
  s.name_ = name;  // from here on, failing paths unlink the name again
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    const int e = errno;
    ::close(fd);
    s.unlink();
    return system_error("ftruncate " + path, e);
  }
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int e = errno;
  ::close(fd);  // the mapping keeps the object
  if (p == MAP_FAILED) {
    s.unlink();
    return system_error("mmap " + path, e);
  }
  s.base_ = p;
  s.size_ = size;
  return s;
}

Result<ShmObject> ShmObject::open(const std::string& name, std::size_t min_size) {
  const std::string path = "/" + name;
  const int fd = ::shm_open(path.c_str(), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) {
    const int e = errno;
    if (e == ENOENT) return Error(Errc::not_found, "/dev/shm" + path + " does not exist", e);
    return system_error("shm_open " + path, e);
  }
  struct stat st {};
  auto sized = [&] {
    return ::fstat(fd, &st) == 0 && static_cast<std::size_t>(st.st_size) >= min_size;
  };
  if (!(min_size == 0 ? ::fstat(fd, &st) == 0 : wait_briefly(sized))) {
    const int e = errno;
    ::close(fd);
    if (min_size == 0) return system_error("fstat " + path, e);
    return Error(Errc::invalid_argument,
                 "/dev/shm" + path + " is smaller than " + std::to_string(min_size) + " bytes");
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int e = errno;
  ::close(fd);
  if (p == MAP_FAILED) return system_error("mmap " + path, e);
  ShmObject s;
  s.name_ = name;
  s.base_ = p;
  s.size_ = size;
  return s;
}

}  // namespace ferry::ipc::os
