// event: an Event as a start barrier (Python: event_barrier.py) and as a notification
// between a producer and a consumer (Python: event_notify.py).
#include <unistd.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "tour.hpp"

namespace ferry::demos {
namespace {

struct Start {
  std::int32_t pid = 0;
  std::int64_t ready_ns = 0;   // when it was ready and began waiting
  std::int64_t passed_ns = 0;  // when the event let it through
  template <class A>
  void serialize(A& ar) {
    ar(pid, ready_ns, passed_ns);
  }
};

// A runner: reports ready, then waits for the start event.
Start event_runner(std::string base) {
  auto ready = Semaphore::open(base + ".ready").value();
  auto go = Event::open(base + ".go").value();
  Start s{static_cast<std::int32_t>(::getpid()), now_ns(), 0};
  ready.release().value();
  go.wait_for(5s).value();
  s.passed_ns = now_ns();
  return s;
}

// A consumer told of each new item by an event; it clears the event and says it took it.
std::vector<std::int64_t> event_listener(std::string base, std::int64_t count) {
  auto item_ready = Event::open(base + ".item-ready").value();
  auto slot = Value<std::int64_t>::open(base + ".slot").value();
  auto taken = Semaphore::open(base + ".taken").value();
  std::vector<std::int64_t> got;
  for (std::int64_t k = 0; k < count; ++k) {
    item_ready.wait_for(5s).value();
    got.push_back(slot.get().value());
    item_ready.clear();
    taken.release().value();
  }
  return got;
}

}  // namespace

FERRY_TASK(event_runner);
FERRY_TASK(event_listener);

int event(const Options& opt) {
  Verdict v;
  const std::string base = unique_name("event");
  const ipc::SemaphoreOptions signalling{.reclaim_dead_holders = false};
  auto ready = Semaphore::create(base + ".ready", 0, signalling).value();
  auto go = Event::create(base + ".go").value();
  auto item_ready = Event::create(base + ".item-ready").value();
  auto slot = Value<std::int64_t>::create(base + ".slot", 0).value();
  auto taken = Semaphore::create(base + ".taken", 0, signalling).value();

  Pool pool(lesson_pool(opt, 2));
  await_workers(pool);
  const unsigned n = pool.size();
  sayf("1) A start barrier: %u runner processes get ready and wait on one Event; the main", n);
  say("   process fires it when it chooses, and they all leave together.");
  std::vector<Future<Start>> runners;
  for (unsigned i = 0; i < n; ++i)
    runners.push_back(pool.submit(event_runner, base));
  for (unsigned i = 0; i < n; ++i)
    ready.acquire_for(10s).value();
  say("   main: every runner is ready; firing the start event in 100 ms");
  std::this_thread::sleep_for(100ms);
  const std::int64_t fired_ns = now_ns();
  go.set();
  bool none_early = true;
  for (unsigned i = 0; i < n; ++i) {
    const Start s = runners[i].get();
    sayf("   runner %u (pid %d): waited %.1f ms, left %.2f ms after the event was set", i + 1,
         s.pid, static_cast<double>(s.passed_ns - s.ready_ns) / 1e6,
         static_cast<double>(s.passed_ns - fired_ns) / 1e6);
    none_early = none_early && s.passed_ns >= fired_ns;
  }
  v.check(none_early, "no runner left before the start event was set");

  constexpr std::int64_t kItems = 5;
  say("2) A notification: main puts an item in a shared slot and sets an Event; the consumer");
  say("   wakes, takes it, clears the Event and releases a Semaphore so main can put the next.");
  auto listener = pool.submit(event_listener, base, kItems);
  std::vector<std::int64_t> sent;
  for (std::int64_t i = 1; i <= kItems; ++i) {
    slot.set(i * i).value();
    sent.push_back(i * i);
    item_ready.set();
    taken.acquire_for(10s).value();
  }
  const auto got = listener.get();
  std::string list;
  for (auto x : got)
    list += " " + std::to_string(x);
  sayf("   the consumer received:%s", list.c_str());
  v.check(got == sent, strf("the consumer got all %lld items, in order, none twice",
                            static_cast<long long>(kItems)));
  return v.exit_code();
}

}  // namespace ferry::demos
