// `ferry-coordinator map TASK ...` and `tasks`: run a registered task over items given on the
// command line or stdin, print one result per line (input order unless unordered), failures on
// stderr with their input, a progress bar and a summary on stderr (JSON lines with --json).
// A --stdin line that cannot be read as the task's arguments (or is over --max-line) is a
// failed item, reported with its line number; the other lines still run.
//
// Exit status (DESIGN.md): 0 all succeeded, 1 some failed, 2 usage error, 130 interrupted
// (SIGINT or SIGTERM: the pool is cancelled, workers get SIGTERM then SIGKILL).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ferry/coordinator/options.hpp"

namespace ferry::coordinator {

struct MapArgs {
  std::string task;
  std::string range;               // "A:B" (A inclusive, B exclusive)
  std::vector<std::string> items;  // --items X,Y,...
  bool from_stdin = false;
  std::size_t chunksize = 0;  // 0: automatic
  bool unordered = false;
  // How --stdin lines are read: "text" (one number or string per line, for one-parameter
  // tasks) or "json" (one JSON value per line, any parameters; task_json.hpp).
  std::string input = "text";
  // --stdin lines longer than this are failed items, skipped without being held in memory.
  std::optional<std::size_t> max_line;
};

inline constexpr std::size_t kDefaultMaxLine = std::size_t{16} << 20;
inline constexpr std::size_t kMaxMaxLine = std::size_t{1} << 30;

int map_command(const MapArgs& args, const Options& opt);
int tasks_command(const Options& opt);

}  // namespace ferry::coordinator
