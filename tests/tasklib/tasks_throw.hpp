// A task library whose task throws from a named function, for symbolized stack traces.
#pragma once

#include <cstdint>

namespace tasklib_throw {

// The line of the throw in tasks_throw.cpp (what a trace with debug info must name).
extern const int kThrowLine;
// Throws std::domain_error from lib_throw_here (a non-inlined function) when x is odd.
std::int64_t lib_odd_fails(std::int64_t x);

// The line of the faulting write in tasks_throw.cpp.
extern const int kFaultLine;
// Writes through a null pointer in lib_fault_here (a non-inlined function): the worker dies
// of SIGSEGV.
std::int64_t lib_segfaults(std::int64_t x);

}  // namespace tasklib_throw
