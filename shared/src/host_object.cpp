// Host copies of fetched objects (host_object.hpp): claim, fetch, publish, map, release.
#include "host_object.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "ferry/shared/session.hpp"

namespace ferry::detail {
namespace {

constexpr const char* kShmDir = "/dev/shm/";

std::string path_of(const std::string& name) {
  return kShmDir + name;
}

// How long a process waits for another's claim to complete before fetching privately
// ($FERRY_HOST_FETCH_WAIT_MS; the claimer's own fetch has per-chunk deadlines, and a claimer
// that dies is noticed at once, so this bounds only a slow, live one).
std::chrono::milliseconds wait_limit() {
  if (const char* e = std::getenv("FERRY_HOST_FETCH_WAIT_MS")) {
    char* end = nullptr;
    const auto v = std::strtoull(e, &end, 10);
    if (end != e && *end == '\0') return std::chrono::milliseconds(v);
  }
  return std::chrono::milliseconds(120'000);
}

// FNV-1a: a short, stable name part for the coordinator's identity (not a security measure:
// the copy's size is checked, and names carry the coordinator's session besides).
std::string hash_hex(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h));
  return out;
}

// Object names come from the wire: only plain characters make a file name here.
bool plain_name(const std::string& n) {
  if (n.empty() || n.size() > 200) return false;
  for (char c : n) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

bool same_file(int fd, const std::string& path) {
  struct stat a {
  }, b{};
  return ::fstat(fd, &a) == 0 && ::stat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
         a.st_ino == b.st_ino;
}

// Unlinks `path` if this process can hold `fd` (open on it) exclusively: nobody else holds the
// file, and the name still is this file. Closes nothing.
bool unlink_if_unheld(int fd, const std::string& path) {
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) return false;
  return same_file(fd, path) && ::unlink(path.c_str()) == 0;
}

Error unsupported(std::string why) {
  return Error{Errc::unsupported, std::move(why)};
}

std::shared_ptr<HostMapping> map_fd(int fd, std::uint64_t size, int prot, int& err) {
  auto m = std::make_shared<HostMapping>();
  if (size == 0) return m;
  void* p = ::mmap(nullptr, size, prot, MAP_SHARED | (prot == PROT_READ ? MAP_POPULATE : 0), fd, 0);
  if (p == reinterpret_cast<void*>(std::intptr_t{-1})) {  // MAP_FAILED
    err = errno;
    return nullptr;
  }
  m->p = p;
  m->n = size;
  return m;
}

enum class Found { mapped, absent, retry, failed };

// Maps the complete copy if there is one, holding it shared.
Found map_complete(const std::string& copy, std::uint64_t size, HostCopy& out, Error& why) {
  const int fd = ::open(path_of(copy).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return Found::absent;
    why = unsupported("cannot open host copy " + copy + ": " + std::strerror(errno));
    return Found::failed;
  }
  // An exclusive holder is one removing it (a release or the sweep): a moment.
  if (::flock(fd, LOCK_SH | LOCK_NB) != 0) {
    ::close(fd);
    return Found::retry;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_nlink == 0) {
    ::close(fd);  // removed between open and lock: look again
    return Found::retry;
  }
  if (static_cast<std::uint64_t>(st.st_size) != size) {
    ::close(fd);
    why = unsupported("host copy " + copy + " holds " + std::to_string(st.st_size) +
                      " bytes, the ref says " + std::to_string(size));
    return Found::failed;
  }
  int err = 0;
  auto m = map_fd(fd, size, PROT_READ, err);
  if (!m) {
    ::close(fd);
    why = unsupported("cannot map host copy " + copy + ": " + std::strerror(err));
    return Found::failed;
  }
  out.bytes = std::move(m);
  out.hold = std::make_shared<HostLock>(fd, path_of(copy));
  out.fetched = false;
  return Found::mapped;
}

enum class Claim { fetched, taken, failed };

// Claims the object (an unnamed file, locked, room reserved, then linked under the claim name:
// nobody sees the claim unlocked while this process lives), fetches into it and publishes it.
Claim claim_and_fetch(const ObjectFetcher& fetch, const std::string& name, const std::string& claim,
                      const std::string& copy, std::uint64_t size, HostCopy& out, Error& why,
                      bool& fetch_failed) {
  const int fd = ::open(kShmDir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    why = unsupported(std::string("no unnamed files in /dev/shm: ") + std::strerror(errno));
    return Claim::failed;
  }
  auto give_up = [&](Error e) {
    ::close(fd);
    why = std::move(e);
    return Claim::failed;
  };
  (void)::flock(fd, LOCK_SH);  // a new file: nobody else can hold it
  if (size > 0) {
    // Reserve every page first: writing into a sparse file on a full /dev/shm is a SIGBUS.
    // statvfs first, so an object that cannot fit is refused without filling /dev/shm.
    struct statvfs vs {};
    if (::fstatvfs(fd, &vs) == 0 &&
        static_cast<unsigned long long>(vs.f_bavail) * vs.f_frsize < size) {
      return give_up(Error{Errc::no_space, "no room in /dev/shm for a host copy of " + name + " (" +
                                               std::to_string(size) + " bytes)"});
    }
    if (const int e = ::posix_fallocate(fd, 0, static_cast<off_t>(size)); e != 0) {
      return give_up(Error{e == ENOSPC ? Errc::no_space : Errc::system_error,
                           "cannot reserve " + std::to_string(size) +
                               " bytes in /dev/shm for a host copy of " + name + ": " +
                               std::strerror(e),
                           e});
    }
  }
  const std::string self = "/proc/self/fd/" + std::to_string(fd);
  if (::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, path_of(claim).c_str(), AT_SYMLINK_FOLLOW) != 0) {
    const int e = errno;
    ::close(fd);
    if (e == EEXIST) return Claim::taken;
    why = unsupported("cannot link a claim in /dev/shm: " + std::string(std::strerror(e)));
    return Claim::failed;
  }
  // A claimer may have published between this process's look for the copy and its link (the
  // claim name is free again once renamed): then the copy is there, so map it, not fetch again.
  if (struct stat st{}; ::stat(path_of(copy).c_str(), &st) == 0) {
    ::unlink(path_of(claim).c_str());
    ::close(fd);
    return Claim::taken;
  }
  int err = 0;
  auto m = map_fd(fd, size, PROT_READ | PROT_WRITE, err);
  auto* into = m ? static_cast<std::uint8_t*>(m->p) : nullptr;
  Status got = m ? fetch(name, size,
                         [into](std::uint64_t offset, ByteView bytes) {
                           if (!bytes.empty())
                             std::memcpy(into + offset, bytes.data(), bytes.size());
                         })
                 : Status(Error{Errc::system_error,
                                "cannot map a claim: " + std::string(std::strerror(err)), err});
  if (!got) {
    // Ours to remove: the waiters see the claim go and try for themselves.
    ::unlink(path_of(claim).c_str());
    ::close(fd);
    why = got.error();
    fetch_failed = true;
    return Claim::failed;
  }
  if (size > 0) (void)::mprotect(m->p, m->n, PROT_READ);
  // Published only now, whole. A copy already there (another claim after a stale one) wins;
  // this process keeps its bytes privately.
  if (::renameat2(AT_FDCWD, path_of(claim).c_str(), AT_FDCWD, path_of(copy).c_str(),
                  RENAME_NOREPLACE) != 0) {
    ::unlink(path_of(claim).c_str());
  }
  out.bytes = std::move(m);
  out.hold = std::make_shared<HostLock>(fd, path_of(copy));
  out.fetched = true;
  return Claim::fetched;
}

// A claim whose claimer is gone (nobody holds it) is removed; true if it is still live.
bool claim_live(const std::string& claim) {
  const int fd = ::open(path_of(claim).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return false;
  const bool dead = unlink_if_unheld(fd, path_of(claim));
  struct stat st {};
  const bool renamed =
      !dead && (::fstat(fd, &st) != 0 || st.st_nlink == 0 || !same_file(fd, path_of(claim)));
  ::close(fd);
  return !dead && !renamed;
}

}  // namespace

HostLock::~HostLock() {
  // Converting the shared lock drops it first: if another holder is there, the lock fails
  // and this process simply lets go; if not, nobody can take the copy before it is unlinked.
  (void)unlink_if_unheld(fd_, name_);
  ::close(fd_);
}

HostMapping::~HostMapping() {
  if (p != nullptr) ::munmap(p, n);
}

bool host_copies_enabled() {
  const char* e = std::getenv("FERRY_HOST_OBJECTS");
  return e == nullptr || std::strcmp(e, "0") != 0;
}

Result<HostCopy> host_copy(const ObjectFetcher& fetch, const std::string& key,
                           const std::string& name, std::uint64_t size) {
  if (!plain_name(name)) return unsupported("object name " + name + " is not a plain file name");
  // "ferry.<session>.obj-<n>" -> "<session>.obj-<n>" (the session stays in the name).
  const std::string rest = name.rfind("ferry.", 0) == 0 ? name.substr(6) : name;
  const std::string tail = hash_hex(key) + "." + rest;
  const std::string copy = kHostCopyPrefix + tail;
  const std::string claim = kHostClaimPrefix + tail;
  const auto deadline = std::chrono::steady_clock::now() + wait_limit();
  auto pause = std::chrono::microseconds(200);
  for (;;) {
    HostCopy out;
    Error why;
    switch (map_complete(copy, size, out, why)) {
      case Found::mapped:
        return out;
      case Found::failed:
        return why;
      case Found::retry:
        break;
      case Found::absent: {
        // Another process fetching it: wait while it lives (a dead claimer's claim is
        // removed here, and this process claims it instead).
        if (claim_live(claim)) break;
        bool fetch_failed = false;
        switch (claim_and_fetch(fetch, name, claim, copy, size, out, why, fetch_failed)) {
          case Claim::fetched:
            return out;
          case Claim::failed:
            if (fetch_failed) return why;
            return unsupported(why.message());
          case Claim::taken:
            continue;  // claimed a moment ago by another: look again
        }
        break;
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return unsupported("another process on this host was still fetching " + name + " after " +
                         std::to_string(wait_limit().count()) + " ms");
    }
    // A file lock has no timed wait and no wake-up on rename: poll, briefly at first.
    std::this_thread::sleep_for(pause);
    pause = std::min<std::chrono::microseconds>(pause * 2, std::chrono::milliseconds(20));
  }
}

}  // namespace ferry::detail

namespace ferry {

std::vector<std::string> sweep_host_copies() {
  std::vector<std::string> names;
  if (DIR* dir = ::opendir("/dev/shm")) {
    while (const dirent* e = ::readdir(dir)) {
      const std::string_view n = e->d_name;
      if (n.starts_with(detail::kHostCopyPrefix) || n.starts_with(detail::kHostClaimPrefix))
        names.emplace_back(n);
    }
    ::closedir(dir);
  }
  std::vector<std::string> removed;
  for (const auto& n : names) {
    const std::string path = detail::path_of(n);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) continue;
    // Held by a live process (or being removed by one): not ours to judge.
    if (detail::unlink_if_unheld(fd, path)) removed.push_back(n);
    ::close(fd);
  }
  return removed;
}

}  // namespace ferry
