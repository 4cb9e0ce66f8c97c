// semaphore: producers and customers over a bounded buffer (Python: producers_and_customers.py).
// Two counting semaphores count the free and the filled slots; a Lock guards the buffer.
#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "tour.hpp"

namespace ferry::demos {
namespace {

constexpr std::size_t kCapacity = 5;

// One line of the shop's log, written under the buffer's lock (so in true order).
struct StockEntry {
  std::int32_t who = 0;  // producer k: +k; customer k: -k
  std::int32_t stock = 0;
};

enum Field : std::size_t { kHead, kTail, kStock, kMaxStock, kLogLen, kFields };

struct Shop {
  Semaphore empty;  // free slots
  Semaphore full;   // filled slots
  Lock mutex;       // guards everything below
  Array<std::int64_t> buf;
  Array<std::int64_t> st;
  Array<StockEntry> log;
  Array<std::uint8_t> seen;  // item -> times consumed
  static Shop open(const std::string& base) {
    return {Semaphore::open(base + ".empty").value(),
            Semaphore::open(base + ".full").value(),
            Lock::open(base + ".mutex").value(),
            Array<std::int64_t>::open(base + ".buf").value(),
            Array<std::int64_t>::open(base + ".st").value(),
            Array<StockEntry>::open(base + ".log").value(),
            Array<std::uint8_t>::open(base + ".seen").value()};
  }
  void note(std::int32_t who, std::int64_t stock) {
    auto s = st.raw();
    const auto i = static_cast<std::size_t>(s[kLogLen]++);
    if (i < log.size()) log.raw()[i] = {who, static_cast<std::int32_t>(stock)};
  }
};

// Irregular pauses; customers are slower than producers, so the shelves fill up and the
// producers have to wait for a free one.
void pause_for(std::int64_t ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

std::int64_t shop_produce(std::string base, std::int32_t id, std::int64_t first,
                          std::int64_t count) {
  Shop s = Shop::open(base);
  for (std::int64_t item = first; item < first + count; ++item) {
    s.empty.acquire_for(5s).value();  // wait for a free slot
    {
      auto g = s.mutex.guard().value();
      auto st = s.st.raw();
      s.buf.raw()[static_cast<std::size_t>(st[kTail]) % kCapacity] = item;
      ++st[kTail];
      st[kMaxStock] = std::max(st[kMaxStock], ++st[kStock]);
      s.note(id, st[kStock]);
    }
    s.full.release().value();  // one more filled slot
    pause_for(item % 2);
  }
  return count;
}

std::int64_t shop_consume(std::string base, std::int32_t id, std::int64_t count) {
  Shop s = Shop::open(base);
  std::int64_t sum = 0;
  for (std::int64_t k = 0; k < count; ++k) {
    s.full.acquire_for(5s).value();  // wait for a filled slot
    std::int64_t item = 0;
    {
      auto g = s.mutex.guard().value();
      auto st = s.st.raw();
      item = s.buf.raw()[static_cast<std::size_t>(st[kHead]) % kCapacity];
      ++st[kHead];
      --st[kStock];
      s.note(-id, st[kStock]);
      auto& seen = s.seen.raw()[static_cast<std::size_t>(item)];
      seen = static_cast<std::uint8_t>(seen + 1);
    }
    s.empty.release().value();  // one more free slot
    sum += item;
    pause_for(2 + item % 3);
  }
  return sum;
}

}  // namespace

FERRY_TASK(shop_produce);
FERRY_TASK(shop_consume);

int semaphore(const Options& opt) {
  Verdict v;
  Pool pool(lesson_pool(opt, 2));
  await_workers(pool);
  const unsigned producers = std::max(1u, pool.size() / 2);
  const unsigned customers = pool.size() - producers;
  const std::int64_t per_producer = (12 + producers - 1) / producers;
  const std::int64_t total = per_producer * producers;
  sayf("%u producer(s) and %u customer(s) share a shop with %zu shelves. A Semaphore counts the",
       producers, customers, kCapacity);
  say("free shelves (producers wait on it), another the filled ones (customers wait on it);");
  say("a Lock guards the shelves themselves. Customers are slower, so the shelves fill up and");
  say("producers wait. Each line: who, +/-, the stock, and the stock as dots.");

  const std::string base = unique_name("semaphore");
  // Signalling semaphores: units are released by another process than the one that took them.
  const ipc::SemaphoreOptions signalling{.reclaim_dead_holders = false};
  auto empty =
      Semaphore::create(base + ".empty", static_cast<std::uint32_t>(kCapacity), signalling).value();
  auto full = Semaphore::create(base + ".full", 0, signalling).value();
  auto mutex = Lock::create(base + ".mutex").value();
  auto buf = Array<std::int64_t>::create(base + ".buf", kCapacity, 0).value();
  auto st = Array<std::int64_t>::create(base + ".st", kFields, 0).value();
  auto log = Array<StockEntry>::create(base + ".log", 2 * static_cast<std::size_t>(total)).value();
  auto seen =
      Array<std::uint8_t>::create(base + ".seen", static_cast<std::size_t>(total) + 1, 0).value();

  std::vector<Future<std::int64_t>> made;
  std::vector<Future<std::int64_t>> bought;
  for (unsigned p = 0; p < producers; ++p) {
    made.push_back(pool.submit(shop_produce, base, static_cast<std::int32_t>(p + 1),
                               1 + per_producer * p, per_producer));
  }
  for (unsigned c = 0; c < customers; ++c) {
    const std::int64_t share = total / customers + (c < total % customers ? 1 : 0);
    bought.push_back(pool.submit(shop_consume, base, static_cast<std::int32_t>(c + 1), share));
  }
  std::int64_t produced = 0;
  std::int64_t consumed_sum = 0;
  for (auto& f : made)
    produced += f.get();
  for (auto& f : bought)
    consumed_sum += f.get();

  const auto entries = log.snapshot().value();
  const auto fields = st.snapshot().value();
  for (std::size_t i = 0; i < static_cast<std::size_t>(fields[kLogLen]) && i < entries.size();
       ++i) {
    const auto& e = entries[i];
    sayf("  %s%d %c : %02d %s", e.who > 0 ? "producer" : "customer", e.who > 0 ? e.who : -e.who,
         e.who > 0 ? '+' : '-', e.stock,
         std::string(static_cast<std::size_t>(e.stock), '.').c_str());
  }
  const auto marks = seen.snapshot().value();
  const bool once =
      std::all_of(marks.begin() + 1, marks.end(), [](std::uint8_t m) { return m == 1; });
  v.check(produced == total, strf("%lld items were produced", static_cast<long long>(produced)));
  v.check(once && consumed_sum == total * (total + 1) / 2,
          strf("every item was bought exactly once (%lld items)", static_cast<long long>(total)));
  v.check(fields[kMaxStock] <= static_cast<std::int64_t>(kCapacity) && fields[kStock] == 0,
          strf("the stock never exceeded the %zu shelves (peak %lld) and ended at 0", kCapacity,
               static_cast<long long>(fields[kMaxStock])));
  return v.exit_code();
}

}  // namespace ferry::demos
