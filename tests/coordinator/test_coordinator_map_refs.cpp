// ObjectRefs in map chunks, with real worker processes: a starmap whose items pair one shared
// table (an ObjectRef) with a per-item key, where the task takes the table as const T&; a map
// over refs where the task takes const T& or T; imap_unordered and map_reduce (also folded in
// the workers) over refs. Each worker process decodes an object once; a chunk keeps its refs
// alive until its outcome is final; an unreadable ref fails its own item only. On shm, zmq
// and a remote worker.
#include <doctest/doctest.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <numeric>
#include <optional>
#include <ranges>
#include <set>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "ferry/ferry.hpp"
#include "ferry/shared/object_ref.hpp"
#include "ferry/shared/session.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;

namespace {

using Table = std::vector<std::uint64_t>;
// pid, objects decoded by that process so far, the value read
using Seen = std::tuple<std::int32_t, std::uint64_t, std::uint64_t>;

Table make_table(std::size_t n, std::uint64_t first = 1) {
  Table t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}
std::uint64_t total(const Table& t) {
  return std::accumulate(t.begin(), t.end(), std::uint64_t{0});
}

// The common case: one big shared table, a key per item.
Seen lookup(const Table& table, std::int64_t key) {
  return {static_cast<std::int32_t>(::getpid()), ferry::object_decodes(),
          table.at(static_cast<std::size_t>(key))};
}
std::uint64_t sum_cref(const Table& t) {
  return total(t);
}
std::uint64_t sum_copy(Table t) {
  t.push_back(1);  // its own copy: the shared value is not touched
  return total(t) - 1;
}
std::uint64_t plus(std::uint64_t a, std::uint64_t b) {
  return a + b;
}
std::uint64_t decodes_of(const Table&) {
  return ferry::object_decodes();
}

std::vector<std::string> store_segments() {
  std::vector<std::string> out;
  for (const auto& s : ft::shm_segments_of_session())
    if (s.find(".obj-") != std::string::npos) out.push_back(s);
  return out;
}

// Checks a pool's maps over refs (local or remote workers alike).
void check_maps(ferry::Pool& pool) {
  const Table table = make_table(10'000);
  auto ref = pool.put(table);
  // starmap: (shared table, key) -> table[key], read through const Table&.
  std::vector<std::tuple<ferry::ObjectRef<Table>, std::int64_t>> items;
  for (std::int64_t k = 0; k < 200; ++k)
    items.emplace_back(ref, k * 37);
  const auto seen = pool.starmap(lookup, items, 8);
  REQUIRE(seen.size() == items.size());
  std::set<std::int32_t> pids;
  for (std::size_t i = 0; i < seen.size(); ++i) {
    const auto [pid, decodes, value] = seen[i];
    CHECK(value == table[i * 37]);
    CHECK(decodes == 1);  // 25 chunks, one decode per worker process
    pids.insert(pid);
  }
  CHECK(!pids.empty());
  // Values and refs may be mixed in one starmap's items of another type: plain tuples still
  // work (no ref among them: today's encoding).
  std::vector<std::tuple<Table, std::int64_t>> plain{{make_table(5), 2}};
  CHECK(std::get<2>(pool.starmap(lookup, plain)[0]) == 3);

  // map over refs: each item its own object, read as const T& and as a T copy.
  std::vector<ferry::ObjectRef<Table>> refs;
  std::vector<std::uint64_t> expected;
  for (std::uint64_t i = 0; i < 6; ++i) {
    refs.push_back(pool.put(make_table(1000 + i, i)));
    expected.push_back(total(make_table(1000 + i, i)));
  }
  CHECK(pool.map(sum_cref, refs, 2) == expected);
  CHECK(pool.map(sum_copy, refs, 4) == expected);
  // imap_unordered: every item once, with its index.
  std::map<std::size_t, std::uint64_t> got;
  for (auto&& [i, v] : pool.imap_unordered(sum_cref, refs, 1))
    got[i] = v;
  REQUIRE(got.size() == refs.size());
  for (std::size_t i = 0; i < refs.size(); ++i)
    CHECK(got[i] == expected[i]);
  // map_reduce, folded on the coordinator and in the workers.
  const std::uint64_t all = std::accumulate(expected.begin(), expected.end(), std::uint64_t{0});
  CHECK(pool.map_reduce(sum_cref, refs, std::uint64_t{0}, plus, 2) == all);
  const auto before = pool.stats().succeeded;
  CHECK(pool.map_reduce(sum_cref, refs, std::uint64_t{0}, plus,
                        {.chunksize = 3, .combine_in_workers = true}) == all);
  CHECK(pool.stats().succeeded - before == 2);  // two partials came back
  // The objects travelled as handles, never as argument objects.
  CHECK(pool.stats().arg_objects == 0);
}

}  // namespace

FERRY_TASK(lookup);
FERRY_TASK(sum_cref);
FERRY_TASK(sum_copy);
FERRY_TASK(decodes_of);
FERRY_COMBINE(sum_cref, plus);

TEST_SUITE("coordinator.map_refs") {
  TEST_CASE("an item's encoding is chosen from its type: RefOr only where a ref feeds a value") {
    using ferry::detail::MapItem;
    using ferry::detail::StarItem;
    using Ref = ferry::ObjectRef<Table>;
    using Or = ferry::task_detail::RefOr<Table>;
    using OrKey = ferry::task_detail::RefOr<std::int64_t>;
    static_assert(std::is_same_v<decltype(MapItem<const Table&>{}(Table{})), std::tuple<Table>>);
    static_assert(std::is_same_v<decltype(MapItem<const Table&>{}(Ref{})), std::tuple<Or>>);
    static_assert(
        std::is_same_v<decltype(MapItem<Table>{}(std::declval<const Ref&>())), std::tuple<Or>>);
    static_assert(std::is_same_v<decltype(MapItem<Ref>{}(Ref{})), std::tuple<Ref>>);
    static_assert(std::is_same_v<decltype(StarItem<const Table&, std::int64_t>{}(
                                     std::tuple<Table, std::int64_t>{})),
                                 std::tuple<Table, std::int64_t>>);
    static_assert(std::is_same_v<decltype(StarItem<const Table&, std::int64_t>{}(
                                     std::declval<std::tuple<Ref, int>&>())),
                                 std::tuple<Or, OrKey>>);
    static_assert(!ferry::detail::is_ref_tuple_v<std::tuple<Table, std::int64_t>>);
    static_assert(ferry::detail::is_ref_tuple_v<std::tuple<Or, OrKey>>);
    // The RefOr form tags each argument: the ref (its name and size travel), or the value.
    const auto item = StarItem<const Table&, std::int64_t>{}(std::tuple<Ref, int>{Ref{}, 7});
    CHECK(std::get<0>(item).is_ref);
    CHECK(std::get<0>(item).value.empty());
    CHECK(!std::get<1>(item).is_ref);
    CHECK(std::get<1>(item).value == 7);
  }

  TEST_CASE("starmap, map, imap_unordered and map_reduce take refs feeding T on shm and zmq") {
    ft::LeakCheck leaks;
    for (auto t : {ferry::Transport::shm, ferry::Transport::zmq}) {
      CAPTURE(ferry::transport_name(t));
      ferry::Pool pool({.workers = 2, .transport = t, .max_retries = 0});
      check_maps(pool);
      pool.shutdown(ferry::ShutdownMode::drain);
      CHECK(pool.stats().worker_deaths == 0);
    }
    CHECK(store_segments().empty());
    leaks.verify();
  }

  TEST_CASE("a chunk keeps its refs alive until its outcome is final, then frees them") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 2, .transport = ferry::Transport::shm});
      // Each ref is made by the range as the chunk is read, and dropped at once: only the
      // chunk's task holds it while the worker reads it.
      auto fresh =
          std::views::iota(std::uint64_t{0}, std::uint64_t{12}) |
          std::views::transform([&pool](std::uint64_t i) { return pool.put(make_table(100, i)); });
      std::map<std::size_t, std::uint64_t> got;
      for (auto&& [i, v] : pool.imap_unordered(sum_cref, fresh, 3, 2))
        got[i] = v;
      REQUIRE(got.size() == 12);
      for (std::uint64_t i = 0; i < 12; ++i)
        CHECK(got[i] == total(make_table(100, i)));
      CHECK(pool.stats().objects_put == 12);
      CHECK(store_segments().empty());  // every chunk is final: its objects went with it
      CHECK(pool.map(sum_cref, fresh, 5).size() == 12);
      CHECK(store_segments().empty());
    }
    leaks.verify();
  }

  TEST_CASE("an unreadable ref fails its own item only") {
    ft::LeakCheck leaks;
    auto check_pool = [](ferry::Pool& pool, const std::string& why) {
      auto good = pool.put(make_table(100));
      auto gone = pool.put(make_table(10));
      const std::string name = gone.name();
      const std::uint64_t size = gone.size();
      gone = {};  // freed: no ref and no task holds it
      // A ref naming it, as a stale copy would (it cannot be opened, here or in a worker).
      const ferry::ObjectRef<Table> stale(ferry::detail::object_block(name, size));
      const std::vector<ferry::ObjectRef<Table>> refs{good, good, stale, good};
      std::map<std::size_t, std::uint64_t> got;
      std::optional<ferry::FailureInfo> failed;
      auto results = pool.imap_unordered(sum_cref, refs, 4);
      for (;;) {
        try {
          auto item = results.next();
          if (!item) break;
          got[item->first] = item->second;
        } catch (const ferry::RemoteError& e) {
          CHECK(!failed);
          failed = e.info();
        }
      }
      CHECK(got.size() == 3);
      CHECK(got.count(2) == 0);
      REQUIRE(failed);
      CHECK(failed->item == 2);
      CHECK(failed->type == "ferry::ObjectUnavailable");
      CHECK(failed->message.find(name) != std::string::npos);
      CHECK(failed->message.find(why) != std::string::npos);
      // map throws that item's failure, once the chunk has finished.
      try {
        (void)pool.map(sum_cref, refs, 2);
        FAIL("a map over an unreadable ref succeeded");
      } catch (const ferry::RemoteError& e) {
        CHECK(e.info().item == 2);
      }
      // The same worker goes on reading live refs.
      CHECK(pool.map(sum_cref, std::vector{good, good}) ==
            std::vector<std::uint64_t>(2, total(make_table(100))));
    };
    {
      ferry::Pool pool({.workers = 1, .transport = ferry::Transport::shm, .max_retries = 0});
      check_pool(pool, "");
      CHECK(pool.stats().worker_deaths == 0);
    }
    {
      ferry::PoolOptions o;
      o.workers = 0;
      o.listen = "tcp://127.0.0.1:0";
      o.max_retries = 0;
      ferry::Pool pool(o);
      auto w = ft::spawn(ft::self_exe(), {"--ferry-worker", "--connect", pool.listen_endpoint()});
      REQUIRE(pool.wait_workers(1, 20s));
      check_pool(pool, "freed by its pool");
      pool.shutdown(ferry::ShutdownMode::drain);
      ft::expect_exit(w, 0, 20s);
    }
    CHECK(store_segments().empty());
    leaks.verify();
  }

  TEST_CASE("a remote worker reads map refs fetched once per process") {
    ft::LeakCheck leaks;
    {
      ferry::PoolOptions o;
      o.workers = 0;
      o.listen = "tcp://127.0.0.1:0";
      o.max_retries = 0;
      ferry::Pool pool(o);
      auto w = ft::spawn(ft::self_exe(),
                         {"--ferry-worker", "--connect", pool.listen_endpoint(), "--slots", "2"});
      REQUIRE(pool.wait_workers(1, 20s));
      check_maps(pool);
      pool.shutdown(ferry::ShutdownMode::drain);
      ft::expect_exit(w, 0, 20s);
    }
    CHECK(store_segments().empty());
    leaks.verify();
  }
}
