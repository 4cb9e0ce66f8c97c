// Test task library B: a task named as one of library A's, with another signature.
#include <string>

#include "ferry/shared/task.hpp"

namespace tasklib_b {

std::string lib_triple(std::string s) {
  return s + s + s;
}

FERRY_TASK(lib_triple);

}  // namespace tasklib_b
