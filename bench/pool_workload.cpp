#include "pool_workload.hpp"

#include <stdexcept>
#include <string>

#include "harness.hpp"

namespace ferry::bench {
namespace {

// Sum of squares 0..n-1, to check the work was really done.
std::int64_t sum_of_squares(std::int64_t n) {
  return (n - 1) * n * (2 * n - 1) / 6;
}

}  // namespace

double submit_rate(Pool& pool, std::int64_t n, std::string_view what) {
  std::vector<Future<std::int64_t>> fs;
  fs.reserve(static_cast<std::size_t>(n));
  const auto t0 = Clock::now();
  for (std::int64_t i = 0; i < n; ++i)
    fs.push_back(pool.submit(builtin::square, i));
  std::int64_t sum = 0;
  for (auto& f : fs)
    sum += f.get();
  const double secs = seconds_since(t0);
  if (sum != sum_of_squares(n)) throw std::runtime_error(std::string(what) + ": wrong results");
  return static_cast<double>(n) / secs;
}

std::vector<double> apply_rtt_us(Pool& pool, int iters, std::string_view what) {
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(iters));
  for (int i = -iters / 10; i < iters; ++i) {  // first 10% warm up
    const auto t0 = Clock::now();
    const auto r = pool.apply(builtin::square, std::int64_t{i});
    if (i >= 0) us.push_back(seconds_since(t0) * 1e6);
    if (r != std::int64_t{i} * i) throw std::runtime_error(std::string(what) + ": wrong result");
  }
  return us;
}

}  // namespace ferry::bench
