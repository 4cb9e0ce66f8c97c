#include "tasks_throw.hpp"

#include <stdexcept>
#include <string>

#include "ferry/shared/task.hpp"

namespace tasklib_throw {

[[gnu::noinline]] void lib_throw_here(std::int64_t x) {
  if (x % 2 != 0) throw std::domain_error("odd input " + std::to_string(x));  // kThrowLine
}
const int kThrowLine = __LINE__ - 2;

std::int64_t lib_odd_fails(std::int64_t x) {
  lib_throw_here(x);
  return x;
}

FERRY_TASK(lib_odd_fails);

// Opaque to the optimizer, so the write below is really made.
std::int64_t* volatile g_nowhere = nullptr;

[[gnu::noinline]] void lib_fault_here(std::int64_t x) {
  *g_nowhere = x;  // kFaultLine
}
const int kFaultLine = __LINE__ - 2;

std::int64_t lib_segfaults(std::int64_t x) {
  lib_fault_here(x);
  return x;
}

FERRY_TASK(lib_segfaults);

}  // namespace tasklib_throw
