#include "common.hpp"

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <exception>
#include <mutex>
#include <thread>

namespace ferry::demos {
namespace {

std::mutex g_print;

std::string vstrf(const char* fmt, va_list ap) {
  va_list copy;
  va_copy(copy, ap);
  const int n = std::vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  if (n <= 0) return {};
  std::string s(static_cast<std::size_t>(n) + 1, '\0');
  std::vsnprintf(s.data(), s.size(), fmt, ap);
  s.pop_back();
  return s;
}

}  // namespace

void say(std::string_view line) {
  std::lock_guard lk(g_print);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

void sayf(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::string s = vstrf(fmt, ap);
  va_end(ap);
  say(s);
}

std::string strf(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::string s = vstrf(fmt, ap);
  va_end(ap);
  return s;
}

unsigned cpu_count() {
  return std::max(1u, std::thread::hardware_concurrency());
}

unsigned requested_workers(const Options& opt) {
  return opt.workers == 0 ? cpu_count() : opt.workers;
}

PoolOptions lesson_pool(const Options& opt, unsigned at_least, bool accept_remote) {
  PoolOptions p = coordinator::pool_options(opt);
  if (accept_remote && !opt.listen.empty()) {
    p.workers = opt.workers;  // as given: 0 = remote workers only
  } else {
    p.listen.clear();
    const unsigned asked = requested_workers(opt);
    const unsigned workers = std::max(asked, at_least);
    p.workers = workers;
    if (workers != asked) {
      sayf(
          "(this lesson needs %u processes at once, so its pool has %u workers although "
          "--workers is %u)",
          at_least, workers, asked);
    }
  }
  p.prefetch = 1;
  // Drained workers exit within milliseconds; the longer grace only matters when an exit is
  // slow (a sanitizer build's leak check on a busy machine), and a worker killed then would
  // leave its leak checker behind as an orphan.
  p.shutdown_grace = std::chrono::seconds(5);
  p.on_output = [](const WorkerLine& l) {
    sayf("    w%u %s %.*s", l.worker, l.stream == 2 ? "!" : "|", static_cast<int>(l.line.size()),
         l.line.data());
  };
  return p;
}

void await_workers(Pool& pool) {
  if (!pool.wait_ready(std::chrono::seconds(20))) {
    throw std::runtime_error("the pool's workers did not start");
  }
}

std::string unique_name(std::string_view what) {
  static std::atomic<unsigned> serial{0};
  return "demo." + std::string(what) + "." + std::to_string(serial.fetch_add(1) + 1);
}

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

bool Verdict::check(bool ok, const std::string& what) {
  sayf("  [%s] %s", ok ? "ok" : "FAIL", what.c_str());
  if (!ok) ++failed_;
  return ok;
}

int guarded(const char* name, int (*body)(const Options&), const Options& opt) {
  try {
    return body(opt);
  } catch (const std::exception& e) {
    sayf("  [FAIL] demo %s stopped: %s", name, e.what());
    return 1;
  }
}

}  // namespace ferry::demos
