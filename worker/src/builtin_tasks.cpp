// The tasks every ferry binary knows (DESIGN.md, "Built-in tasks").
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>

#include "ferry/shared/task.hpp"
#include "ferry/worker/builtin_tasks.hpp"
#include "ferry/worker/runtime.hpp"

namespace ferry::builtin {

std::int64_t square(std::int64_t x) {
  return x * x;
}

std::int64_t sleep_ms(std::int64_t ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

std::int64_t spin_ms(std::int64_t ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  volatile std::uint64_t sink = 0;
  while (std::chrono::steady_clock::now() < until) {
    for (int i = 0; i < 1000; ++i)
      sink = sink + static_cast<std::uint64_t>(i);
  }
  return ms;
}

// Trial division: deliberately CPU-bound and the same work on every platform.
std::int64_t count_primes(std::int64_t n) {
  std::int64_t count = 0;
  for (std::int64_t k = 2; k < n; ++k) {
    bool prime = true;
    for (std::int64_t d = 2; d * d <= k; ++d) {
      if (k % d == 0) {
        prime = false;
        break;
      }
    }
    count += prime ? 1 : 0;
  }
  return count;
}

std::int64_t fail(std::int64_t x) {
  throw std::runtime_error("task fail(" + std::to_string(x) + ") failed as asked");
}

// Dies abruptly, as a segfault or an OOM kill would: no unwinding, no reply.
std::int64_t crash(std::int64_t) {
  std::raise(SIGKILL);
  _exit(137);
}

Bytes blob(std::int64_t n) {
  if (n < 0) throw std::invalid_argument("blob size must be >= 0, got " + std::to_string(n));
  Bytes b(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < b.size(); ++i)
    b[i] = static_cast<std::uint8_t>(i * 131 + 7);
  return b;
}

Summary stats(Sample s) {
  if (s.values.empty()) {
    throw std::invalid_argument("stats of '" + s.label + "': no values to summarize");
  }
  Summary r;
  r.label = std::move(s.label);
  r.count = s.values.size();
  const auto [lo, hi] = std::minmax_element(s.values.begin(), s.values.end());
  r.min = *lo;
  r.max = *hi;
  // Welford's running mean and variance: stable where a sum of squares would cancel.
  double mean = 0, m2 = 0;
  std::uint64_t n = 0;
  for (double v : s.values) {
    ++n;
    const double delta = v - mean;
    mean += delta / static_cast<double>(n);
    m2 += delta * (v - mean);
  }
  r.mean = mean;
  r.stddev = std::sqrt(m2 / static_cast<double>(n));
  return r;
}

std::string repeat(std::string text, std::int64_t times) {
  constexpr std::int64_t kMaxTimes = 1'000'000;
  constexpr std::size_t kMaxBytes = std::size_t{64} << 20;
  if (times < 0 || times > kMaxTimes) {
    throw std::invalid_argument("repeat: times must be 0 to " + std::to_string(kMaxTimes) +
                                ", got " + std::to_string(times));
  }
  const auto n = static_cast<std::size_t>(times);
  if (!text.empty() && n > kMaxBytes / text.size()) {
    throw std::invalid_argument("repeat: " + std::to_string(text.size()) + " bytes x " +
                                std::to_string(n) + " would be over 64 MiB");
  }
  std::string out;
  out.reserve(text.size() * n);
  for (std::size_t i = 0; i < n; ++i)
    out += text;
  return out;
}

}  // namespace ferry::builtin

namespace ferry::worker {

void register_builtin_tasks() {
  static const bool once = [] {
    auto& r = TaskRegistry::instance();
    if (r.frozen()) return false;
    r.add(task_detail::make_entry("square", &builtin::square));
    r.add(task_detail::make_entry("sleep_ms", &builtin::sleep_ms));
    r.add(task_detail::make_entry("spin_ms", &builtin::spin_ms));
    r.add(task_detail::make_entry("count_primes", &builtin::count_primes));
    r.add(task_detail::make_entry("fail", &builtin::fail));
    r.add(task_detail::make_entry("crash", &builtin::crash));
    r.add(task_detail::make_entry("blob", &builtin::blob));
    r.add(task_detail::make_entry("stats", &builtin::stats));
    r.add(task_detail::make_entry("repeat", &builtin::repeat));
    return true;
  }();
  (void)once;
}

}  // namespace ferry::worker
