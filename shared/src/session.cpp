#include "ferry/shared/session.hpp"

#include <dirent.h>
#include <sys/mman.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace ferry {

namespace {
struct ProcState {
  char state = '?';  // R, S, D, Z (zombie: exited, not yet reaped), ...
  std::uint64_t start_ticks = 0;
};

std::optional<ProcState> proc_state_of(std::int32_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!in || !std::getline(in, stat)) return std::nullopt;
  // The command name (field 2) may contain spaces and ')'; fields resume after the last ')'.
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(stat.substr(close + 2));
  ProcState p;
  std::string field;
  // rest starts at field 3 (state); starttime is field 22.
  rest >> p.state;
  for (int i = 4; i < 22; ++i)
    rest >> field;
  if (!(rest >> p.start_ticks)) return std::nullopt;
  return p;
}

std::optional<std::uint64_t> start_ticks_of(std::int32_t pid) {
  auto p = proc_state_of(pid);
  if (!p) return std::nullopt;
  return p->start_ticks;
}
}  // namespace

const SessionId& SessionId::current() {
  static const SessionId id = [] {
    // A coordinator hands its session to the processes it starts, so everything a job makes
    // in /dev/shm carries the coordinator's id and is swept when the coordinator is gone.
    if (const char* env = std::getenv("FERRY_SESSION")) {
      if (auto parsed = parse(env)) return *parsed;
    }
    const auto pid = static_cast<std::int32_t>(::getpid());
    return SessionId{pid, start_ticks_of(pid).value_or(0)};
  }();
  return id;
}

std::optional<SessionId> SessionId::parse(std::string_view s) {
  const auto dash = s.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  SessionId id;
  const auto* b = s.data();
  auto r1 = std::from_chars(b, b + dash, id.pid);
  auto r2 = std::from_chars(b + dash + 1, b + s.size(), id.start_ticks);
  if (r1.ec != std::errc{} || r1.ptr != b + dash || r2.ec != std::errc{} ||
      r2.ptr != b + s.size() || id.pid <= 0) {
    return std::nullopt;
  }
  return id;
}

std::optional<SessionId> SessionId::of_pid(std::int32_t pid) {
  auto t = start_ticks_of(pid);
  if (!t) return std::nullopt;
  return SessionId{pid, *t};
}

std::string SessionId::str() const {
  return std::to_string(pid) + "-" + std::to_string(start_ticks);
}

bool SessionId::alive() const {
  // A zombie has exited: nothing of it will use its segments again.
  auto now = proc_state_of(pid);
  return now && now->start_ticks == start_ticks && now->state != 'Z';
}

std::string shm_name(const SessionId& session, std::string_view name) {
  std::string s = "ferry.";
  s += session.str();
  s += '.';
  s += name;
  return s;
}

std::string shm_name(std::string_view name) {
  return shm_name(SessionId::current(), name);
}

std::optional<SessionId> session_of_shm_name(std::string_view n) {
  constexpr std::string_view prefix = "ferry.";
  if (n.substr(0, prefix.size()) != prefix) return std::nullopt;
  n.remove_prefix(prefix.size());
  const auto dot = n.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  return SessionId::parse(n.substr(0, dot));
}

std::vector<std::string> sweep_stale_shm(bool include_live) {
  std::vector<std::string> removed;
  DIR* dir = ::opendir("/dev/shm");
  if (dir == nullptr) return removed;
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(dir)) {
    std::string_view n = e->d_name;
    if (n.substr(0, 6) == "ferry.") names.emplace_back(n);
  }
  ::closedir(dir);
  for (const auto& n : names) {
    auto sid = session_of_shm_name(n);
    bool stale = false;
    if (!sid) {
      stale = false;  // not ours to judge: a ferry.* name without a session part
    } else if (*sid == SessionId::current()) {
      stale = false;
    } else {
      stale = include_live || !sid->alive();
    }
    if (stale && ::shm_unlink(("/" + n).c_str()) == 0) removed.push_back(n);
  }
  for (auto& n : sweep_host_copies())
    removed.push_back(std::move(n));
  return removed;
}

}  // namespace ferry
