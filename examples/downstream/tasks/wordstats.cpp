// A task library: plain functions registered with FERRY_TASK, built with
// ferry_add_task_library (CMakeLists.txt).
#include "wordstats.hpp"

#include <ferry/shared/task.hpp>
#include <sstream>

namespace wordstats {

Stats word_stats(Text text) {
  Stats s{text.title, 0, ""};
  std::istringstream in(text.body);
  for (std::string w; in >> w;) {
    ++s.words;
    if (w.size() > s.longest.size()) s.longest = w;
  }
  return s;
}

FERRY_TASK(word_stats);

}  // namespace wordstats
