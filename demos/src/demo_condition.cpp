// condition: producer/consumer with a condition variable (Python: cond.py). The Condition's
// own lock guards a small shared buffer; waiters sleep until the buffer changes.
#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "tour.hpp"

namespace ferry::demos {
namespace {

constexpr std::size_t kShelf = 3;

enum Field : std::size_t { kHead, kTail, kClaimed, kPeak, kLogLen, kFields };

struct CondEntry {
  std::int32_t who = 0;  // 0: the producer; k: consumer k
  std::int32_t item = 0;
  std::int32_t count = 0;  // items in the buffer afterwards
};

struct Buffer {
  Condition cond;  // its lock guards everything below (raw access is safe under it)
  Array<std::int64_t> items;
  Array<std::int64_t> st;
  Array<CondEntry> log;
  static Buffer open(const std::string& base) {
    return {Condition::open(base + ".cond").value(),
            Array<std::int64_t>::open(base + ".items").value(),
            Array<std::int64_t>::open(base + ".st").value(),
            Array<CondEntry>::open(base + ".log").value()};
  }
  std::int64_t count() const {
    auto s = st.raw();
    return s[kTail] - s[kHead];
  }
  void note(std::int32_t who, std::int64_t item) {
    auto s = st.raw();
    const auto i = static_cast<std::size_t>(s[kLogLen]++);
    if (i < log.size()) {
      log.raw()[i] = {who, static_cast<std::int32_t>(item), static_cast<std::int32_t>(count())};
    }
  }
};

void cond_produce(std::string base, std::int64_t total) {
  Buffer b = Buffer::open(base);
  for (std::int64_t item = 1; item <= total; ++item) {
    auto g = b.cond.lock().value();
    // Wait (the lock released meanwhile) until there is room.
    b.cond
        .wait(
            g, [&] { return b.count() < static_cast<std::int64_t>(kShelf); },
            ipc::Deadline::after(5s))
        .value();
    auto s = b.st.raw();
    b.items.raw()[static_cast<std::size_t>(s[kTail]) % kShelf] = item;
    ++s[kTail];
    s[kPeak] = std::max(s[kPeak], b.count());
    b.note(0, item);
    b.cond.notify_all();  // with the lock held, so no waiter misses it
    g.unlock();
    std::this_thread::sleep_for(std::chrono::milliseconds(item % 3));
  }
}

std::vector<std::int64_t> cond_consume(std::string base, std::int32_t id, std::int64_t total) {
  Buffer b = Buffer::open(base);
  std::vector<std::int64_t> got;
  for (;;) {
    auto g = b.cond.lock().value();
    auto s = b.st.raw();
    b.cond
        .wait(
            g, [&] { return b.count() > 0 || s[kClaimed] == total; }, ipc::Deadline::after(5s))
        .value();
    if (b.count() == 0) break;  // every item has been taken
    const std::int64_t item = b.items.raw()[static_cast<std::size_t>(s[kHead]) % kShelf];
    ++s[kHead];
    ++s[kClaimed];
    b.note(id, item);
    b.cond.notify_all();  // the producer may be waiting for room, consumers for the end
    g.unlock();
    got.push_back(item);
    std::this_thread::sleep_for(std::chrono::milliseconds(1 + item % 2));
  }
  return got;
}

}  // namespace

FERRY_TASK(cond_produce);
FERRY_TASK(cond_consume);

int condition(const Options& opt) {
  Verdict v;
  Pool pool(lesson_pool(opt, 2));
  await_workers(pool);
  const unsigned consumers = pool.size() - 1;
  constexpr std::int64_t kTotal = 10;
  sayf("One producer and %u consumer process(es) share a %zu-item buffer guarded by a Condition.",
       consumers, kShelf);
  say("The producer waits on it while the buffer is full; consumers wait while it is empty;");
  say("each change is announced with notify_all(). The log is written under the lock.");
  const std::string base = unique_name("condition");
  auto cond = Condition::create(base + ".cond").value();
  auto items = Array<std::int64_t>::create(base + ".items", kShelf, 0).value();
  auto st = Array<std::int64_t>::create(base + ".st", kFields, 0).value();
  auto log = Array<CondEntry>::create(base + ".log", 2 * kTotal).value();

  auto producer = pool.submit(cond_produce, base, kTotal);
  std::vector<Future<std::vector<std::int64_t>>> fs;
  for (unsigned c = 0; c < consumers; ++c)
    fs.push_back(pool.submit(cond_consume, base, static_cast<std::int32_t>(c + 1), kTotal));
  producer.get();
  std::vector<std::int64_t> all;
  for (unsigned c = 0; c < consumers; ++c) {
    const auto got = fs[c].get();
    all.insert(all.end(), got.begin(), got.end());
  }
  const auto entries = log.snapshot().value();
  const auto fields = st.snapshot().value();
  for (std::size_t i = 0; i < static_cast<std::size_t>(fields[kLogLen]) && i < entries.size();
       ++i) {
    const auto& e = entries[i];
    if (e.who == 0) {
      sayf("  producer   made item %2d   (buffer: %d)", e.item, e.count);
    } else {
      sayf("  consumer%d  took item %2d   (buffer: %d)", e.who, e.item, e.count);
    }
  }
  std::sort(all.begin(), all.end());
  std::vector<std::int64_t> expected(kTotal);
  for (std::int64_t i = 0; i < kTotal; ++i)
    expected[static_cast<std::size_t>(i)] = i + 1;
  v.check(all == expected,
          strf("all %lld items were consumed, each exactly once", static_cast<long long>(kTotal)));
  v.check(fields[kPeak] <= static_cast<std::int64_t>(kShelf),
          strf("the buffer never held more than %zu items (peak %lld)", kShelf,
               static_cast<long long>(fields[kPeak])));
  return v.exit_code();
}

}  // namespace ferry::demos
