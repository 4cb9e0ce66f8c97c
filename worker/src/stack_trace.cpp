// Symbolizes recorded throw sites with Boost.Stacktrace's libbacktrace backend (function,
// file:line from the DWARF of the executable and of loaded task libraries).
#include <dlfcn.h>

#include <cxxabi.h>
#include <algorithm>
#include <boost/stacktrace.hpp>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

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

struct FrameText {
  std::string text;  // "function at file:line" or "function in module"
  bool boundary = false;
};

// Symbolizing costs about a millisecond a frame (DWARF lookups); a task that fails over and
// over fails from the same few places, so each call site is looked up once per process.
// Bounded: past kMaxCached sites the cache starts over.
FrameText describe(void* pc) {
  constexpr std::size_t kMaxCached = 4096;
  static std::mutex mu;
  static std::unordered_map<void*, FrameText> cache;
  {
    std::lock_guard lk(mu);
    if (auto it = cache.find(pc); it != cache.end()) return it->second;
  }
  const boost::stacktrace::frame f(pc);
  FrameText t;
  t.text = f.name();
  t.boundary = is_boundary(t.text);
  if (t.text.empty()) {
    char hex[32];
    std::snprintf(hex, sizeof hex, "0x%zx", reinterpret_cast<std::size_t>(pc));
    t.text = hex;
  }
  const std::string file = f.source_file();
  if (!file.empty()) {
    t.text += " at " + file + ":" + std::to_string(f.source_line());
  } else {
    t.text += " in " + module_of(pc);
  }
  std::lock_guard lk(mu);
  if (cache.size() >= kMaxCached) cache.clear();
  cache.emplace(pc, t);
  return t;
}

std::string format(void* const* pcs, int n, bool cut) {
  std::string out;
  int shown = 0;
  for (int i = 0; i < n && shown < kShownFrames; ++i) {
    const FrameText t = describe(pcs[i]);
    if (cut && shown > 0 && t.boundary) break;
    out += "#" + std::to_string(shown++) + " " + t.text + "\n";
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

std::string symbolized_stack(void* const* pcs, int n, bool cut) {
  return format(pcs, n, cut);
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
