// barrier: N processes meet at a Barrier; a party that dies on its way breaks it for all.
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <string>
#include <thread>
#include <vector>

#include "tour.hpp"

namespace ferry::demos {
namespace {

struct Arrival {
  std::int32_t pid = 0;
  std::string outcome;  // "index k", or the error (Broken, Timeout)
  std::int64_t index = -1;
  double waited_ms = 0;
  template <class A>
  void serialize(A& ar) {
    ar(pid, outcome, index, waited_ms);
  }
};

Arrival wait_at(Barrier& b, std::chrono::milliseconds patience) {
  Arrival a;
  a.pid = static_cast<std::int32_t>(::getpid());
  const auto t0 = Clock::now();
  auto r = b.wait_for(patience);
  a.waited_ms = ms_since(t0);
  if (r) {
    a.index = *r;
    a.outcome = "passed, arrival index " + std::to_string(*r);
  } else {
    a.outcome = r.error().message();
  }
  return a;
}

// A party that travels for `delay_ms`, then waits for the others.
Arrival barrier_party(std::string name, std::int64_t delay_ms) {
  auto b = Barrier::open(name).value();
  std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  return wait_at(b, 5s);
}

// A party that never arrives: it has the barrier open, then its process dies. If the pool
// re-runs it on a replacement worker, that attempt only reports what it finds.
std::string barrier_straggler(std::string name, std::string attempts) {
  auto b = Barrier::open(name).value();
  auto n = Value<std::int32_t>::open(attempts).value();
  if (n.with_lock([](std::int32_t& k) { return ++k; }).value() == 1) {
    std::this_thread::sleep_for(50ms);  // on its way...
    std::raise(SIGKILL);
  }
  return b.broken() ? "the re-run found the barrier already broken" : "the re-run came too early";
}

}  // namespace

FERRY_TASK(barrier_party);
FERRY_TASK(barrier_straggler);

int barrier(const Options& opt) {
  Verdict v;
  Pool pool(lesson_pool(opt, 2));
  await_workers(pool);
  const unsigned n = pool.size();
  const unsigned parties = n + 1;  // the workers and the main process

  sayf("1) %u worker processes and the main process meet at a Barrier of %u parties; each", n,
       parties);
  say("   travels a different time, and nobody passes until the last one has arrived.");
  {
    const std::string name = unique_name("barrier.meet");
    auto b = Barrier::create(name, parties).value();
    std::vector<Future<Arrival>> fs;
    for (unsigned i = 0; i < n; ++i)
      fs.push_back(pool.submit(barrier_party, name, static_cast<std::int64_t>(20 + 40 * i)));
    const Arrival mine = wait_at(b, 5s);
    std::vector<std::int64_t> indices{mine.index};
    sayf("   main:     %s after waiting %.0f ms", mine.outcome.c_str(), mine.waited_ms);
    for (unsigned i = 0; i < n; ++i) {
      const Arrival a = fs[i].get();
      sayf("   worker %u: travelled %u ms, %s after waiting %.0f ms", i + 1, 20 + 40 * i,
           a.outcome.c_str(), a.waited_ms);
      indices.push_back(a.index);
    }
    std::sort(indices.begin(), indices.end());
    bool all = indices.front() == 0;
    for (std::size_t i = 1; i < indices.size(); ++i)
      all = all && indices[i] == indices[i - 1] + 1;
    v.check(all, strf("all %u parties passed, each with its own arrival index", parties));
  }

  sayf("2) Again, but one of the %u workers dies on its way (SIGKILL) and never arrives.", n);
  say("   The barrier notices the dead party and breaks for everyone waiting: no one hangs.");
  {
    const std::string name = unique_name("barrier.broken");
    const std::string attempts = unique_name("barrier.attempts");
    auto b = Barrier::create(name, parties).value();
    auto tries = Value<std::int32_t>::create(attempts, 0).value();
    const auto before = pool.stats().worker_deaths;
    auto straggler = pool.submit(barrier_straggler, name, attempts);
    std::vector<Future<Arrival>> fs;
    for (unsigned i = 0; i + 1 < n; ++i)
      fs.push_back(pool.submit(barrier_party, name, static_cast<std::int64_t>(10 * i)));
    const Arrival mine = wait_at(b, 5s);
    std::vector<Arrival> all{mine};
    sayf("   main:     %s after %.0f ms", mine.outcome.c_str(), mine.waited_ms);
    for (std::size_t i = 0; i < fs.size(); ++i) {
      all.push_back(fs[i].get());
      sayf("   worker %zu: %s after %.0f ms", i + 1, all.back().outcome.c_str(),
           all.back().waited_ms);
    }
    try {
      sayf("   the straggler: died; %s", straggler.get().c_str());
    } catch (const WorkerDied& e) {
      sayf("   the straggler: %s", e.what());
    }
    const auto deaths = pool.stats().worker_deaths - before;
    sayf("   the pool saw %llu worker death(s) and replaced the dead worker",
         static_cast<unsigned long long>(deaths));
    const bool broken_for_all = std::all_of(all.begin(), all.end(), [](const Arrival& a) {
      return a.index < 0 && a.outcome.rfind("Broken", 0) == 0;
    });
    v.check(broken_for_all, strf("all %zu waiting parties were told Broken (none timed out, none "
                                 "passed)",
                                 all.size()));
    v.check(b.broken(), "the barrier stays broken until reset()");
  }
  await_workers(pool);  // the replacement has registered: shutting down now is orderly
  return v.exit_code();
}

}  // namespace ferry::demos
