// `ferry-coordinator map TASK ...` and `tasks`: run a registered task over items given on the
// command line or stdin, print one result per line (input order unless unordered), failures on
// stderr with their input, a progress bar and a summary on stderr (JSON lines with --json).
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
};

int map_command(const MapArgs& args, const Options& opt);
int tasks_command(const Options& opt);

}  // namespace ferry::coordinator
