// What every demo of the tour shares: printing a narrative from several threads, the pool a
// lesson runs on, names for its sync primitives, and the checks that decide its exit status.
//
// Threading: say()/sayf() may be called from any thread (worker output arrives on the pool's
// supervisor thread); a Verdict belongs to the demo's thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "ferry/coordinator/options.hpp"
#include "ferry/ferry.hpp"

namespace ferry::demos {

using coordinator::Options;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// One line of narrative on stdout (whole, flushed).
void say(std::string_view line);
[[gnu::format(printf, 1, 2)]] void sayf(const char* fmt, ...);
[[gnu::format(printf, 1, 2)]] std::string strf(const char* fmt, ...);

// The number of workers --workers asks for (0 there means one per CPU).
unsigned requested_workers(const Options& opt);
unsigned cpu_count();

// The pool a lesson runs on: --workers, --transport and the retry/timeout options, at least
// `at_least` workers (a lesson that needs that many processes at once says so when it raises
// --workers), worker output shown indented under the narrative, and one task queued per
// worker at a time, so tasks that wait on each other are never queued behind one another;
// workers get 5 s to exit after the drain before they are killed. Lessons share memory
// between the coordinator and its workers, so their pools take no remote workers; only the
// distributed lesson does (accept_remote: --listen is honoured and --workers 0 then means no
// local workers, as for `map`).
PoolOptions lesson_pool(const Options& opt, unsigned at_least = 1, bool accept_remote = false);
// Waits until every worker has registered (throws if they cannot start).
void await_workers(Pool& pool);

// A sync-primitive name unique within this coordinator ("demo.<what>.<n>").
std::string unique_name(std::string_view what);

double ms_since(Clock::time_point t0);
std::int64_t now_ns();  // steady clock: comparable between processes of one host

// Collects a demo's checks: prints each as "[ok]" or "[FAIL]"; exit status 0 when all held.
class Verdict {
 public:
  bool check(bool ok, const std::string& what);
  int exit_code() const noexcept { return failed_ == 0 ? 0 : 1; }

 private:
  int failed_ = 0;
};

// Runs a demo body, turning an escaped exception into a message and exit status 1.
int guarded(const char* name, int (*body)(const Options&), const Options& opt);

}  // namespace ferry::demos
