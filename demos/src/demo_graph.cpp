// pipeline-graph: a task graph (parse -> count -> merge) built with futures as arguments, one
// branch failing on a corrupt document and its dependants reported as DependencyFailed.
#include <cereal/types/map.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tour.hpp"

namespace ferry::demos {
namespace {

using Counts = std::map<std::string, std::int64_t>;

std::vector<std::string> parse_doc(std::string doc) {
  if (doc.find("\x7f") != std::string::npos)
    throw std::invalid_argument("corrupt document: byte 0x7f at offset " +
                                std::to_string(doc.find("\x7f")));
  std::vector<std::string> words;
  std::istringstream in(doc);
  for (std::string w; in >> w;)
    words.push_back(w);
  return words;
}

Counts count_tokens(std::vector<std::string> words) {
  Counts c;
  for (auto& w : words)
    ++c[w];
  return c;
}

Counts merge_counts(Counts a, Counts b) {
  for (auto& [w, n] : b)
    a[w] += n;
  return a;
}

std::int64_t total(const Counts& c) {
  std::int64_t n = 0;
  for (const auto& [w, k] : c)
    n += k;
  return n;
}

}  // namespace

FERRY_TASK(parse_doc);
FERRY_TASK(count_tokens);
FERRY_TASK(merge_counts);

int pipeline_graph(const Options& opt) {
  Verdict v;
  const std::vector<std::string> docs{"the ferry takes the cars", "the cars leave the ferry",
                                      "a gull follows the ferry",
                                      std::string("the log is \x7f broken")};
  say("Four documents go through parse -> count, then pairs are merged, then the two merges");
  say("are merged: 4 + 4 + 2 + 1 tasks. Each submit() passes the Futures of the tasks it needs");
  say("as its arguments, so the whole graph is handed to the pool at once; each task waits in");
  say("the pool until its inputs have values. Document 4 is corrupt: its parse fails.");
  Pool pool(lesson_pool(opt));
  await_workers(pool);
  const auto t0 = Clock::now();
  std::vector<Future<Counts>> counted;
  for (const auto& d : docs)
    counted.push_back(pool.submit(count_tokens, pool.submit(parse_doc, d)));
  auto left = pool.submit(merge_counts, counted[0], counted[1]);
  auto right = pool.submit(merge_counts, counted[2], counted[3]);
  auto all = pool.submit(merge_counts, left, right);
  const double submit_ms = ms_since(t0);
  sayf("  the 11 tasks were submitted in %.2f ms, without waiting for any of them", submit_ms);

  Counts expected;
  for (int i = 0; i < 2; ++i)
    expected = merge_counts(expected, count_tokens(parse_doc(docs[static_cast<std::size_t>(i)])));
  const Counts got = left.get();
  sayf("  merge(doc 1, doc 2): %lld words, \"the\" x %lld, \"ferry\" x %lld",
       static_cast<long long>(total(got)), static_cast<long long>(got.at("the")),
       static_cast<long long>(got.at("ferry")));
  v.check(got == expected, "the healthy branch merged to the same counts as a local count");

  auto failed_as = [](const FutureBase& f) -> std::string {
    try {
      f.wait();
      if (auto fl = f.failure()) throw_failure(*fl);
      return "no failure";
    } catch (const TaskFailure& e) {
      return e.what();
    }
  };
  const std::string why_right = failed_as(right);
  const std::string why_all = failed_as(all);
  sayf("  merge(doc 3, doc 4): %s", why_right.c_str());
  sayf("  merge of both:       %s", why_all.c_str());
  v.check(why_right.rfind("DependencyFailed", 0) == 0 &&
              why_right.find("corrupt document") != std::string::npos,
          "the failing branch's merge is DependencyFailed, naming the corrupt document");
  v.check(why_all.rfind("DependencyFailed", 0) == 0,
          "and the final merge fails the same way, without running");
  v.check(counted[2].get().at("gull") == 1, "the other document of that branch was counted");
  return v.exit_code();
}

}  // namespace ferry::demos
