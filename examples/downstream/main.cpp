// wordcount: a program over the task library libwordstats.so.
//
//   wordcount local LIB                  a pool of 2 local workers (copies of this program)
//   wordcount coordinate LIB KEYS        a pool of remote workers only, on 127.0.0.1 with CURVE
//                                        keys; prints "listening on ENDPOINT", waits for 2
//   wordcount --ferry-worker --tasks LIB --connect EP --keys KEYS [--name N]
//                                        this program as a remote worker (ferry-worker's options)
//   wordcount cli [ferry-coordinator's options and command]
//                                        the command line over this program's tasks
//
// The library's task is called by name with its types (wordstats.hpp); shout is this
// program's own task, so only workers that are copies of this program serve it.
#include <ferry/coordinator/cli.hpp>
#include <ferry/ferry.hpp>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "wordstats.hpp"

std::string shout(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return s;
}
FERRY_TASK(shout);

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

}  // namespace

int main(int argc, char** argv) {
  // In a worker (a local copy, or `wordcount --ferry-worker ...`) this serves tasks and exits.
  ferry::init(argc, argv);
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
  std::cerr << "usage: wordcount local LIB | wordcount coordinate LIB KEYS | "
               "wordcount --ferry-worker ... | wordcount cli ...\n";
  return 2;
}
