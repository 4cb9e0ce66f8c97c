// countdown: start a process and wait for it. local-data: process-local state vs threads.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <latch>
#include <map>
#include <thread>
#include <vector>

#include "tour.hpp"

namespace ferry::demos {
namespace {

// ---- countdown (Python: countdown.py / countdownp.py)

struct CountdownReport {
  std::int32_t pid = 0;
  std::int64_t ticks = 0;
  template <class A>
  void serialize(A& ar) {
    ar(pid, ticks);
  }
};

// The child's whole job: count down, one line per tick.
CountdownReport countdown_from(std::int64_t n) {
  CountdownReport r{static_cast<std::int32_t>(::getpid()), 0};
  for (std::int64_t i = n; i > 0; --i) {
    std::printf("T-minus %lld\n", static_cast<long long>(i));
    ++r.ticks;
    std::this_thread::sleep_for(40ms);
  }
  std::printf("liftoff\n");
  return r;
}

// ---- local-data (Python: localdata.py with threading.local)

std::int64_t g_mydata = 0;  // a global: one copy per process
std::atomic<std::int64_t> g_shared_x{0};
thread_local std::int64_t t_mydata = 0;  // one copy per thread

struct Visit {
  std::int32_t pid = 0;
  std::int64_t before = 0;
  std::int64_t after = 0;
  template <class A>
  void serialize(A& ar) {
    ar(pid, before, after);
  }
};

// The per-worker initializer: every worker starts with its own x = start.
void local_data_init(std::int64_t start) {
  g_mydata = start;
}

// Reads this worker's x, then overwrites it: only later visits to the same worker see it.
Visit local_data_visit(std::int64_t value) {
  Visit v{static_cast<std::int32_t>(::getpid()), g_mydata, value};
  g_mydata = value;
  return v;
}

}  // namespace

FERRY_TASK(countdown_from);
FERRY_TASK(local_data_init);
FERRY_TASK(local_data_visit);

int countdown(const Options& opt) {
  Verdict v;
  say("The main process starts a worker process running countdown(5) and waits for it");
  say("(Python: p = Process(target=countdown, args=(5,)); p.start(); p.join()).");
  Pool pool(lesson_pool(opt));
  const auto t0 = Clock::now();
  auto f = pool.submit(countdown_from, std::int64_t{5});
  say("main: started it; the child counts on its own while main waits (join)");
  int checks = 0;
  while (!f.wait_for(100ms))
    ++checks;
  const CountdownReport r = f.get();
  const double ms = ms_since(t0);
  pool.shutdown();  // after this, every line the child printed has been shown
  sayf("main (pid %d): the child (pid %d) finished after %.0f ms; main looked %d times meanwhile",
       static_cast<int>(::getpid()), r.pid, ms, checks);
  v.check(r.ticks == 5,
          strf("the child counted %lld ticks down from 5", static_cast<long long>(r.ticks)));
  v.check(r.pid != ::getpid(), "it ran in a process of its own");
  return v.exit_code();
}

int local_data(const Options& opt) {
  Verdict v;
  say("1) Threads share the process's globals; thread_local gives each thread its own copy.");
  const std::vector<std::int64_t> values{33, 88, 91};
  struct Seen {
    std::int64_t mine = 0;
    std::int64_t shared = 0;
  };
  std::vector<Seen> seen(values.size());
  {
    std::latch wrote(static_cast<std::ptrdiff_t>(values.size()));
    std::vector<std::jthread> threads;
    for (std::size_t i = 0; i < values.size(); ++i) {
      threads.emplace_back([&, i] {
        t_mydata = values[i];
        g_shared_x = values[i];
        wrote.arrive_and_wait();  // every thread has written before any reads back
        seen[i] = {t_mydata, g_shared_x.load()};
      });
    }
  }
  bool own = true;
  bool same_shared = true;
  for (std::size_t i = 0; i < values.size(); ++i) {
    sayf("  thread %zu: x = %lld   mydata.x = %lld", i + 1, static_cast<long long>(seen[i].shared),
         static_cast<long long>(seen[i].mine));
    own = own && seen[i].mine == values[i];
    same_shared = same_shared && seen[i].shared == seen[0].shared;
  }
  sayf("  main:     x = %lld   mydata.x = %lld", static_cast<long long>(g_shared_x.load()),
       static_cast<long long>(t_mydata));
  v.check(own, "each thread read back its own thread_local value");
  v.check(same_shared, strf("all threads read the one shared x (%lld, the last writer's)",
                            static_cast<long long>(seen[0].shared)));
  v.check(t_mydata == 0, "the main thread's thread_local copy was never touched");

  say("2) Processes share nothing: each worker has its own copy of a global x. An initializer");
  say("   sets x = 7 in every worker; each task reads its worker's x, then writes a new one.");
  auto popt = lesson_pool(opt);
  popt.initializer = ferry::initializer(local_data_init, std::int64_t{7});
  std::vector<Visit> visits;
  {
    Pool pool(std::move(popt));
    await_workers(pool);
    std::vector<Future<Visit>> fs;
    const std::size_t n = 3 * static_cast<std::size_t>(pool.size());
    for (std::size_t i = 0; i < n; ++i)
      fs.push_back(pool.submit(local_data_visit, static_cast<std::int64_t>(100 + i)));
    for (auto& f : fs)
      visits.push_back(f.get());
  }
  // A worker runs its tasks in the order they were sent, so per pid the visits form a chain.
  std::map<std::int32_t, std::vector<Visit>> by_pid;
  for (const auto& vi : visits)
    by_pid[vi.pid].push_back(vi);
  bool chained = true;
  for (const auto& [pid, vs] : by_pid) {
    std::string line = strf("  worker pid %d: x = 7", pid);
    std::int64_t expect = 7;
    for (const auto& vi : vs) {
      chained = chained && vi.before == expect;
      expect = vi.after;
      line += strf(" -> %lld", static_cast<long long>(vi.after));
    }
    say(line);
  }
  sayf("  main process: x = %lld", static_cast<long long>(g_mydata));
  v.check(chained, "every task saw only what earlier tasks on its own worker wrote");
  v.check(g_mydata == 0, "no worker's write reached the main process's x");
  return v.exit_code();
}

}  // namespace ferry::demos
