// keep_freed_memory(): a freed megabyte block stays in the process for the next one, instead
// of going back to the kernel and faulting in again (shared/memory.hpp).
#include <doctest/doctest.h>
#include <malloc.h>

#include <cstdlib>
#include <cstring>

#include "ferry/shared/memory.hpp"

TEST_SUITE("shared.memory") {
  TEST_CASE("an operator's MALLOC_ setting wins: keep_freed_memory leaves the allocator alone") {
    ::setenv("MALLOC_TRIM_THRESHOLD_", "131072", 1);
    CHECK_FALSE(ferry::keep_freed_memory());
    ::unsetenv("MALLOC_TRIM_THRESHOLD_");
  }

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  TEST_CASE("a freed 8 MiB block is kept for reuse (not under a sanitizer's allocator)") {}
#else
  TEST_CASE("a freed 8 MiB block is kept in the heap for reuse, not handed back to the kernel") {
    REQUIRE(ferry::keep_freed_memory());
    constexpr std::size_t kBlock = std::size_t{8} << 20;
    // glibc's default would map this block (over its 128 KiB threshold) and unmap it on free.
    auto* p = static_cast<char*>(std::malloc(kBlock));
    REQUIRE(p != nullptr);
    std::memset(p, 1, kBlock);             // touched: its pages are resident
    CHECK(::mallinfo2().hblkhd < kBlock);  // from the heap, not a mapping of its own
    std::free(p);
    CHECK(::mallinfo2().fordblks >= kBlock);  // kept, free, for the next allocation
  }
#endif
}
