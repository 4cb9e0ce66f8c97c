// Write-once shared-memory objects. Made with shm_open + write(2) rather than through
// ShmObject (Boost.Interprocess, posix_fallocate, then a copy into the mapping): writing
// fills each page once and reports a full /dev/shm as ENOSPC from the write, where
// fallocate would first zero every page and the copy then touch it again.
#include "ferry/ipc/shm_object.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "fd_limits.hpp"
#include "ferry/shared/session.hpp"
#include "os_util.hpp"

namespace ferry::ipc {

namespace {

std::string mib(std::uint64_t bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return b;
}

Error no_space(int err, const std::string& name, std::size_t size) {
  std::string where = "/dev/shm is full";
  struct statvfs vfs {};
  if (::statvfs("/dev/shm", &vfs) == 0) {
    where += " (" + mib(static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize) + " free of " +
             mib(static_cast<std::uint64_t>(vfs.f_blocks) * vfs.f_frsize) + ")";
  }
  if (err == ENOMEM) where = "out of memory (or at this cgroup's memory limit)";
  return Error(Errc::no_space,
               where + ": cannot write a shared-memory object of " + mib(size) + " (" +
                   std::to_string(size) + " bytes) as /dev/shm/" + name +
                   "; free some (`ferry-coordinator cleanup` removes stale segments)",
               err);
}

// MAP_FAILED, without the C cast its macro expands to.
void* map_failed() noexcept {
  return reinterpret_cast<void*>(std::intptr_t{-1});
}

std::string path_of(const std::string& name) {
  return "/" + name;
}

}  // namespace

SharedObject::SharedObject(SharedObject&& o) noexcept
    : name_(std::move(o.name_)),
      size_(std::exchange(o.size_, 0)),
      map_(std::exchange(o.map_, nullptr)),
      owner_(std::exchange(o.owner_, false)),
      unlinked_(std::exchange(o.unlinked_, false)) {}

SharedObject& SharedObject::operator=(SharedObject&& o) noexcept {
  if (this != &o) {
    if (owner_) unlink();
    unmap();
    name_ = std::move(o.name_);
    size_ = std::exchange(o.size_, 0);
    map_ = std::exchange(o.map_, nullptr);
    owner_ = std::exchange(o.owner_, false);
    unlinked_ = std::exchange(o.unlinked_, false);
  }
  return *this;
}

SharedObject::~SharedObject() {
  if (owner_) unlink();
  unmap();
}

void SharedObject::unmap() noexcept {
  if (map_ != nullptr) ::munmap(map_, size_);
  map_ = nullptr;
}

bool SharedObject::unlink() noexcept {
  if (unlinked_ || name_.empty()) return false;
  unlinked_ = true;
  char path[512];
  const int n = std::snprintf(path, sizeof path, "/%s", name_.c_str());
  if (n <= 0 || static_cast<std::size_t>(n) >= sizeof path) return false;
  return ::shm_unlink(path) == 0;
}

Status SharedObject::rename_to(const std::string& name) {
  if (unlinked_ || name_.empty()) {
    return Error{Errc::not_found, "object '" + name_ + "' has no name to move"};
  }
  const std::string from = "/dev/shm/" + name_, to = "/dev/shm/" + name;
  // RENAME_NOREPLACE: another object's name is never taken over.
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) != 0) {
    const int err = errno;
    return Error{err == ENOENT   ? Errc::not_found
                 : err == EEXIST ? Errc::already_exists
                                 : Errc::system_error,
                 "renaming " + from + " to " + to + ": " + std::strerror(err)};
  }
  name_ = name;
  owner_ = true;
  return {};
}

ByteView SharedObject::bytes() const noexcept {
  if (map_ == nullptr) return {};
  return ByteView(static_cast<const std::uint8_t*>(map_), size_);
}

Result<SharedObject> SharedObject::map_into(SharedObject s, int fd, int flags) {
  if (s.size_ > 0) {
    void* p = ::mmap(nullptr, s.size_, PROT_READ, MAP_SHARED | flags, fd, 0);
    if (p == map_failed()) {
      const int err = errno;
      ::close(fd);
      return system_error("mapping /dev/shm/" + s.name_, err);
    }
    s.map_ = p;
  }
  ::close(fd);
  return s;
}

Result<SharedObject> SharedObject::create(const std::string& name, ByteView bytes) {
  if (auto st = os::check_object_name(name); !st) return std::move(st).error();
  const int fd = ::shm_open(path_of(name).c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int err = errno;
    if (err == EEXIST) return Error(Errc::already_exists, "/dev/shm/" + name + " exists", err);
    if (err == ENOSPC) return no_space(err, name, bytes.size());
    return fd_limits::os_error("shared-memory object /dev/shm/" + name, err);
  }
  SharedObject s;
  s.name_ = name;
  s.size_ = bytes.size();
  s.owner_ = true;  // from here on, failing paths remove the name again
  std::size_t done = 0;
  while (done < bytes.size()) {
    // At most 1 GiB per call: Linux writes at most ~2 GiB at once anyway.
    const std::size_t n = std::min<std::size_t>(bytes.size() - done, std::size_t{1} << 30);
    const ssize_t w = ::write(fd, bytes.data() + done, n);
    if (w < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      ::close(fd);
      s.unlink();  // first, so the message counts what is free without it
      if (err == ENOSPC || err == ENOMEM || err == EDQUOT || err == EFBIG) {
        return no_space(err, name, bytes.size());
      }
      return system_error("writing /dev/shm/" + name, err);
    }
    done += static_cast<std::size_t>(w);
  }
  // Read-only: the bytes are final. Not populated: the creator rarely reads them back.
  return map_into(std::move(s), fd, 0);
}

Result<SharedObject> SharedObject::open(const std::string& name, std::size_t size) {
  if (auto st = os::check_object_name(name); !st) {
    return Error(Errc::bad_handle, st.error().detail);
  }
  const int fd = ::shm_open(path_of(name).c_str(), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return Error(Errc::not_found, "/dev/shm/" + name + " does not exist", err);
    return fd_limits::os_error("shared-memory object /dev/shm/" + name, err);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return system_error("fstat /dev/shm/" + name, err);
  }
  if (static_cast<std::uint64_t>(st.st_size) != size) {
    ::close(fd);
    return Error(Errc::bad_handle, "/dev/shm/" + name + " holds " + std::to_string(st.st_size) +
                                       " bytes, the handle says " + std::to_string(size));
  }
  SharedObject s;
  s.name_ = name;
  s.size_ = size;
  return map_into(std::move(s), fd, MAP_POPULATE);
}

std::string new_object_name(std::string_view tag) {
  static std::atomic<std::uint64_t> next{1};
  return shm_name(std::string(tag) + "-" + std::to_string(next.fetch_add(1)));
}

std::size_t remove_objects_with_prefix(std::string_view prefix) {
  if (prefix.empty()) return 0;
  std::vector<std::string> names;
  if (DIR* dir = ::opendir("/dev/shm")) {
    while (const dirent* e = ::readdir(dir)) {
      std::string_view n = e->d_name;
      if (n.substr(0, prefix.size()) == prefix) names.emplace_back(n);
    }
    ::closedir(dir);
  }
  std::size_t removed = 0;
  for (const auto& n : names)
    if (::shm_unlink(path_of(n).c_str()) == 0) ++removed;
  return removed;
}

}  // namespace ferry::ipc
