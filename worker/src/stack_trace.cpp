// Symbolizes recorded throw sites with Boost.Stacktrace's libbacktrace backend (function,
// file:line from the DWARF of the executable and of loaded task libraries).
#include <dlfcn.h>

#include <cxxabi.h>
#include <algorithm>
#include <boost/stacktrace.hpp>
#include <cstring>
#include <string>
#include <string_view>

#include "throw_site.hpp"

namespace ferry::worker::detail {
namespace {

constexpr int kShownFrames = 24;

// Frames from here on are ferry's machinery around the task, not the task. Searched anywhere
// in the name: a template function's name begins with its return type.
bool is_boundary(std::string_view name) {
  const std::string_view fn = name.substr(0, name.find('('));
  constexpr std::string_view kMarks[] = {"ferry::task_detail::", "ferry::worker::", "std::__invoke",
                                         "std::__apply_impl", "std::apply<"};
  return std::any_of(std::begin(kMarks), std::end(kMarks),
                     [&](std::string_view m) { return fn.find(m) != std::string_view::npos; });
}

std::string module_of(const void* pc) {
  Dl_info info{};
  if (::dladdr(pc, &info) == 0 || info.dli_fname == nullptr) return "?";
  std::string_view f = info.dli_fname;
  const auto slash = f.rfind('/');
  return std::string(slash == std::string_view::npos ? f : f.substr(slash + 1));
}

std::string format(void* const* pcs, int n, bool cut) {
  std::string out;
  int shown = 0;
  for (int i = 0; i < n && shown < kShownFrames; ++i) {
    const boost::stacktrace::frame f(pcs[i]);
    std::string name = f.name();
    if (cut && shown > 0 && is_boundary(name)) break;
    if (name.empty()) {
      char hex[32];
      std::snprintf(hex, sizeof hex, "0x%zx", reinterpret_cast<std::size_t>(pcs[i]));
      name = hex;
    }
    out += "#" + std::to_string(shown++) + " " + name;
    const std::string file = f.source_file();
    if (!file.empty()) {
      out += " at " + file + ":" + std::to_string(f.source_line());
    } else {
      out += " in " + module_of(pcs[i]);
    }
    out += "\n";
  }
  return out;
}

}  // namespace

std::string current_exception_stack() {
  try {
    const ThrowSite& s = this_thread_throw_site();
    const std::type_info* now = abi::__cxa_current_exception_type();
    if (s.type != nullptr && now != nullptr && *s.type == *now && s.frames > 0) {
      return format(s.pcs, s.frames, /*cut=*/true);
    }
    // Not recorded (thrown before the task was armed, or rethrown from elsewhere): the
    // stack where it is caught is the best there is.
    const boost::stacktrace::stacktrace here(1, ThrowSite::kMaxFrames);
    void* pcs[ThrowSite::kMaxFrames];
    int n = 0;
    for (const auto& f : here) {
      if (n == ThrowSite::kMaxFrames) break;
      pcs[n++] = static_cast<char*>(const_cast<void*>(f.address())) - 1;  // the call, as above
    }
    return format(pcs, n, /*cut=*/false);
  } catch (...) {
    return {};  // no memory for names: the failure is still reported, without its stack
  }
}

}  // namespace ferry::worker::detail

// How a task library's copy of ferry's task code (shared/task.cpp) reaches the stack of the
// exception it is handling: exported by the worker, looked up as a weak symbol. Returns the
// length of the whole text, copies at most cap bytes of it.
extern "C" std::size_t ferry_exception_stack_v1(char* out, std::size_t cap) noexcept {
  std::string s = ferry::worker::detail::current_exception_stack();
  std::memcpy(out, s.data(), std::min(cap, s.size()));
  return s.size();
}
