// A 1 GiB argument to a task on a local shm worker: written once into a shared-memory
// object, mapped by the worker, gone from /dev/shm once the task is done.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "ferry/ferry.hpp"
#include "ferry/shared/session.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;

namespace {

// Size and a sum of every 4096th byte: touches each page of the argument.
std::uint64_t size_and_pages(std::string s) {
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < s.size(); i += 4096)
    sum += static_cast<unsigned char>(s[i]);
  return (static_cast<std::uint64_t>(s.size()) << 20) ^ sum;
}

}  // namespace

FERRY_TASK(size_and_pages);

TEST_SUITE("coordinator.objects.soak") {
  TEST_CASE("a 1 GiB argument reaches a worker on shm and leaves no segment") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 1, .transport = ferry::Transport::shm});
      std::string gib(std::size_t{1} << 30, 'g');
      for (std::size_t i = 0; i < gib.size(); i += 4096)
        gib[i] = static_cast<char>('a' + (i / 4096) % 26);
      const auto expected = size_and_pages(gib);
      auto f = pool.submit(size_and_pages, std::move(gib));
      REQUIRE(f.wait_for(300s));
      CHECK(f.get() == expected);
      CHECK(ft::shm_segments_of_session().size() <= 1);  // at most the workers' channel
    }
    leaks.verify();
  }
}
