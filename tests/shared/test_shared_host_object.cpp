// Host copies (shared/src/host_object.hpp) without a coordinator: callers racing for one
// object's copy. flock locks belong to open file descriptions, so threads that each open the
// files contend exactly as worker processes on one host do.
#include <dirent.h>
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "host_object.hpp"
#include "testing.hpp"

namespace {

// Host copies and claims in /dev/shm whose name ends in `tail`.
std::vector<std::string> host_files_ending(const std::string& tail) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir("/dev/shm")) {
    while (const dirent* e = ::readdir(d)) {
      const std::string_view n = e->d_name;
      if ((n.starts_with(ferry::detail::kHostCopyPrefix) ||
           n.starts_with(ferry::detail::kHostClaimPrefix)) &&
          n.ends_with(tail))
        out.emplace_back(n);
    }
    ::closedir(d);
  }
  return out;
}

}  // namespace

TEST_SUITE("shared.host_object") {
  // The claim name is free again the moment its claimer publishes (renames it to the copy), so a
  // caller that looked for the copy just before and for the claim just after used to claim and
  // fetch a second time (seen once in CI as two fetches among three workers). Tiny objects make
  // the publish fast enough to land in that window within a few hundred rounds.
  TEST_CASE("callers racing for one object fetch it once, and the others map that copy") {
    ferry::testing::LeakCheck leaks;
    constexpr std::size_t kCallers = 4;
    constexpr int kRounds = 400;
    const std::string key = "host-object-test-" + std::to_string(::getpid());
    int extra_fetches = 0;
    for (int round = 0; round < kRounds; ++round) {
      const std::string name =
          "ferry.test-" + std::to_string(::getpid()) + ".obj-" + std::to_string(round);
      std::atomic<int> fetches{0};
      const ferry::detail::ObjectFetcher fetch =
          [&](const std::string&, std::uint64_t size,
              const ferry::detail::ObjectSink& sink) -> ferry::Status {
        fetches.fetch_add(1);
        std::vector<std::uint8_t> bytes(size, static_cast<std::uint8_t>(round));
        sink(0, ferry::ByteView(bytes.data(), bytes.size()));
        return {};
      };
      std::vector<ferry::Result<ferry::detail::HostCopy>> got(
          kCallers, ferry::Error{ferry::Errc::unsupported, "not run"});
      std::latch start(kCallers);
      std::vector<std::thread> callers;
      for (std::size_t i = 0; i < kCallers; ++i) {
        callers.emplace_back([&, i] {
          start.arrive_and_wait();
          got[i] = ferry::detail::host_copy(fetch, key, name, 64);
        });
      }
      for (auto& t : callers)
        t.join();
      int fetched = 0;
      for (const auto& g : got) {
        if (!g) FAIL(g.error().message());
        REQUIRE(g->bytes->n == 64);
        CHECK(static_cast<const std::uint8_t*>(g->bytes->p)[63] ==
              static_cast<std::uint8_t>(round));
        fetched += g->fetched ? 1 : 0;
      }
      CHECK(fetched == fetches.load());
      if (fetches.load() != 1) {
        ++extra_fetches;
        MESSAGE("round " << round << ": " << fetches.load() << " fetches");
      }
      got.clear();  // the last holder removes the copy
      CHECK(host_files_ending(name.substr(std::strlen("ferry."))).empty());
    }
    CHECK(extra_fetches == 0);
    leaks.verify();
  }
}
