// Session ids: which coordinator process made a resource (pid + process start time, so a
// recycled pid is not mistaken for the original). Shared-memory names are
// "ferry.<session>.<name>", with <session> = "<pid>-<start ticks>".
//
// Threading: SessionId is a value; current() is computed once and cached (thread-safe).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ferry {

struct SessionId {
  std::int32_t pid = 0;
  std::uint64_t start_ticks = 0;  // field 22 of /proc/<pid>/stat

  // The calling process's session id: $FERRY_SESSION if set (a coordinator passes its own to
  // the processes it starts), else this process's pid and start time.
  static const SessionId& current();
  // Parses "<pid>-<ticks>"; nullopt if malformed.
  static std::optional<SessionId> parse(std::string_view s);
  // The id of process pid now, if it exists.
  static std::optional<SessionId> of_pid(std::int32_t pid);

  std::string str() const;
  // True while the process that made this id is still running (same pid and start time).
  bool alive() const;
  friend bool operator==(const SessionId&, const SessionId&) = default;
};

// "ferry.<session>.<name>" for the current session.
std::string shm_name(std::string_view name);
std::string shm_name(const SessionId& session, std::string_view name);

// Session named by a shm object name "ferry.<session>.<rest>", if it has that form.
std::optional<SessionId> session_of_shm_name(std::string_view shm_object_name);

// Removes /dev/shm/ferry.* objects whose session is dead (or, with include_live, all of them
// not owned by the calling session). Returns the names removed.
std::vector<std::string> sweep_stale_shm(bool include_live = false);
// Removes the host copies of fetched objects (ferry.hostcopy-*, ferry.hostclaim-*: no session
// part, see ObjectRef) that no process holds any more, whatever include_live says: a copy is
// in use exactly while a process holds a lock on it. sweep_stale_shm() does this too.
std::vector<std::string> sweep_host_copies();

inline constexpr const char* kSessionEnv = "FERRY_SESSION";

}  // namespace ferry
