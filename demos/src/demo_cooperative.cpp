// cooperative: cooperative multitasking with C++20 coroutines inside one worker (Python:
// generator.py, where generators take turns at each yield), contrasted with preemptive
// processes that the OS switches whenever it likes.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <coroutine>
#include <deque>
#include <exception>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "tour.hpp"

namespace ferry::demos {
namespace {

// A coroutine that runs only when its owner resumes it, up to its next co_await yield_now().
class Step {
 public:
  struct promise_type {
    std::exception_ptr error;
    Step get_return_object() {
      return Step(std::coroutine_handle<promise_type>::from_promise(*this));
    }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { error = std::current_exception(); }
  };
  explicit Step(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  Step(Step&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  Step& operator=(Step&&) = delete;
  Step(const Step&) = delete;
  ~Step() {
    if (h_) h_.destroy();
  }
  // Runs it to its next yield; false once it has finished.
  bool resume() {
    h_.resume();
    if (h_.promise().error) std::rethrow_exception(h_.promise().error);
    return !h_.done();
  }

 private:
  std::coroutine_handle<promise_type> h_;
};

// The only place a cooperative task can be switched out: it gives the CPU back by itself.
std::suspend_always yield_now() noexcept {
  return {};
}

Step countdown_coroutine(std::string name, std::int64_t n, std::vector<std::string>& trace) {
  for (; n > 0; --n) {
    trace.push_back(name + " " + std::to_string(n));
    co_await yield_now();
  }
  trace.push_back(name + " done");
}

struct CoopReport {
  std::int32_t pid = 0;
  std::vector<std::string> trace;
  template <class A>
  void serialize(A& ar) {
    ar(pid, trace);
  }
};

// A round-robin scheduler of coroutines, all in this one thread of this one worker.
CoopReport coop_round_robin(std::vector<std::string> names, std::vector<std::int64_t> counts) {
  CoopReport r;
  r.pid = static_cast<std::int32_t>(::getpid());
  std::deque<Step> ready;
  for (std::size_t i = 0; i < names.size(); ++i)
    ready.push_back(countdown_coroutine(names[i], counts[i], r.trace));
  while (!ready.empty()) {
    Step s = std::move(ready.front());
    ready.pop_front();
    if (s.resume()) ready.push_back(std::move(s));
  }
  return r;
}

struct Tick {
  std::int32_t job = 0;
  std::int32_t n = 0;  // 0: done
  std::int32_t pid = 0;
};

// The same countdown as a process: it never yields; each step burns a little CPU, and the
// OS decides who runs when. Steps are logged in one shared order as they happen.
std::int32_t preemptive_countdown(std::string log_name, std::string cursor_name, std::int32_t job,
                                  std::int64_t n) {
  auto log = Array<Tick>::open(log_name).value();
  auto cursor = Value<std::uint32_t>::open(cursor_name).value();
  std::atomic_ref<std::uint32_t> next(*cursor.raw());
  const auto pid = static_cast<std::int32_t>(::getpid());
  for (; n >= 0; --n) {
    const auto i = next.fetch_add(1);
    if (i < log.size()) log.raw()[i] = {job, static_cast<std::int32_t>(n), pid};
    if (n > 0) builtin::spin_ms(3);
  }
  return pid;
}

}  // namespace

FERRY_TASK(coop_round_robin);
FERRY_TASK(preemptive_countdown);

int cooperative(const Options& opt) {
  Verdict v;
  const std::vector<std::string> names{"A", "B", "C"};
  const std::vector<std::int64_t> counts{3, 2, 4};
  Pool pool(lesson_pool(opt));
  await_workers(pool);

  say("1) Cooperative: one worker runs three countdown coroutines (A from 3, B from 2, C from");
  say("   4) on a round-robin scheduler. Each gives the CPU back at its own co_await; nothing");
  say("   else can switch it out, so the order is fixed by the program (and a coroutine that");
  say("   never yielded would starve the others).");
  const CoopReport r = pool.apply(coop_round_robin, names, counts);
  std::string line;
  for (const auto& t : r.trace)
    line += (line.empty() ? "" : ", ") + t;
  sayf("   worker pid %d, one thread: %s", r.pid, line.c_str());
  // What round-robin must give: each job in turn, one step each, until all are done.
  std::vector<std::string> expected;
  {
    std::deque<std::pair<std::string, std::int64_t>> q;
    for (std::size_t i = 0; i < names.size(); ++i)
      q.emplace_back(names[i], counts[i]);
    while (!q.empty()) {
      auto [name, left] = q.front();
      q.pop_front();
      if (left == 0) {
        expected.push_back(name + " done");
        continue;
      }
      expected.push_back(name + " " + std::to_string(left));
      q.emplace_back(name, left - 1);
    }
  }
  v.check(r.trace == expected, "the coroutines took turns in exactly the round-robin order");

  sayf("2) Preemptive: the same countdowns as three tasks on %u worker processes. None of them",
       pool.size());
  say("   yields; the OS runs them in parallel or switches them whenever it likes, so the");
  say("   order below is an accident of this run.");
  const std::string log_name = unique_name("cooperative.log");
  const std::string cursor_name = unique_name("cooperative.cursor");
  std::size_t steps = 0;
  for (auto c : counts)
    steps += static_cast<std::size_t>(c) + 1;
  auto log = Array<Tick>::create(log_name, steps).value();
  auto cursor = Value<std::uint32_t>::create(cursor_name, 0).value();
  std::vector<Future<std::int32_t>> fs;
  for (std::size_t i = 0; i < names.size(); ++i) {
    fs.push_back(pool.submit(preemptive_countdown, log_name, cursor_name,
                             static_cast<std::int32_t>(i), counts[i]));
  }
  std::set<std::int32_t> pids;
  for (auto& f : fs)
    pids.insert(f.get());
  const auto ticks = log.snapshot().value();
  line.clear();
  std::vector<std::int64_t> last(names.size(), 1'000'000);
  bool in_order = true;
  for (const auto& t : ticks) {
    const auto j = static_cast<std::size_t>(t.job);
    line += (line.empty() ? "" : ", ") + names[j] + (t.n > 0 ? " " + std::to_string(t.n) : " done");
    in_order = in_order && t.n < last[j];
    last[j] = t.n;
  }
  sayf("   %s", line.c_str());
  sayf("   (%zu processes took part)", pids.size());
  bool all_done = true;
  for (auto l : last)
    all_done = all_done && l == 0;
  v.check(in_order && all_done, "each process counted all the way down, in its own order");
  v.check(pids.size() == std::min<std::size_t>(pool.size(), names.size()),
          "the countdowns ran in separate processes, one per free worker");
  return v.exit_code();
}

}  // namespace ferry::demos
