// The built-in tasks (DESIGN.md): registered in every ferry binary by
// ferry::worker::register_builtin_tasks() (ferry::init and the ferry executables call it),
// so they can be submitted by function or by name: pool.submit(ferry::builtin::square, 7).
#pragma once

#include <cereal/cereal.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "ferry/shared/frame.hpp"

namespace ferry::builtin {

// The argument of `stats`: some numbers, and a label that comes back with their summary (so
// that results can be matched to inputs when mapped --unordered). As a JSON line:
//   {"label": "run 1", "values": [3, 1.5, 4]}
struct Sample {
  std::string label;
  std::vector<double> values;
  template <class A>
  void serialize(A& ar) {
    ar(CEREAL_NVP(label), CEREAL_NVP(values));
  }
};

// What `stats` returns; as JSON: {"label": ..., "count": 3, "mean": ..., "min": ..., "max": ...,
// "stddev": ...} (population standard deviation).
struct Summary {
  std::string label;
  std::uint64_t count = 0;
  double mean = 0, min = 0, max = 0, stddev = 0;
  template <class A>
  void serialize(A& ar) {
    ar(CEREAL_NVP(label), CEREAL_NVP(count), CEREAL_NVP(mean), CEREAL_NVP(min), CEREAL_NVP(max),
       CEREAL_NVP(stddev));
  }
};

std::int64_t square(std::int64_t x);
std::int64_t sleep_ms(std::int64_t ms);     // sleeps, returns ms
std::int64_t spin_ms(std::int64_t ms);      // burns CPU for ms, returns ms
std::int64_t count_primes(std::int64_t n);  // primes below n (trial division)
std::int64_t fail(std::int64_t x);          // throws std::runtime_error naming x
std::int64_t crash(std::int64_t x);         // the worker dies by SIGKILL
Bytes blob(std::int64_t n);                 // n bytes of a fixed pattern
Summary stats(Sample s);                    // count, mean, min, max, stddev; throws if empty
// text repeated `times` times (0 to 1,000,000; the result at most 64 MiB, else it throws).
std::string repeat(std::string text, std::int64_t times);

}  // namespace ferry::builtin
