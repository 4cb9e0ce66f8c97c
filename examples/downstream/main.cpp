// wordcount: a program over the task library libwordstats.so.
//
//   wordcount local LIB                  a pool of 2 local workers (copies of this program)
//   wordcount coordinate LIB KEYS        a pool of remote workers only, on 127.0.0.1 with CURVE
//                                        keys; prints "listening on ENDPOINT", waits for 2
//   wordcount --ferry-worker --tasks LIB --connect EP --keys KEYS [--name N]
//                                        this program as a remote worker (ferry-worker's options)
//   wordcount cli [ferry-coordinator's options and command]
//                                        the command line over this program's tasks
//   wordcount count N                    counts the words of N texts with map_reduce, folding
//                                        on the coordinator, then inside the workers
//   wordcount compose                    futures that compose: a task graph, then, wait_any,
//                                        wait_all, per-call limits, a stop-word list put once
//                                        in the object store, and a tally actor
//
// The library's task is called by name with its types (wordstats.hpp); shout is this
// program's own task, so only workers that are copies of this program serve it.
#include <ferry/coordinator/cli.hpp>
#include <ferry/ferry.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <cereal/types/map.hpp>

#include "wordstats.hpp"

std::string shout(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return s;
}
FERRY_TASK(shout);

// Word counts of a text, and their merge: with FERRY_COMBINE a map_reduce can merge each
// chunk's counts in its worker and ship one partial per chunk instead of one map per text.
using Counts = std::map<std::string, std::int64_t>;
Counts count_words(std::string text) {
  Counts c;
  std::istringstream in(text);
  for (std::string w; in >> w;)
    ++c[w];
  return c;
}
Counts merge_counts(Counts a, Counts b) {
  if (a.size() < b.size()) std::swap(a, b);
  for (auto& [w, n] : b)
    a[w] += n;
  return a;
}
FERRY_TASK(count_words);
FERRY_COMBINE(count_words, merge_counts);
FERRY_TASK(merge_counts);

// Counts the words of a text that are not in the stop list, which the pool put once in shared
// memory and passes as a ref: each worker decodes it at most once, however many texts it
// counts, and hands this task the one decoded value.
using Words = std::vector<std::string>;
Counts count_content_words(const Words& stop, std::string text) {
  Counts c = count_words(std::move(text));
  for (const auto& w : stop)
    c.erase(w);
  return c;
}
FERRY_TASK(count_content_words);

// An actor: a running tally that lives in a process of its own; its calls run in order.
struct Tally {
  explicit Tally(std::int64_t start) : n(start) {}
  std::int64_t add(std::int64_t k) { return n += k; }
  std::int64_t get() const { return n; }
  std::int64_t n;
};
FERRY_ACTOR(Tally, add, get);

namespace {

using wordstats::Stats;
using wordstats::Text;

std::vector<Text> texts(int n) {
  std::vector<Text> v;
  for (int i = 0; i < n; ++i)
    v.push_back(
        {"text " + std::to_string(i), "the quick brown fox jumps over " +
                                          std::string(static_cast<std::size_t>(i % 7) + 1, 'z')});
  return v;
}

// Runs `n` word_stats and shouts; true if every answer is right.
bool run_job(ferry::Pool& pool, int n) {
  std::vector<ferry::Future<Stats>> stats;
  std::vector<ferry::Future<std::string>> shouts;
  for (const Text& t : texts(n)) {
    stats.push_back(pool.submit_named<Stats>("word_stats", t));
    shouts.push_back(pool.submit(shout, t.title));
  }
  bool ok = true;
  for (int i = 0; i < n; ++i) {
    const Stats s = stats[static_cast<std::size_t>(i)].get();
    const std::string loud = shouts[static_cast<std::size_t>(i)].get();
    ok = ok && s.words == 7 &&
         s.longest.size() == std::max<std::size_t>(5, static_cast<std::size_t>(i % 7) + 1) &&
         loud == "TEXT " + std::to_string(i);
  }
  return ok;
}

// Folds on the coordinator, then in the workers; prints both times; true if they agree.
bool count_job(int n) {
  std::vector<std::string> docs;
  for (int i = 0; i < n; ++i) {
    std::string d;
    for (int w = 0; w < 200; ++w)
      d += "w" + std::to_string((i * 31 + w * 7) % 500) + " ";
    docs.push_back(std::move(d));
  }
  ferry::Pool pool({.workers = 2});
  pool.wait_ready(std::chrono::seconds(30));
  auto timed = [&](bool in_workers) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto before = pool.stats().succeeded;
    Counts c = pool.map_reduce(count_words, docs, Counts{}, merge_counts,
                               {.chunksize = 64, .combine_in_workers = in_workers});
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%-22s %8.1f ms, %6llu results shipped back\n",
                in_workers ? "folded in the workers:" : "folded on coordinator:", ms,
                static_cast<unsigned long long>(pool.stats().succeeded - before));
    return c;
  };
  const Counts on_coordinator = timed(false);
  const Counts in_workers = timed(true);
  std::int64_t words = 0;
  for (const auto& [w, k] : in_workers)
    words += k;
  std::printf("%lld words, %zu distinct\n", static_cast<long long>(words), in_workers.size());
  return on_coordinator == in_workers && words == 200LL * n;
}

// The futures of issue "past Python's pools", used as the README shows; true if all agree.
bool compose_job() {
  using namespace std::chrono_literals;
  ferry::Pool pool({.workers = 2});
  pool.wait_ready(30s);
  const std::string a = "the fox and the dog", b = "the cat and the fox";
  // A graph: merge waits in the pool for both counts, without this thread waiting.
  auto merged = pool.submit(merge_counts, pool.submit(count_words, a), pool.submit(count_words, b));
  auto distinct = merged.then([](const Counts& c) { return c.size(); });
  // Per-call limits, and waiting for any or all of futures of different types.
  auto loud = pool.submit(ferry::with({.timeout = 5s, .max_retries = 0}), shout, std::string("ok"));
  const auto first = ferry::wait_any({merged, loud}, 30s);
  const bool all = ferry::wait_all({merged, distinct, loud}, 30s);
  // The object store: the stop list put once, read by every task from shared memory.
  auto stop = pool.put(Words{"the", "and"});
  // In a starmap too: one shared stop list, a text per item.
  std::vector<std::tuple<ferry::ObjectRef<Words>, std::string>> items;
  for (const auto& text : {a, b})
    items.emplace_back(stop, text);
  Counts content;
  for (auto& part : pool.starmap(count_content_words, items))
    content = merge_counts(std::move(content), std::move(part));
  // An actor: words counted by each text added to one tally, in order.
  auto tally = pool.actor<Tally>(std::int64_t{0});
  for (const auto& text : {a, b})
    (void)tally.call(&Tally::add, static_cast<std::int64_t>(count_words(text).size()));
  const std::int64_t tallied = tally.call(&Tally::get).get();
  // A large intermediate (above the 1 MiB object threshold) stays in the store: finished
  // before its dependant exists, it still goes to merge by name, not through this process.
  std::string many;
  for (int i = 0; i < 150'000; ++i)
    many += "w" + std::to_string(i) + " ";
  auto big = pool.submit(count_words, many);
  big.wait();
  auto big_merged = pool.submit(merge_counts, big, pool.submit(count_words, a));
  const bool kept = big_merged.get().size() == 150'004 && pool.stats().results_kept >= 1;
  std::printf("large intermediate: %s\n", kept ? "kept in the store" : "NOT kept");
  const Counts m = merged.get();
  std::printf(
      "graph: %zu distinct words (then), 'the' x%lld; content words: %zu; tally %lld; first "
      "done: %s\n",
      distinct.get(), static_cast<long long>(m.at("the")), content.size(),
      static_cast<long long>(tallied), first ? (*first == 0 ? "merge" : "shout") : "none");
  return kept && first.has_value() && all && distinct.get() == 5 && m.at("the") == 4 &&
         tallied == 8 && loud.get() == "OK" &&
         content == Counts{{"cat", 1}, {"dog", 1}, {"fox", 2}};
}

}  // namespace

int main(int argc, char** argv) {
  // In a worker (a local copy, or `wordcount --ferry-worker ...`) this serves tasks and exits.
  ferry::init(argc, argv);
  // This process maps over texts: freed buffers are kept for the next task (README: large data).
  (void)ferry::keep_freed_memory();
  const std::vector<std::string> args(argv + 1, argv + argc);
  // The embedded command line: `wordcount cli map shout --items a,b` (its own argv[0] is "cli").
  if (!args.empty() && args[0] == "cli") return ferry::coordinator::run_cli(argc - 1, argv + 1);
  try {
    if (args.size() == 2 && args[0] == "local") {
      ferry::Pool pool({.workers = 2, .task_libraries = {args[1]}});
      const bool ok = run_job(pool, 20);
      std::cout << (ok ? "local ok\n" : "local: wrong answers\n");
      return ok ? 0 : 1;
    }
    if (args.size() == 2 && args[0] == "count") {
      const bool ok = count_job(std::stoi(args[1]));
      std::cout << (ok ? "count ok\n" : "count: the two folds differ\n");
      return ok ? 0 : 1;
    }
    if (args.size() == 1 && args[0] == "compose") {
      const bool ok = compose_job();
      std::cout << (ok ? "compose ok\n" : "compose: wrong answers\n");
      return ok ? 0 : 1;
    }
    if (args.size() == 3 && args[0] == "coordinate") {
      ferry::Pool pool({.workers = 0,
                        .task_libraries = {args[1]},
                        .listen = "tcp://127.0.0.1:0",
                        .keys = args[2]});
      std::cout << "listening on " << pool.listen_endpoint() << std::endl;
      if (!pool.wait_workers(2, std::chrono::seconds(60))) {
        std::cerr << "wordcount: fewer than 2 workers joined\n";
        return 1;
      }
      const bool ok = run_job(pool, 40);
      // shout runs only where this program's tasks are (the copy of this program).
      for (const auto& w : pool.stats().workers)
        std::cout << "worker " << w.name << ": " << w.tasks << " tasks\n";
      pool.shutdown();
      std::cout << (ok ? "remote ok\n" : "remote: wrong answers\n");
      return ok ? 0 : 1;
    }
  } catch (const std::exception& e) {  // a task failure, or a library that cannot be loaded
    std::cerr << "wordcount: " << e.what() << "\n";
    return 1;
  }
  std::cerr << "usage: wordcount local LIB | wordcount coordinate LIB KEYS | wordcount count N | "
               "wordcount compose | "
               "wordcount --ferry-worker ... | wordcount cli ...\n";
  return 2;
}
