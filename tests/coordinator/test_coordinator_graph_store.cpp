// Task graphs keep large intermediate values in the object store, with real worker processes:
// a dependency's result above the object threshold, passed as a shared-memory object by a
// local worker, is handed to its dependant by name (a ref feeding T / const T&) instead of
// being read into the coordinator, decoded and encoded again; the dependency's own future
// still reads it (decoded from the kept object); it is freed once the dependant is final and
// no future holds it, and removed at shutdown.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <csignal>

#include <chrono>
#include <cstdint>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "ferry/ferry.hpp"
#include "ferry/shared/object_ref.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;

namespace {

using Blob = std::vector<std::uint64_t>;

Blob make_blob(std::int64_t words) {
  Blob b(static_cast<std::size_t>(words));
  std::iota(b.begin(), b.end(), std::uint64_t{1});
  return b;
}
std::uint64_t expected_sum(std::int64_t words) {
  const auto n = static_cast<std::uint64_t>(words);
  return n * (n + 1) / 2;
}
// The sum, and how many objects this process has decoded (1: it read the value by ref).
std::tuple<std::uint64_t, std::uint64_t> sum_blob(const Blob& b) {
  return {std::accumulate(b.begin(), b.end(), std::uint64_t{0}), ferry::object_decodes()};
}
std::uint64_t sum_copy(Blob b) {
  b.push_back(0);  // its own copy
  return std::accumulate(b.begin(), b.end(), std::uint64_t{0});
}
std::uint64_t sum_plus(const Blob& b, std::int64_t x) {
  return std::accumulate(b.begin(), b.end(), static_cast<std::uint64_t>(x));
}
// Dies (SIGKILL) the first time, when the marker file does not exist yet; sums after.
std::uint64_t sum_or_die(const Blob& b, std::string marker) {
  const int fd = ::open(marker.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
  if (fd >= 0) {
    ::close(fd);
    ::raise(SIGKILL);
  }
  return std::accumulate(b.begin(), b.end(), std::uint64_t{0});
}
std::int64_t fail_with(std::int64_t x) {
  if (x < 0) throw std::runtime_error("negative");
  return x;
}

std::vector<std::string> store_segments() {
  std::vector<std::string> out;
  for (const auto& s : ft::shm_segments_of_session())
    if (s.find(".obj-") != std::string::npos) out.push_back(s);
  return out;
}

constexpr std::int64_t kWords = 1 << 20;  // 8 MiB encoded: well above the 1 MiB threshold

}  // namespace

FERRY_TASK(make_blob);
FERRY_TASK(sum_blob);
FERRY_TASK(sum_copy);
FERRY_TASK(fail_with);
FERRY_TASK(sum_plus);
FERRY_TASK(sum_or_die);

TEST_SUITE("coordinator.graph_store") {
  TEST_CASE("a large intermediate goes to its dependant by handle and is freed after") {
    ft::LeakCheck leaks;
    for (auto t : {ferry::Transport::shm, ferry::Transport::pipe}) {
      CAPTURE(ferry::transport_name(t));
      ferry::Pool pool({.workers = 2, .transport = t, .max_retries = 0});
      auto blob = pool.submit(make_blob, kWords);
      auto sum = pool.submit(sum_blob, blob);
      auto copy = pool.submit(sum_copy, blob);
      REQUIRE(sum.wait_for(30s));
      REQUIRE(copy.wait_for(30s));
      const auto [total, decodes] = sum.get();
      CHECK(total == expected_sum(kWords));
      CHECK(decodes == 1);  // the dependant's worker read it from the store
      CHECK(copy.get() == expected_sum(kWords));
      const auto st = pool.stats();
      CHECK(st.results_kept == 1);          // kept once, for both dependants
      CHECK(st.arg_objects == 0);           // no argument was encoded again into a segment
      CHECK(st.objects_put == 0);           // not counted as a put
      CHECK(store_segments().size() == 1);  // the caller still holds the dependency's future
      // The dependency's own future reads the kept value.
      const Blob b = blob.get();
      CHECK(b.size() == static_cast<std::size_t>(kWords));
      CHECK(b.back() == static_cast<std::uint64_t>(kWords));
      CHECK(blob.encoded().size() > (std::size_t{8} << 20));
      blob = {};
      CHECK(store_segments().empty());  // its last future went; the dependants are final
      // Small results are not kept: they travel in frames as before.
      auto small = pool.submit(make_blob, std::int64_t{10});
      CHECK(std::get<0>(pool.submit(sum_blob, small).get()) == expected_sum(10));
      CHECK(pool.stats().results_kept == 1);
    }
    CHECK(store_segments().empty());
    leaks.verify();
  }

  TEST_CASE("a dependency finished before its dependant was submitted still goes by handle") {
    ft::LeakCheck leaks;
    for (auto t : {ferry::Transport::shm, ferry::Transport::zmq}) {
      CAPTURE(ferry::transport_name(t));
      ferry::Pool pool({.workers = 2, .transport = t, .max_retries = 0});
      auto blob = pool.submit(make_blob, kWords);
      REQUIRE(blob.wait_for(30s));  // its result is in before the dependant exists
      CHECK(pool.stats().results_kept == 1);
      CHECK(store_segments().size() == 1);
      auto sum = pool.submit(sum_blob, blob);
      REQUIRE(sum.wait_for(30s));
      const auto [total, decodes] = sum.get();
      CHECK(total == expected_sum(kWords));
      CHECK(decodes == 1);  // read from the store by its worker...
      const auto st = pool.stats();
      CHECK(st.arg_objects == 0);  // ...not encoded again into an argument segment
      CHECK(st.results_kept == 1);
      // A later dependant, and the future itself, read the same kept value.
      CHECK(pool.submit(sum_copy, blob).get() == expected_sum(kWords));
      CHECK(blob.get().size() == static_cast<std::size_t>(kWords));
      CHECK(pool.stats().arg_objects == 0);
      blob = {};
      CHECK(store_segments().empty());
    }
    CHECK(store_segments().empty());
    leaks.verify();
  }

  TEST_CASE("a large result nobody depends on is read from the store and freed with its future") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 1, .transport = ferry::Transport::shm, .max_retries = 0});
      {
        auto blob = pool.submit(make_blob, kWords);
        CHECK(blob.get().back() == static_cast<std::uint64_t>(kWords));
        CHECK(store_segments().size() == 1);  // mapped, not copied into the coordinator's heap
      }
      CHECK(store_segments().empty());
      // apply: the value decoded straight from the mapping, nothing left.
      CHECK(pool.apply(make_blob, kWords).size() == static_cast<std::size_t>(kWords));
      CHECK(store_segments().empty());
      CHECK(pool.stats().results_kept == 2);
    }
    leaks.verify();
  }

  TEST_CASE("a kept intermediate outlives a dependant's failure and goes at shutdown") {
    ft::LeakCheck leaks;
    ferry::Future<Blob> blob;
    {
      ferry::Pool pool({.workers = 1, .transport = ferry::Transport::shm, .max_retries = 0});
      blob = pool.submit(make_blob, kWords);
      // A chain whose other input fails: DependencyFailed, the kept value is untouched.
      auto failed = pool.submit(fail_with, std::int64_t{-1});
      auto broken = pool.submit(sum_plus, blob, failed);
      REQUIRE(broken.wait_for(30s));
      CHECK_THROWS_AS(broken.get(), ferry::DependencyFailed);
      auto sum = pool.submit(sum_plus, blob, pool.submit(fail_with, std::int64_t{5}));
      REQUIRE(sum.wait_for(30s));
      CHECK(sum.get() == expected_sum(kWords) + 5);
      CHECK(store_segments().size() == 1);
      pool.shutdown(ferry::ShutdownMode::drain);
      CHECK(store_segments().empty());  // the pool removed the name
    }
    // Mapped in the coordinator: the future still reads it after its pool.
    CHECK(blob.get().size() == static_cast<std::size_t>(kWords));
    // And feeds a task of another pool, as a value now: its name is gone with its pool.
    {
      ferry::Pool other({.workers = 1, .transport = ferry::Transport::shm, .max_retries = 0});
      const auto [total, decodes] = other.submit(sum_blob, blob).get();
      CHECK(total == expected_sum(kWords));
      CHECK(decodes == 0);  // not read from the store
    }
    blob = {};
    CHECK(store_segments().empty());
    leaks.verify();
  }

  TEST_CASE("a dependant whose worker dies reads the kept intermediate again on its retry") {
    ft::LeakCheck leaks;
    const std::string marker = "/tmp/ferry-test-graph-store-" + std::to_string(::getpid());
    ::unlink(marker.c_str());
    {
      ferry::Pool pool({.workers = 2, .transport = ferry::Transport::shm, .max_retries = 1});
      auto sum = pool.submit(sum_or_die, pool.submit(make_blob, kWords), marker);
      REQUIRE(sum.wait_for(60s));
      CHECK(sum.get() == expected_sum(kWords));
      const auto st = pool.stats();
      CHECK(st.worker_deaths == 1);
      CHECK(st.retries == 1);
      CHECK(st.results_kept == 1);
      CHECK(store_segments().empty());  // the dependant is final and no future holds it
    }
    ::unlink(marker.c_str());
    leaks.verify();
  }
}
