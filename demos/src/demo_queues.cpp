// queue: several producers and consumers over a ferry::Queue (Python: queuemp.py, pc_queue.py).
// ghostbusters: seed 000's story (thread_tut.py, multiprocessing_tut.py, queue_mp.py): the
// Ghostbusters get ready and board Ecto-1 at different times, then catch the ghosts a
// producer releases into the ghost pool and put them in the trap.
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "tour.hpp"

namespace ferry::demos {
namespace {

// ---- queue

struct Item {
  std::int32_t producer = 0;
  std::int32_t seq = 0;
  std::string label;
  template <class A>
  void serialize(A& ar) {
    ar(producer, seq, label);
  }
};

std::int64_t queue_produce(std::string queue, std::int32_t id, std::int32_t count) {
  auto q = Queue<Item>::open(queue).value();
  for (std::int32_t seq = 0; seq < count; ++seq) {
    // Blocks while the queue is full: a bounded queue slows a fast producer down.
    q.put_for(Item{id, seq, "item " + std::to_string(seq) + " of producer " + std::to_string(id)},
              10s)
        .value();
  }
  return count;
}

// Takes items until the queue is closed and drained; returns (producer, seq) pairs in the
// order it got them, flattened.
std::vector<std::int32_t> queue_consume(std::string queue) {
  auto q = Queue<Item>::open(queue).value();
  std::vector<std::int32_t> got;
  for (;;) {
    auto item = q.get_for(10s);
    if (!item && item.code() == Errc::channel_closed) break;  // closed, nothing left
    const Item& it = item.value();
    got.push_back(it.producer);
    got.push_back(it.seq);
  }
  return got;
}

// ---- ghostbusters

struct Ghost {
  std::int32_t id = 0;
  std::string kind;
  std::string caught_by;
  template <class A>
  void serialize(A& ar) {
    ar(id, kind, caught_by);
  }
};

std::int64_t ghostbuster(std::string name, std::int64_t ready_ms, std::string ecto1,
                         std::string departure, std::string ghost_pool, std::string trap) {
  auto seats = Queue<std::string>::open(ecto1).value();
  auto siren = Event::open(departure).value();
  auto pool = Queue<Ghost>::open(ghost_pool).value();
  auto catches = Queue<Ghost>::open(trap).value();
  std::this_thread::sleep_for(std::chrono::milliseconds(ready_ms));  // getting ready
  seats.put_for(name, 5s).value();                                   // boards Ecto-1
  siren.wait_for(10s).value();                                       // Ecto-1 leaves
  std::int64_t caught = 0;
  for (;;) {
    auto g = pool.get_for(10s);
    if (!g && g.code() == Errc::channel_closed) break;  // the pool is empty for good
    Ghost ghost = std::move(g).value();
    std::this_thread::sleep_for(4ms);  // a proton stream takes a moment
    ghost.caught_by = name;
    catches.put_for(ghost, 5s).value();
    ++caught;
  }
  return caught;
}

}  // namespace

FERRY_TASK(queue_produce);
FERRY_TASK(queue_consume);
FERRY_TASK(ghostbuster);

int queue(const Options& opt) {
  Verdict v;
  Pool pool(lesson_pool(opt, 4));  // at least two producers and two consumers
  await_workers(pool);
  const unsigned producers = std::max(1u, pool.size() / 2);
  const unsigned consumers = pool.size() - producers;
  constexpr std::int32_t kEach = 25;
  constexpr std::size_t kCapacity = 8;
  const std::string name = unique_name("queue");
  auto q = Queue<Item>::create(name, kCapacity, 256).value();
  sayf("%u producer and %u consumer processes share one Queue of %zu slots. Producers block while",
       producers, consumers, kCapacity);
  say("it is full; when all are done main closes the queue, and consumers stop once it is empty");
  say("(Python puts one None per consumer instead).");

  std::vector<Future<std::int64_t>> made;
  std::vector<Future<std::vector<std::int32_t>>> taken;
  for (unsigned c = 0; c < consumers; ++c)
    taken.push_back(pool.submit(queue_consume, name));
  for (unsigned p = 0; p < producers; ++p)
    made.push_back(pool.submit(queue_produce, name, static_cast<std::int32_t>(p + 1), kEach));
  std::int64_t put = 0;
  for (auto& f : made)
    put += f.get();
  q.close();

  std::map<std::pair<std::int32_t, std::int32_t>, int> seen;
  bool fifo = true;
  for (unsigned c = 0; c < consumers; ++c) {
    const auto got = taken[c].get();
    std::map<std::int32_t, std::int32_t> last;  // per producer, in this consumer's view
    std::map<std::int32_t, int> from;
    for (std::size_t i = 0; i + 1 < got.size(); i += 2) {
      const std::int32_t p = got[i];
      const std::int32_t s = got[i + 1];
      ++seen[{p, s}];
      fifo = fifo && (!last.count(p) || s > last[p]);
      last[p] = s;
      ++from[p];
    }
    std::string line = strf("  consumer %u got %zu items:", c + 1, got.size() / 2);
    for (const auto& [p, k] : from)
      line += strf(" %d from producer %d;", k, p);
    say(line);
  }
  std::int64_t once = 0;
  bool unique = true;
  for (const auto& [key, k] : seen) {
    once += k == 1 ? 1 : 0;
    unique = unique && k == 1;
  }
  const std::int64_t total = static_cast<std::int64_t>(producers) * kEach;
  sayf("  put %lld, taken %zu distinct, lost %llu, abandoned %llu", static_cast<long long>(put),
       seen.size(), static_cast<unsigned long long>(q.lost_count()),
       static_cast<unsigned long long>(q.abandoned_count()));
  v.check(put == total && unique && once == total,
          strf("every item accounted for: %lld put, %lld taken, each exactly once",
               static_cast<long long>(put), static_cast<long long>(once)));
  v.check(q.lost_count() == 0 && q.abandoned_count() == 0, "nothing lost or abandoned");
  v.check(fifo, "each consumer saw each producer's items in the order they were put");
  return v.exit_code();
}

int ghostbusters(const Options& opt) {
  Verdict v;
  static const char* kCrew[] = {"Peter",  "Ray",   "Egon", "Winston",
                                "Janine", "Louis", "Dana", "Slimer"};
  static const std::int64_t kReadyMs[] = {90, 30, 60, 10, 45, 75, 20, 5};
  static const char* kKinds[] = {
      "Class V full-roaming vapor", "Slimer", "Library ghost", "Stay Puft", "Terror dog",
      "Taxi driver ghost"};
  constexpr std::int32_t kGhosts = 30;
  Pool pool(lesson_pool(opt, 4));  // the four Ghostbusters at least
  await_workers(pool);
  const unsigned team = pool.size();

  sayf("Part 1: %u Ghostbusters (one worker process each) get ready, each taking its own time,",
       team);
  say("and board Ecto-1 (a Queue of seats) in the order they are ready.");
  const std::string base = unique_name("ghostbusters");
  auto ecto1 =
      Queue<std::string>::create(base + ".ecto1", std::bit_ceil(std::max(team, 2u)), 64).value();
  auto siren = Event::create(base + ".siren").value();
  auto ghost_pool = Queue<Ghost>::create(base + ".pool", 8, 256).value();
  auto trap =
      Queue<Ghost>::create(base + ".trap", std::bit_ceil(static_cast<unsigned>(kGhosts)), 256)
          .value();
  std::vector<std::string> names;
  std::vector<Future<std::int64_t>> busters;
  for (unsigned i = 0; i < team; ++i) {
    names.push_back(i < std::size(kCrew) ? kCrew[i] : "Ghostbuster " + std::to_string(i + 1));
    const std::int64_t ready_ms = kReadyMs[i % std::size(kReadyMs)];
    sayf("  %-8s needs %3lld ms to get ready", names.back().c_str(),
         static_cast<long long>(ready_ms));
    busters.push_back(pool.submit(ghostbuster, names.back(), ready_ms, base + ".ecto1",
                                  base + ".siren", base + ".pool", base + ".trap"));
  }
  std::vector<std::string> aboard;
  for (unsigned i = 0; i < team; ++i)
    aboard.push_back(ecto1.get_for(10s).value());
  std::string order;
  for (const auto& n : aboard)
    order += (order.empty() ? "" : ", ") + n;
  sayf("  boarded Ecto-1: %s. Siren on!", order.c_str());
  siren.set();

  sayf("Part 2: main releases %d ghosts into the ghost pool (a Queue of 8: main waits when it is",
       kGhosts);
  say("full); the Ghostbusters catch them into the trap (another Queue) until the pool is closed");
  say("and empty.");
  for (std::int32_t id = 1; id <= kGhosts; ++id) {
    ghost_pool.put_for(Ghost{id, kKinds[static_cast<std::size_t>(id) % std::size(kKinds)], ""}, 10s)
        .value();
  }
  ghost_pool.close();
  std::map<std::string, std::int64_t> said;
  std::int64_t caught_total = 0;
  for (unsigned i = 0; i < team; ++i) {
    said[names[i]] = busters[i].get();
    caught_total += said[names[i]];
  }
  trap.close();  // every Ghostbuster is done: what is in the trap is all there is
  std::map<std::string, std::int64_t> in_trap;
  std::vector<int> ids(static_cast<std::size_t>(kGhosts) + 1, 0);
  std::int64_t trapped = 0;
  for (;;) {
    auto g = trap.try_get();
    if (!g) break;
    ++trapped;
    ++in_trap[g->caught_by];
    if (g->id >= 1 && g->id <= kGhosts) ++ids[static_cast<std::size_t>(g->id)];
  }
  bool tallies_match = in_trap.size() <= names.size();
  for (const auto& n : names) {
    sayf("  %-8s says %2lld caught; the trap holds %2lld with that name on", n.c_str(),
         static_cast<long long>(said[n]), static_cast<long long>(in_trap[n]));
    tallies_match = tallies_match && said[n] == in_trap[n];
  }
  const bool each_once = std::all_of(ids.begin() + 1, ids.end(), [](int k) { return k == 1; });
  v.check(aboard.size() == team, strf("all %u Ghostbusters boarded Ecto-1", team));
  v.check(trapped == kGhosts && caught_total == kGhosts && each_once,
          strf("the totals match: %d released, %lld caught, %lld in the trap, each ghost once",
               kGhosts, static_cast<long long>(caught_total), static_cast<long long>(trapped)));
  v.check(tallies_match, "each Ghostbuster's own count matches the trap's tally for that name");
  return v.exit_code();
}

}  // namespace ferry::demos
