// Pool behaviour at volume: many tasks through a streaming call with flat memory.
#include <doctest/doctest.h>

#include <fstream>
#include <ranges>
#include <string>

#include "ferry/ferry.hpp"
#include "testing.hpp"

namespace ft = ferry::testing;
using ferry::builtin::square;

namespace {
long rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == "VmRSS:") {
      long v = 0;
      in >> v;
      return v;
    }
    in.ignore(1 << 12, '\n');
  }
  return -1;
}
}  // namespace

TEST_SUITE("coordinator.pool.scale") {
  TEST_CASE("a million tiny tasks through imap_unordered keep coordinator memory flat") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 2});
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
      constexpr int kTasks = 30'000;  // instrumented Debug builds are far slower; the plain
                                      // build asserts the property at a million
#else
      constexpr int kTasks = 1'000'000;
#endif
      std::size_t n = 0;
      std::int64_t sum = 0;
      long rss_warm = 0;
      for (auto& [i, v] : pool.imap_unordered(square, std::views::iota(0, kTasks), 1)) {
        sum += v - static_cast<std::int64_t>(i) * static_cast<std::int64_t>(i);
        if (++n == static_cast<std::size_t>(kTasks / 10)) rss_warm = rss_kib();  // warmed up
      }
      CHECK(n == static_cast<std::size_t>(kTasks));
      CHECK(sum == 0);
      const long rss_end = rss_kib();
      MESSAGE("RSS after " << kTasks / 10 << " tasks: " << rss_warm << " KiB, after " << kTasks
                           << ": " << rss_end << " KiB");
      // Nothing grows with the number of tasks: a leak of even 40 bytes per task would show.
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
      // (Not under sanitizers: ASan's quarantine keeps freed memory resident by design.)
      CHECK(rss_end - rss_warm < 32 * 1024);
#endif
      CHECK(pool.stats().succeeded == static_cast<std::uint64_t>(kTasks));
    }
    leaks.verify();
  }
}
