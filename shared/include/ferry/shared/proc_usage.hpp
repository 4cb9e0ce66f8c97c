// CPU time and resident memory of a process, read from /proc/PID/stat (one small read, no
// allocation beyond the line): what workers put in their heartbeats and what the coordinator
// reads for its local workers.
//
// Threading/ownership: a pure function over the file system; safe from any thread.
#pragma once

#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

namespace ferry {

struct ProcUsage {
  double cpu_s = 0;             // user + system time
  std::uint64_t rss_bytes = 0;  // resident set size now
};

// pid 0: this process. nullopt if the process is gone or /proc cannot be read.
inline std::optional<ProcUsage> read_proc_usage(pid_t pid = 0) {
  const std::string path = pid == 0 ? "/proc/self/stat" : "/proc/" + std::to_string(pid) + "/stat";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  char buf[1024];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return std::nullopt;
  buf[n] = '\0';
  // The command name (field 2) may hold spaces and parentheses: fields are counted from the
  // last ')'. After it: state (3), ..., utime (14), stime (15), ..., rss (24, in pages).
  const char* p = std::strrchr(buf, ')');
  if (!p) return std::nullopt;
  ++p;
  unsigned long long v[22] = {};
  int field = 3;
  while (*p && field <= 24) {
    while (*p == ' ')
      ++p;
    if (!*p) break;
    char* end = nullptr;
    const unsigned long long x = field == 3 ? 0 : std::strtoull(p, &end, 10);
    if (field >= 3 && field - 3 < 22) v[field - 3] = x;
    while (*p && *p != ' ')
      ++p;
    ++field;
  }
  if (field <= 24) return std::nullopt;
  static const long ticks = ::sysconf(_SC_CLK_TCK);
  static const long page = ::sysconf(_SC_PAGESIZE);
  ProcUsage u;
  u.cpu_s =
      static_cast<double>(v[14 - 3] + v[15 - 3]) / static_cast<double>(ticks > 0 ? ticks : 100);
  u.rss_bytes = v[24 - 3] * static_cast<std::uint64_t>(page > 0 ? page : 4096);
  return u;
}

}  // namespace ferry
