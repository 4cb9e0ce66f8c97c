// The pool workloads both pool suites time (local workers in bench_pool, remote workers in
// bench_remote): tiny square tasks whose results are checked, so an empty or wrong run cannot
// pass for a fast one. Called from the bench's main thread; the Pool is the caller's.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "ferry/ferry.hpp"

namespace ferry::bench {

// Submits square(0..n-1) as n futures, then collects them: tasks per second.
// Throws std::runtime_error ("<what>: wrong results") if the sum is not the expected one.
double submit_rate(Pool& pool, std::int64_t n, std::string_view what);

// `iters` synchronous apply(square) round trips, after a tenth as many for warm-up: each
// round trip in microseconds. Throws std::runtime_error on a wrong result.
std::vector<double> apply_rtt_us(Pool& pool, int iters, std::string_view what);

}  // namespace ferry::bench
