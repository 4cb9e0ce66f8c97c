// race: lost updates on a shared Value without a lock, none with one.
// lock: "mess" and "neat" — lines written a character at a time, without and with a Lock.
#include <atomic>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tour.hpp"

namespace ferry::demos {
namespace {

// ---- race (Python: race.py and lock_ex.py)

void spin_for(std::chrono::nanoseconds d) {
  const auto until = Clock::now() + d;
  while (Clock::now() < until) {
  }
}

// Adds 1 to the shared counter n times. Each addition is a separate read and write: without a
// lock, two processes that read the same old value both write old + 1, and one addition is
// lost. (atomic_ref keeps each read and each write whole; it does not make the pair atomic.)
std::int64_t race_add(std::string counter, std::string lock, std::string ready,
                      std::int64_t parties, std::int64_t n) {
  auto c = Value<std::int64_t>::open(counter).value();
  std::optional<Lock> l;
  if (!lock.empty()) l = Lock::open(lock).value();
  // Start together: each adder spins until all have arrived, so all are on a CPU at once
  // (an Event's wake-up could leave one still waiting for a CPU on a busy machine).
  auto r = Value<std::int64_t>::open(ready).value();
  std::atomic_ref<std::int64_t> arrived(*r.raw());
  arrived.fetch_add(1);
  const auto give_up = Clock::now() + 5s;
  while (arrived.load() < parties) {
    if (Clock::now() > give_up) throw std::runtime_error("the other adders never arrived");
    std::this_thread::yield();  // (lets a late adder in if it shares our CPU)
  }
  std::atomic_ref<std::int64_t> x(*c.raw());
  for (std::int64_t i = 0; i < n; ++i) {
    std::optional<ipc::LockGuard> g;
    if (l) g = l->guard().value();
    const std::int64_t seen = x.load(std::memory_order_relaxed);
    // A little work between the read and the write (a few microseconds, as an interpreter
    // spends between bytecodes): adders running at once overlap there, and one preempted there
    // writes a stale value when it resumes. Busy, not a yield: a yield hands the CPU to any
    // other runnable process, which on a loaded machine turned 10,000 additions into seconds.
    spin_for(2us);
    x.store(seen + 1, std::memory_order_relaxed);
  }
  return n;
}

// ---- lock (Python: lock.py)

constexpr std::string_view kAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

// Writes `lines` alphabet lines onto the shared screen one character at a time, each at the
// next free position (a shared cursor), pausing between characters as print() would. With a
// lock held for a whole line, nobody else's characters can land inside it.
std::int64_t lock_write_lines(std::string screen, std::string cursor, std::string lock,
                              std::string start, std::int64_t lines) {
  auto s = Array<char>::open(screen).value();
  auto c = Value<std::uint32_t>::open(cursor).value();
  std::optional<Lock> l;
  if (!lock.empty()) l = Lock::open(lock).value();
  Event::open(start).value().wait_for(5s).value();
  std::atomic_ref<std::uint32_t> next(*c.raw());
  const auto out = s.raw();
  for (std::int64_t k = 0; k < lines; ++k) {
    std::optional<ipc::LockGuard> g;
    if (l) g = l->guard().value();
    for (char ch : kAlphabet) {
      const auto pos = next.fetch_add(1);
      if (pos < out.size()) out[pos] = ch;
      std::this_thread::sleep_for(50us);
    }
  }
  return lines;
}

}  // namespace

FERRY_TASK(race_add);
FERRY_TASK(lock_write_lines);

int race(const Options& opt) {
  Verdict v;
  constexpr std::int64_t kAdds = 10'000;
  Pool pool(lesson_pool(opt, 2));
  await_workers(pool);
  const unsigned n = pool.size();
  const std::int64_t expected = kAdds * n;
  sayf("%u processes each add 1 to a shared Value %lld times: the total should be %lld.", n,
       static_cast<long long>(kAdds), static_cast<long long>(expected));

  // One run: a fresh counter; returns the total and how long the adders took.
  auto run = [&](bool locked) {
    const std::string counter_name = unique_name("race.counter");
    const std::string lock_name = locked ? unique_name("race.lock") : std::string();
    const std::string ready_name = unique_name("race.ready");
    auto counter = Value<std::int64_t>::create(counter_name, 0).value();
    auto ready = Value<std::int64_t>::create(ready_name, 0).value();
    std::optional<Lock> lock;
    if (locked) lock = Lock::create(lock_name).value();
    const auto t0 = Clock::now();
    std::vector<Future<std::int64_t>> fs;
    for (unsigned i = 0; i < n; ++i) {
      fs.push_back(pool.submit(race_add, counter_name, lock_name, ready_name,
                               static_cast<std::int64_t>(n), kAdds));
    }
    for (auto& f : fs)
      f.get();
    return std::pair{counter.get().value(), ms_since(t0)};
  };

  const auto [unlocked, unlocked_ms] = run(false);
  const std::int64_t lost = expected - unlocked;
  sayf("  without a lock: counter = %lld of %lld (%.0f ms)", static_cast<long long>(unlocked),
       static_cast<long long>(expected), unlocked_ms);
  if (lost > 0) {
    sayf(
        "    %lld updates were lost (%.1f%%): two processes read the same value and both wrote "
        "value + 1.",
        static_cast<long long>(lost),
        100.0 * static_cast<double>(lost) / static_cast<double>(expected));
  } else {
    say("    no update was lost this time: the processes happened not to overlap (a race is a");
    say("    possibility, not a certainty; run it again, or with more workers).");
  }
  const auto [locked, locked_ms] = run(true);
  sayf("  with a Lock:    counter = %lld of %lld (%.0f ms)", static_cast<long long>(locked),
       static_cast<long long>(expected), locked_ms);
  say("    the lock makes each read-add-write whole; it costs time, since the adders now take "
      "turns.");
  v.check(unlocked <= expected, "without a lock, updates can only be lost, never invented");
  v.check(locked == expected,
          strf("with a Lock the count is exact: %lld == %u x %lld", static_cast<long long>(locked),
               n, static_cast<long long>(kAdds)));
  return v.exit_code();
}

int lock(const Options& opt) {
  Verdict v;
  Pool pool(lesson_pool(opt, 2));
  await_workers(pool);
  const unsigned n = pool.size();
  constexpr std::int64_t kLinesEach = 3;
  const std::size_t lines = n * static_cast<std::size_t>(kLinesEach);
  const std::size_t width = kAlphabet.size();
  sayf("%u processes each write %lld alphabet lines onto one shared screen, a character at a", n,
       static_cast<long long>(kLinesEach));
  say("time (the screen is shared memory; each character goes to the next free position).");

  // One run; returns the screen cut into lines of the alphabet's width.
  auto run = [&](bool locked) {
    const std::string screen_name = unique_name("lock.screen");
    const std::string cursor_name = unique_name("lock.cursor");
    const std::string lock_name = locked ? unique_name("lock.lock") : std::string();
    const std::string start_name = unique_name("lock.start");
    auto screen = Array<char>::create(screen_name, lines * width, ' ').value();
    auto cursor = Value<std::uint32_t>::create(cursor_name, 0).value();
    std::optional<Lock> l;
    if (locked) l = Lock::create(lock_name).value();
    auto start = Event::create(start_name).value();
    std::vector<Future<std::int64_t>> fs;
    for (unsigned i = 0; i < n; ++i) {
      fs.push_back(pool.submit(lock_write_lines, screen_name, cursor_name, lock_name, start_name,
                               kLinesEach));
    }
    start.set();
    for (auto& f : fs)
      f.get();
    const auto all = screen.snapshot().value();
    std::vector<std::string> rows;
    for (std::size_t r = 0; r < lines; ++r)
      rows.emplace_back(all.begin() + static_cast<std::ptrdiff_t>(r * width),
                        all.begin() + static_cast<std::ptrdiff_t>((r + 1) * width));
    return rows;
  };
  auto whole = [&](const std::vector<std::string>& rows) {
    std::size_t k = 0;
    for (const auto& r : rows)
      k += r == kAlphabet ? 1u : 0u;
    return k;
  };

  say("-------------------- mess (no lock)");
  const auto mess = run(false);
  for (const auto& r : mess)
    sayf("  %s", r.c_str());
  const std::size_t mess_whole = whole(mess);
  sayf("  %zu of %zu lines came out whole", mess_whole, lines);
  if (mess_whole == lines) {
    say("  (no interleaving this time: the writers happened not to overlap)");
  }
  say("-------------------- neat (a Lock held for each line)");
  const auto neat = run(true);
  for (const auto& r : neat)
    sayf("  %s", r.c_str());
  const std::size_t neat_whole = whole(neat);
  sayf("  %zu of %zu lines came out whole", neat_whole, lines);
  v.check(neat_whole == lines,
          strf("with the Lock every line is whole: %zu of %zu", neat_whole, lines));
  return v.exit_code();
}

}  // namespace ferry::demos
