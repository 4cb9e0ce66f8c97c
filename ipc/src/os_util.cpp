#include "os_util.hpp"

#include <boost/interprocess/permissions.hpp>

#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "fd_limits.hpp"

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
      region_(std::move(o.region_)),
      pending_(std::move(o.pending_)),
      total_(std::exchange(o.total_, 0)),
      unlinked_(std::exchange(o.unlinked_, false)) {}

ShmObject& ShmObject::operator=(ShmObject&& o) noexcept {
  if (this != &o) {
    name_ = std::move(o.name_);
    region_ = std::move(o.region_);
    pending_ = std::move(o.pending_);
    total_ = std::exchange(o.total_, 0);
    unlinked_ = std::exchange(o.unlinked_, false);
  }
  return *this;
}

ShmObject::~ShmObject() = default;

bool ShmObject::unlink() noexcept {
  if (unlinked_ || name_.empty()) return false;
  unlinked_ = true;
  // Not Boost's remove(): it builds the path in a std::string and, out of memory, returns
  // false without removing anything, which left names behind when they mattered most.
  char path[512];  // names are at most NAME_MAX (255) bytes
  const int n = std::snprintf(path, sizeof path, "/%s", name_.c_str());
  if (n <= 0 || static_cast<std::size_t>(n) >= sizeof path) return false;
  return ::shm_unlink(path) == 0;
}

namespace {
// Close-on-exec at once: a process spawned by another thread must not inherit the descriptor
// (Boost 1.74 opens without O_CLOEXEC; the object is closed again as soon as it is mapped).
void set_cloexec(const bip::shared_memory_object& shm) noexcept {
  const int fd = shm.get_mapping_handle().handle;
  if (fd >= 0) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
}

Error shm_error(const std::string& what, const bip::interprocess_exception& e) {
  switch (e.get_error_code()) {
    case bip::already_exists_error:
      return Error(Errc::already_exists, "/dev/shm/" + what + " exists", EEXIST);
    case bip::not_found_error:
      return Error(Errc::not_found, "/dev/shm/" + what + " does not exist", ENOENT);
    default:
      break;
  }
  const int err = static_cast<int>(e.get_native_error());
  if (err == EMFILE || err == ENFILE)
    return fd_limits::os_error("shared memory /dev/shm/" + what, err);
  return Error(Errc::system_error, "shared memory /dev/shm/" + what + ": " + e.what(), err);
}

std::string mib(std::uint64_t bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return b;
}

// Gives bytes [from, to) of the object real pages now. A sized but unbacked object maps fine
// and then raises SIGBUS at the first touch of a page that a full /dev/shm cannot supply,
// which may be much later and in another process; reserving turns that into an error here.
// `size` (the whole object) is what the message names.
Status reserve_pages(int fd, const std::string& name, std::size_t from, std::size_t to,
                     std::size_t size) {
  if (to <= from) return {};
  int rc = 0;
  do {
    rc = ::posix_fallocate(fd, static_cast<off_t>(from), static_cast<off_t>(to - from));
  } while (rc == EINTR);
  if (rc == 0) return {};
  if (rc == ENOSPC || rc == ENOMEM || rc == EDQUOT) {
    std::string where = "/dev/shm is full";
    struct statvfs vfs {};
    if (::statvfs("/dev/shm", &vfs) == 0) {
      where += " (" + mib(static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize) + " free of " +
               mib(static_cast<std::uint64_t>(vfs.f_blocks) * vfs.f_frsize) + ")";
    }
    // tmpfs pages are memory: a memory cgroup at its limit says ENOMEM instead.
    if (rc == ENOMEM) where = "out of memory (or at this cgroup's memory limit)";
    return Error(Errc::no_space,
                 where + ": cannot reserve " + mib(size) + " (" + std::to_string(size) +
                     " bytes) for /dev/shm/" + name +
                     "; free some (`ferry-coordinator cleanup` removes stale segments) or ask "
                     "for a smaller segment",
                 rc);
  }
  // No fallocate on this file system (not tmpfs): the pages stay lazy, as before.
  if (rc == EOPNOTSUPP || rc == EINVAL) return {};
  return system_error("posix_fallocate /dev/shm/" + name, rc);
}
}  // namespace

Result<ShmObject> ShmObject::create(const std::string& name, std::size_t size,
                                    std::size_t reserve_now) {
  ShmObject s;
  try {
    // Made and named by Boost.Interprocess; owner-only, like every ferry object.
    bip::shared_memory_object shm(bip::create_only, name.c_str(), bip::read_write,
                                  bip::permissions(0600));
    set_cloexec(shm);
    s.name_ = name;  // from here on, failing paths remove the name again
    s.total_ = size;
    shm.truncate(static_cast<bip::offset_t>(size));
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    const std::size_t now =
        reserve_now >= size ? size : std::min(size, (reserve_now + page - 1) / page * page);
    if (auto st = reserve_pages(shm.get_mapping_handle().handle, name, 0, now, size); !st) {
      s.unlink();
      return std::move(st).error();
    }
    s.region_ = bip::mapped_region(shm, bip::read_write, 0, now);
    if (now < size) s.pending_ = std::move(shm);  // for reserve_rest()
  } catch (const bip::interprocess_exception& e) {
    s.unlink();
    return shm_error(name, e);
  }
  return s;
}

Status ShmObject::reserve_rest() {
  const std::size_t now = size();
  if (now >= total_) return {};
  try {
    if (auto st = reserve_pages(pending_.get_mapping_handle().handle, name_, now, total_, total_);
        !st) {
      unlink();
      return st;
    }
    region_ = bip::mapped_region(pending_, bip::read_write, 0, total_);
  } catch (const bip::interprocess_exception& e) {
    unlink();
    return shm_error(name_, e);
  }
  pending_ = bip::shared_memory_object();  // closes it
  return {};
}

Result<ShmObject> ShmObject::open(const std::string& name, std::size_t min_size) {
  ShmObject s;
  try {
    bip::shared_memory_object shm(bip::open_only, name.c_str(), bip::read_write);
    set_cloexec(shm);
    bip::offset_t size = 0;
    auto sized = [&] {
      return shm.get_size(size) &&
             static_cast<std::size_t>(size) >= std::max<std::size_t>(min_size, 1);
    };
    // A creator may still be sizing it: wait briefly rather than map a short object.
    if (!(min_size == 0 ? shm.get_size(size) : wait_briefly(sized))) {
      return Error(Errc::invalid_argument,
                   "/dev/shm/" + name + " is smaller than " + std::to_string(min_size) + " bytes");
    }
    s.name_ = name;
    s.region_ = bip::mapped_region(shm, bip::read_write, 0, static_cast<std::size_t>(size));
  } catch (const bip::interprocess_exception& e) {
    return shm_error(name, e);
  }
  return s;
}

}  // namespace ferry::ipc::os
