#include "ferry/shared/memory.hpp"

#include <malloc.h>

#include <cstdlib>

namespace ferry {

bool keep_freed_memory() noexcept {
  if (std::getenv("GLIBC_TUNABLES") || std::getenv("MALLOC_TRIM_THRESHOLD_") ||
      std::getenv("MALLOC_MMAP_THRESHOLD_")) {
    return false;
  }
  // mallopt returns 1 on success; a fixed mmap threshold also ends glibc's dynamic one.
  return ::mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && ::mallopt(M_TRIM_THRESHOLD, 128 << 20) == 1;
}

}  // namespace ferry
