// A chunk's batch result as invoke_batch encodes it (no processes: the function is called here).
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "ferry/shared/task.hpp"

using namespace ferry;

namespace {

Bytes sized(std::int64_t n) {
  return Bytes(static_cast<std::size_t>(n), 7);
}

// Runs sized over ns as one chunk, appending to a reply that already holds a 4-byte header.
std::vector<ItemText> run_chunk(const std::vector<std::int64_t>& ns, std::size_t max_out,
                                BatchMode& mode, std::size_t& out_size) {
  const TaskEntry e = task_detail::make_entry("sized", &sized);
  std::vector<std::tuple<std::int64_t>> args;
  for (auto n : ns)
    args.emplace_back(n);
  const Bytes in = encode_value(args);
  Bytes out{1, 2, 3, 4};
  e.invoke_batch(e.fn, in, out, max_out);
  out_size = out.size();
  const ByteView batch = ByteView(out).subspan(4);
  mode = static_cast<BatchMode>(batch[0]);
  return e.format_batch(batch).value();
}

}  // namespace

TEST_SUITE("shared.task") {
  TEST_CASE("a chunk that fits is sent as values only") {
    BatchMode mode{};
    std::size_t size = 0;
    auto items = run_chunk({10, 20}, 1000, mode, size);
    CHECK(mode == BatchMode::all_ok);
    REQUIRE(items.size() == 2);
    CHECK(items[0].ok);
    CHECK(items[0].text.rfind("10 bytes", 0) == 0);
    CHECK(items[1].text.rfind("20 bytes", 0) == 0);
    CHECK(size <= 1000);
  }

  TEST_CASE("an item too large for any frame becomes a FrameTooLarge item error") {
    BatchMode mode{};
    std::size_t size = 0;
    auto items = run_chunk({10, 100000, 20}, 50000, mode, size);
    CHECK(mode == BatchMode::mixed);
    REQUIRE(items.size() == 3);
    CHECK(items[0].ok);
    CHECK(items[0].text.rfind("10 bytes", 0) == 0);
    CHECK_FALSE(items[1].ok);
    CHECK(items[1].text.rfind("ferry::FrameTooLarge: ", 0) == 0);
    // The value's encoding (a length, then the bytes) and the limit.
    CHECK(items[1].text.find("100008 bytes") != std::string::npos);
    CHECK(items[1].text.find("limit 50000 bytes") != std::string::npos);
    CHECK(items[2].ok);
    CHECK(size <= 50000);
  }

  TEST_CASE("a chunk too large together loses its largest values first, until it fits") {
    BatchMode mode{};
    std::size_t size = 0;
    // 30,000 and 25,000 fit alone; with the others they do not; dropping 30,000 is enough.
    auto items = run_chunk({10, 25000, 30000, 20}, 50000, mode, size);
    CHECK(mode == BatchMode::mixed);
    REQUIRE(items.size() == 4);
    CHECK(items[0].ok);
    CHECK(items[1].ok);
    CHECK(items[1].text.rfind("25000 bytes", 0) == 0);
    CHECK_FALSE(items[2].ok);
    CHECK(items[2].text.find("together") != std::string::npos);
    CHECK(items[2].text.find("30008 bytes") != std::string::npos);
    CHECK(items[2].text.find("limit 50000 bytes") != std::string::npos);
    CHECK(items[3].ok);
    CHECK(size <= 50000);
  }

  TEST_CASE("values smaller than their error are kept even when the chunk cannot fit") {
    BatchMode mode{};
    std::size_t size = 0;
    // Each fits alone (4 + 9 + 9 + 38 = 60 bytes for the largest), not together.
    auto items = run_chunk({10, 20, 30}, 60, mode, size);
    REQUIRE(items.size() == 3);
    for (auto& it : items)
      CHECK(it.ok);
    CHECK(size > 60);  // the worker fails such a chunk as a whole
  }
}
