// pool: Pool.map, imap_unordered and futures with as_completed (Python: poolmp.py and
// concurrent.futures). supervisor: workers crash at random; the pool replaces them and every
// task completes. distributed: map-reduce over all the pool's workers.
#include <unistd.h>

#include <algorithm>
#include <cereal/types/map.hpp>
#include <cereal/types/string.hpp>
#include <cmath>
#include <csignal>
#include <map>
#include <numbers>
#include <random>
#include <ranges>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tour.hpp"

namespace ferry::demos {
namespace {

// ---- pool

std::int64_t collatz_steps(std::int64_t n) {
  std::int64_t steps = 0;
  for (; n > 1; ++steps)
    n = n % 2 == 0 ? n / 2 : 3 * n + 1;
  return steps;
}

std::int64_t nap_then_echo(std::int64_t ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

std::int64_t slow_square(std::int64_t x, std::int64_t ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return x * x;
}

// ---- supervisor

// Squares x after a little work. A doomed task kills its own worker the first time it runs
// (as a segfault would); when the pool re-runs it on another worker it completes.
std::int64_t fragile_square(std::int64_t x, bool doomed, std::string marks) {
  if (doomed) {
    auto m = Array<std::uint8_t>::open(marks).value();
    const bool first = m.with_lock([&](std::span<std::uint8_t> s) {
                          auto& mark = s[static_cast<std::size_t>(x)];
                          mark = static_cast<std::uint8_t>(mark + 1);
                          return mark == 1;
                        }).value();
    if (first) std::raise(SIGKILL);
  }
  builtin::spin_ms(5);
  return x * x;
}

// ---- distributed

using Counts = std::map<std::string, std::int64_t>;

// The map step: everything it needs comes in its argument and everything it finds goes out in
// its result, so it runs the same on any worker, local or (with --listen) remote.
Counts count_words(std::string text) {
  Counts c;
  std::istringstream in(text);
  std::string w;
  while (in >> w)
    ++c[w];
  return c;
}

// Monte Carlo: how many of `samples` random points of the unit square fall in the quarter
// circle. Seeded by the caller, so the estimate is the same on every run.
std::int64_t quarter_circle_hits(std::int64_t seed) {
  std::mt19937_64 rng(static_cast<std::uint64_t>(seed));
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::int64_t hits = 0;
  for (int i = 0; i < 250'000; ++i) {
    const double x = u(rng);
    const double y = u(rng);
    hits += x * x + y * y <= 1.0 ? 1 : 0;
  }
  return hits;
}

std::string join(const std::vector<std::int64_t>& xs, std::size_t max = 100) {
  std::string s;
  for (std::size_t i = 0; i < xs.size() && i < max; ++i)
    s += (i ? " " : "") + std::to_string(xs[i]);
  if (xs.size() > max) s += " ...";
  return s;
}

}  // namespace

FERRY_TASK(collatz_steps);
FERRY_TASK(nap_then_echo);
FERRY_TASK(slow_square);
FERRY_TASK(fragile_square);
FERRY_TASK(count_words);
FERRY_TASK(quarter_circle_hits);

int pool(const Options& opt) {
  Verdict v;
  Pool pool(lesson_pool(opt));
  await_workers(pool);
  sayf("A pool of %u worker processes, used three ways.", pool.size());

  say("1) map: Collatz steps of 1..40, in chunks, results in input order (Python: pool.map).");
  const auto steps = pool.map(collatz_steps, std::views::iota(std::int64_t{1}, std::int64_t{41}));
  std::vector<std::int64_t> local;
  for (std::int64_t n = 1; n <= 40; ++n)
    local.push_back(collatz_steps(n));
  sayf("   %s", join(steps, 20).c_str());
  v.check(steps == local, "map returned every result, in input order");

  say("2) imap_unordered: naps of different lengths; results stream back as they finish,");
  say("   each with its input's index.");
  const std::vector<std::int64_t> naps{120, 20, 80, 40, 100, 10};
  std::vector<int> seen(naps.size(), 0);
  bool right = true;
  for (auto& [index, value] : pool.imap_unordered(nap_then_echo, naps, 1)) {
    sayf("   input #%zu (%lld ms) finished", index, static_cast<long long>(value));
    seen[index] += 1;
    right = right && naps[index] == value;
  }
  v.check(right && std::all_of(seen.begin(), seen.end(), [](int k) { return k == 1; }),
          strf("every one of the %zu inputs came back once, with its index", naps.size()));

  say("3) futures: submit() returns a Future at once; as_completed() yields them as they");
  say("   finish (Python: executor.submit and concurrent.futures.as_completed).");
  const std::vector<std::int64_t> delays{90, 30, 60, 10, 50, 20};
  std::vector<Future<std::int64_t>> futures;
  for (std::size_t i = 0; i < delays.size(); ++i)
    futures.push_back(pool.submit(slow_square, static_cast<std::int64_t>(i + 1), delays[i]));
  std::map<std::uint64_t, std::size_t> which;
  for (std::size_t i = 0; i < futures.size(); ++i)
    which[futures[i].id()] = i;
  auto done = ferry::as_completed(futures);
  std::size_t count = 0;
  bool squares = true;
  while (auto f = done.next()) {
    const std::size_t i = which.at(f->id());
    const std::int64_t x = static_cast<std::int64_t>(i + 1);
    const std::int64_t r = f->get();
    sayf("   square(%lld) after %lld ms = %lld", static_cast<long long>(x),
         static_cast<long long>(delays[i]), static_cast<long long>(r));
    squares = squares && r == x * x;
    ++count;
  }
  v.check(squares && count == delays.size(),
          strf("as_completed yielded all %zu futures with the right values", count));
  return v.exit_code();
}

int supervisor(const Options& opt) {
  Verdict v;
  constexpr std::int64_t kTasks = 24;
  auto popt = lesson_pool(opt);
  if (popt.max_retries == 0) {
    say("(--max-retries 0 would let a crashed task fail; this lesson runs with 1 retry)");
    popt.max_retries = 1;
  }
  // Which tasks crash their worker is drawn at random on every run.
  std::vector<std::int64_t> order(kTasks);
  for (std::int64_t i = 0; i < kTasks; ++i)
    order[static_cast<std::size_t>(i)] = i;
  std::mt19937 rng(std::random_device{}());
  std::shuffle(order.begin(), order.end(), rng);
  const std::size_t crashes = 3 + rng() % 3;
  std::vector<bool> doomed(kTasks, false);
  for (std::size_t i = 0; i < crashes; ++i)
    doomed[static_cast<std::size_t>(order[i])] = true;

  sayf("%lld tasks; %zu of them, chosen at random, kill their worker process the first time",
       static_cast<long long>(kTasks), crashes);
  say("they run. The coordinator sees each death, starts a replacement worker and runs the");
  sayf("task again (up to %u retries). Every caller still gets its one result.", popt.max_retries);
  const std::string marks_name = unique_name("supervisor.marks");
  auto marks = Array<std::uint8_t>::create(marks_name, kTasks, 0).value();
  Pool pool(std::move(popt));
  await_workers(pool);
  const auto t0 = Clock::now();
  std::vector<Future<std::int64_t>> fs;
  for (std::int64_t x = 0; x < kTasks; ++x)
    fs.push_back(pool.submit(fragile_square, x,
                             static_cast<bool>(doomed[static_cast<std::size_t>(x)]), marks_name));
  std::int64_t right = 0;
  for (std::int64_t x = 0; x < kTasks; ++x)
    right += fs[static_cast<std::size_t>(x)].get() == x * x ? 1 : 0;
  const double ms = ms_since(t0);
  await_workers(pool);  // the last replacement has registered
  const PoolStats st = pool.stats();
  sayf("  all results in after %.0f ms. Summary:", ms);
  sayf("  tasks %llu, succeeded %lld, retries %llu, worker deaths %llu, workers started %llu",
       static_cast<unsigned long long>(st.submitted), static_cast<long long>(right),
       static_cast<unsigned long long>(st.retries),
       static_cast<unsigned long long>(st.worker_deaths),
       static_cast<unsigned long long>(st.workers_spawned));
  say("  worker  pid      tasks done  state");
  for (const auto& w : st.workers) {
    sayf("  w%-6u %-8d %10llu  %s", w.id, w.pid, static_cast<unsigned long long>(w.tasks),
         w.alive ? "alive" : "died, replaced");
  }
  v.check(right == kTasks, strf("every task completed with the right result: %lld of %lld",
                                static_cast<long long>(right), static_cast<long long>(kTasks)));
  v.check(st.worker_deaths == crashes && st.retries == crashes,
          strf("each of the %zu crashes was seen and its task re-run once", crashes));
  v.check(st.workers_spawned == pool.size() + crashes,
          strf("%zu replacement workers were started", crashes));
  return v.exit_code();
}

int distributed(const Options& opt) {
  Verdict v;
  // Generated text with a skewed word distribution, so the top words stand out.
  static const char* kVocab[] = {"the",   "ghost",     "trap",       "slime",       "proton",
                                 "pack",  "ecto",      "stream",     "never",       "cross",
                                 "who",   "you",       "gonna",      "call",        "library",
                                 "gozer", "keymaster", "gatekeeper", "marshmallow", "containment",
                                 "unit",  "spook",     "central",    "park"};
  constexpr std::size_t kLines = 4000;
  constexpr std::size_t kWordsPerLine = 12;
  constexpr std::size_t kLinesPerChunk = 100;
  std::mt19937 rng(1984);
  std::vector<std::string> chunks;
  std::string text;
  std::string chunk;
  for (std::size_t l = 0; l < kLines; ++l) {
    for (std::size_t w = 0; w < kWordsPerLine; ++w) {
      const auto a = rng() % std::size(kVocab);
      const auto b = rng() % std::size(kVocab);
      chunk += kVocab[std::min(a, b)];
      chunk += w + 1 < kWordsPerLine ? ' ' : '\n';
    }
    if ((l + 1) % kLinesPerChunk == 0) {
      text += chunk;
      chunks.push_back(std::move(chunk));
      chunk.clear();
    }
  }

  const bool listening = !opt.listen.empty();
  Pool pool(lesson_pool(opt, 1, true));
  await_workers(pool);
  if (listening) {
    // The demos' tasks are in their task library: remote workers load it with --tasks.
    const auto& libs = TaskRegistry::instance().libraries();
    const std::string lib = libs.empty() ? std::string("libferry_demos.so") : libs.front();
    sayf("Listening on %s for remote workers (ferry-worker --tasks %s --connect %s).",
         pool.listen_endpoint().c_str(), lib.c_str(), pool.listen_endpoint().c_str());
    if (!coordinator::await_joined_workers(pool, opt)) {
      v.check(false, "the workers asked for (--wait-workers) joined");
      return v.exit_code();
    }
  }
  unsigned joined = 0;  // remote workers present at the start
  for (const auto& w : pool.stats().workers)
    joined += w.remote && w.alive ? 1u : 0u;
  sayf("1) Word count as map-reduce: %zu lines of generated text in %zu chunks, counted (map) on",
       kLines, chunks.size());
  sayf("   %u worker slots, %u of the workers remote; the partial counts are merged in the main",
       pool.size(), joined);
  say("   process (reduce). Each chunk travels in the task's argument and each count comes back");
  say("   as its result: nothing assumes the workers share this machine's memory or files, which");
  say(listening ? "   is why workers on other hosts run the same code."
                : "   is why remote workers joining over --listen would run the same code.");
  const auto t0 = Clock::now();
  const Counts total = pool.map_reduce(
      count_words, chunks, Counts{},
      [](Counts acc, Counts part) {
        for (const auto& [w, n] : part)
          acc[w] += n;
        return acc;
      },
      2);
  const double ms = ms_since(t0);
  const Counts expected = count_words(text);
  std::vector<std::pair<std::int64_t, std::string>> top;
  std::int64_t words = 0;
  for (const auto& [w, n] : total) {
    top.emplace_back(n, w);
    words += n;
  }
  std::sort(top.rbegin(), top.rend());
  std::string line;
  for (std::size_t i = 0; i < 5 && i < top.size(); ++i)
    line += strf("%s%s %lld", i ? ", " : "", top[i].second.c_str(),
                 static_cast<long long>(top[i].first));
  sayf("   %lld words in %.0f ms; top five: %s", static_cast<long long>(words), ms, line.c_str());
  v.check(total == expected, "the merged counts equal a count of the whole text in one process");

  constexpr std::int64_t kPieces = 16;
  sayf("2) Monte Carlo pi: %lld pieces of 250000 random points each (map), hits summed (reduce).",
       static_cast<long long>(kPieces));
  const std::int64_t hits =
      pool.map_reduce(quarter_circle_hits, std::views::iota(std::int64_t{1}, kPieces + 1),
                      std::int64_t{0}, std::plus<>{}, 1);
  const double pi = 4.0 * static_cast<double>(hits) / (static_cast<double>(kPieces) * 250'000.0);
  sayf("   pi ~ %.5f (error %.5f)", pi, std::abs(pi - std::numbers::pi));
  v.check(std::abs(pi - std::numbers::pi) < 0.01, "the estimate is within 0.01 of pi");

  const PoolStats st = pool.stats();
  say("   worker  where                         pid      tasks");
  unsigned busy = 0, remote_busy = 0, remote_seen = 0;
  for (const auto& w : st.workers) {
    const std::string where =
        w.remote ? "remote " + w.host + (w.name.empty() ? "" : " (" + w.name + ")") : "local";
    sayf("   w%-6u %-29s %-8d %5llu", w.id, where.c_str(), w.pid,
         static_cast<unsigned long long>(w.tasks));
    busy += w.tasks > 0 ? 1u : 0u;
    remote_seen += w.remote ? 1u : 0u;
    remote_busy += w.remote && w.tasks > 0 ? 1u : 0u;
  }
  sayf("   %u of %zu workers took part, %u of them remote", busy, st.workers.size(), remote_busy);
  if (listening) {
    v.check(remote_seen == 0 || remote_busy == remote_seen,
            strf("every remote worker that joined took part (%u of %u)", remote_busy, remote_seen));
  } else {
    say("   (add --listen tcp://HOST:PORT, and `ferry-worker --tasks libferry_demos.so --connect`");
    say("   on other hosts, to spread this over machines; deploy/local-cluster.sh does so across");
    say("   network namespaces)");
  }
  return v.exit_code();
}

}  // namespace ferry::demos
