// object-store: one large array put once into the pool's object store, read by many tasks by
// handle; the copies counted (one segment written, at most one decode per worker process).
#include <unistd.h>

#include <cereal/types/tuple.hpp>
#include <cereal/types/vector.hpp>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "tour.hpp"

namespace ferry::demos {
namespace {

using Samples = std::vector<std::uint64_t>;
using SliceReport = std::tuple<std::int32_t, std::uint64_t, std::uint64_t>;  // pid, decodes, sum

// Sums its slice of the array, and says which process read it and how many objects that
// process has decoded so far.
SliceReport sum_slice(ObjectRef<Samples> ref, std::int64_t slice, std::int64_t slices) {
  const Samples& a = ref.get();  // the first call in this process decodes; later ones reuse
  const auto n = static_cast<std::int64_t>(a.size());
  std::uint64_t sum = 0;
  for (auto i = n * slice / slices; i < n * (slice + 1) / slices; ++i)
    sum += a[static_cast<std::size_t>(i)];
  return {static_cast<std::int32_t>(::getpid()), object_decodes(), sum};
}

}  // namespace

FERRY_TASK(sum_slice);

int object_store(const Options& opt) {
  Verdict v;
  constexpr std::size_t kMiB = 64;
  constexpr std::int64_t kTasks = 100;
  say("A 64 MiB array is put into the pool's object store once: its encoding is written into");
  say("one shared-memory segment, and pool.put returns an ObjectRef (a name and a size). 100");
  say("tasks each sum a slice of it; each gets the ref, not the array. A worker maps the");
  say("segment and decodes the array on its first task only; its later tasks reuse that copy.");
  Pool pool(lesson_pool(opt));
  await_workers(pool);
  Samples data(kMiB * (1 << 20) / sizeof(std::uint64_t));
  std::uint64_t expected = 0;
  for (std::size_t i = 0; i < data.size(); ++i)
    expected += data[i] = i % 1000;

  const auto t0 = Clock::now();
  auto ref = pool.put(data);
  sayf("  put: %.1f MiB written once, into /dev/shm/%s (%.1f ms)",
       static_cast<double>(ref.size()) / (1 << 20), ref.name().c_str(), ms_since(t0));
  std::vector<Future<SliceReport>> parts;
  for (std::int64_t i = 0; i < kTasks; ++i)
    parts.push_back(pool.submit(sum_slice, ref, i, kTasks));
  std::uint64_t sum = 0;
  std::map<std::int32_t, std::pair<int, std::uint64_t>> by_worker;  // tasks, decodes
  for (auto& f : parts) {
    const auto [pid, decodes, part] = f.get();
    sum += part;
    auto& [tasks, most] = by_worker[pid];
    ++tasks;
    most = std::max(most, decodes);
  }
  const double read_ms = ms_since(t0);
  sayf("  %lld tasks read it in %.1f ms (put included):", static_cast<long long>(kTasks), read_ms);
  std::uint64_t decodes = 0;
  for (const auto& [pid, w] : by_worker) {
    sayf("    worker pid %d: %d tasks, decoded the array %llu time(s)", pid, w.first,
         static_cast<unsigned long long>(w.second));
    decodes += w.second;
  }
  const auto st = pool.stats();
  sayf(
      "  copies: %llu segment written (%.1f MiB), %llu decodes in the workers; passing the "
      "array itself would have copied it %lld times (%lld MiB)",
      static_cast<unsigned long long>(st.objects_put + st.arg_objects),
      static_cast<double>(st.object_bytes_put) / (1 << 20),
      static_cast<unsigned long long>(decodes), static_cast<long long>(kTasks),
      static_cast<long long>(kTasks * static_cast<std::int64_t>(kMiB)));
  v.check(sum == expected, "the slices add up to the array's sum");
  v.check(st.objects_put == 1 && st.arg_objects == 0,
          "the array was written once: one segment, no per-task copies of it");
  bool once = true;
  for (const auto& [pid, w] : by_worker)
    once = once && w.second <= 1;
  v.check(once, "every worker decoded it at most once");
  const std::string name = ref.name();
  ref = {};
  parts.clear();
  v.check(::access(("/dev/shm/" + name).c_str(), F_OK) != 0,
          "once the last ref (and the last task holding one) went, so did the segment");
  return v.exit_code();
}

}  // namespace ferry::demos
