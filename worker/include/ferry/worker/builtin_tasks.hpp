// The built-in tasks (DESIGN.md): registered in every ferry binary by
// ferry::worker::register_builtin_tasks() (ferry::init and the ferry executables call it),
// so they can be submitted by function or by name: pool.submit(ferry::builtin::square, 7).
#pragma once

#include <cstdint>

#include "ferry/shared/frame.hpp"

namespace ferry::builtin {

std::int64_t square(std::int64_t x);
std::int64_t sleep_ms(std::int64_t ms);     // sleeps, returns ms
std::int64_t spin_ms(std::int64_t ms);      // burns CPU for ms, returns ms
std::int64_t count_primes(std::int64_t n);  // primes below n (trial division)
std::int64_t fail(std::int64_t x);          // throws std::runtime_error naming x
std::int64_t crash(std::int64_t x);         // the worker dies by SIGKILL
Bytes blob(std::int64_t n);                 // n bytes of a fixed pattern

}  // namespace ferry::builtin
