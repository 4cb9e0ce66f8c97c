// Where the exception a task is throwing was thrown: ferry's __cxa_throw (throw_hook.cpp)
// records the raw return addresses while a task runs on this thread, because by the time
// the worker's catch runs, the throwing frames are gone. Symbolizing waits for the catch
// (stack_trace.cpp), so a task that throws and catches internally pays only for the walk.
//
// Threading: per thread (thread_local); a task slot's thread arms its own record.
#pragma once

#include <cstddef>
#include <string>
#include <typeinfo>

namespace ferry::worker::detail {

struct ThrowSite {
  static constexpr int kMaxFrames = 48;
  bool armed = false;                    // record throws (set while a task runs)
  const std::type_info* type = nullptr;  // of the last exception thrown, null: none
  int frames = 0;
  void* pcs[kMaxFrames] = {};  // call sites (return address - 1), innermost first
};

ThrowSite& this_thread_throw_site() noexcept;

// Arms recording for the task run in its scope, forgetting any earlier throw.
class ArmThrowSite {
 public:
  ArmThrowSite() noexcept : s_(this_thread_throw_site()) {
    s_.armed = true;
    s_.type = nullptr;
    s_.frames = 0;
  }
  ~ArmThrowSite() { s_.armed = false; }
  ArmThrowSite(const ArmThrowSite&) = delete;
  ArmThrowSite& operator=(const ArmThrowSite&) = delete;

 private:
  ThrowSite& s_;
};

// The stack of the exception being handled (call only inside a catch): its throw site,
// symbolized (function, file:line where debug info exists, else the module), cut where the
// task's own frames end; if its throw was not recorded, the stack where it is caught.
std::string current_exception_stack();

// pcs[0..n) symbolized as current_exception_stack() does (innermost first, one "#i ..." line
// each), cut where the task's own frames end if `cut`. Allocates: not for a signal handler.
std::string symbolized_stack(void* const* pcs, int n, bool cut);

// Makes a worker that dies of SIGSEGV, SIGBUS, SIGFPE, SIGILL or SIGABRT write that signal
// and the crashing thread's stack (symbolized when that can be done in time) to stderr first;
// it then dies of the same signal as before (crash_trace.cpp). Not installed in sanitizer
// builds, whose own reports do this. Call once, from the worker's main thread.
void install_crash_trace();

}  // namespace ferry::worker::detail
