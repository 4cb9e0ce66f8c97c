#include "fd_limits.hpp"

#include <dirent.h>
#include <sys/resource.h>

#include <cerrno>
#include <string>

namespace ferry::ipc::fd_limits {

Usage usage() noexcept {
  Usage u;
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return u;
  u.limit = static_cast<std::size_t>(rl.rlim_cur);
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) {
    // EMFILE: not even one more descriptor. Anything else (no /proc): unknown, so no check.
    if (errno == EMFILE) {
      u.open = u.limit;
    } else {
      u.limit = 0;
    }
    return u;
  }
  std::size_t n = 0;
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(dir);
  u.open = n > 0 ? n - 1 : 0;  // the directory's own descriptor was one of them
  return u;
}

namespace {
std::string in_use(const Usage& u) {
  return std::to_string(u.open) + " of " + std::to_string(u.limit) +
         " file descriptors in use; raise `ulimit -n` (RLIMIT_NOFILE) or close some";
}
}  // namespace

Status check_headroom(std::string_view what, std::size_t needed) {
  const Usage u = usage();
  if (u.limit == 0 || u.open + needed <= u.limit) return {};
  return Error{Errc::too_many_open_files,
               std::string(what) + ": needs about " + std::to_string(needed) +
                   " more file descriptors, but " + in_use(u),
               EMFILE};
}

Error os_error(std::string_view what, int err) {
  if (err == EMFILE) {
    return Error{Errc::too_many_open_files, std::string(what) + ": " + in_use(usage()), err};
  }
  if (err == ENFILE) {
    return Error{
        Errc::too_many_open_files,
        std::string(what) + ": the system-wide limit on open files is reached (fs.file-max)", err};
  }
  return system_error(what, err);
}

}  // namespace ferry::ipc::fd_limits
