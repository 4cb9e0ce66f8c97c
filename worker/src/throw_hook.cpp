// ferry's __cxa_throw: records the throw site of exceptions thrown while a task runs, then
// hands over to the C++ runtime's own __cxa_throw. The worker executable exports it (see
// worker/CMakeLists.txt), so throws inside task libraries (.so) come through here too. No
// Boost or <cxxabi.h> here: this file must declare __cxa_throw exactly once, itself.
#include <dlfcn.h>
#include <unwind.h>

#include <cstdint>
#include <cstdlib>
#include <typeinfo>

#include "throw_site.hpp"

namespace ferry::worker::detail {
namespace {

thread_local ThrowSite t_site;

struct Walk {
  ThrowSite* site;
  int skip;
};

_Unwind_Reason_Code step(_Unwind_Context* ctx, void* arg) {
  auto* w = static_cast<Walk*>(arg);
  int before = 0;
  auto ip = _Unwind_GetIPInfo(ctx, &before);
  if (ip == 0) return _URC_END_OF_STACK;
  if (w->skip > 0) {  // __cxa_throw's own frame
    --w->skip;
    return _URC_NO_REASON;
  }
  // A return address points after the call, possibly into the next line or, after a
  // noreturn call that ends a function, into the next function: look at the call itself.
  if (before == 0) --ip;
  ThrowSite& s = *w->site;
  s.pcs[s.frames++] = reinterpret_cast<void*>(ip);
  return s.frames < ThrowSite::kMaxFrames ? _URC_NO_REASON : _URC_END_OF_STACK;
}

using ThrowFn = void (*)(void*, std::type_info*, void (*)(void*));

}  // namespace

ThrowSite& this_thread_throw_site() noexcept {
  return t_site;
}

}  // namespace ferry::worker::detail

extern "C" [[noreturn]] void __cxa_throw(void* obj, std::type_info* type, void (*dest)(void*)) {
  // The next definition: the C++ runtime's (or a sanitizer's, which then calls the runtime's).
  static const auto real =
      reinterpret_cast<ferry::worker::detail::ThrowFn>(::dlsym(RTLD_NEXT, "__cxa_throw"));
  auto& s = ferry::worker::detail::t_site;
  if (s.armed) {
    s.frames = 0;
    s.type = type;
    ferry::worker::detail::Walk w{&s, 1};
    _Unwind_Backtrace(ferry::worker::detail::step, &w);
  }
  if (real == nullptr) std::abort();  // no C++ runtime below us: cannot happen in a C++ program
  real(obj, type, dest);
  __builtin_unreachable();
}
