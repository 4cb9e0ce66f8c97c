// ferry::Queue<T> between real processes (self-exec peers): typed round trips, a handle passed
// to a child as a cereal argument, many producers and consumers, full and oversized puts.
// Every wait is bounded; nothing sleeps to synchronize.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ferry/ipc/queue.hpp"
#include "ferry/shared/session.hpp"
#include "testing.hpp"

using namespace ferry;
using namespace std::chrono_literals;
using testing::expect_exit;

namespace {

// A value with the shapes cereal has to get right: strings, vectors, maps, nesting.
struct Item {
  std::uint32_t producer = 0;
  std::uint32_t index = 0;
  std::string name;
  std::vector<std::int64_t> values;
  std::map<std::string, std::vector<std::string>> tags;

  template <class A>
  void serialize(A& ar) {
    ar(producer, index, name, values, tags);
  }
  friend bool operator==(const Item&, const Item&) = default;
};

// Deterministic content of item k of a producer, of varying size (empty containers too).
Item make_item(std::uint32_t producer, std::uint32_t k) {
  Item it;
  it.producer = producer;
  it.index = k;
  it.name = "item " + std::to_string(producer) + "/" + std::to_string(k) + std::string(k % 7, '*');
  for (std::uint32_t i = 0; i < k % 5; ++i)
    it.values.push_back(static_cast<std::int64_t>(k) * 1000 - i);
  for (std::uint32_t i = 0; i < k % 3; ++i)
    it.tags["t" + std::to_string(i)] = {"a", std::string(i, 'b'), ""};
  return it;
}

// What a consumer saw: which item it got, under which sequence number, intact or not.
struct Receipt {
  std::uint32_t producer = 0;
  std::uint32_t index = 0;
  std::uint64_t seq = 0;
  bool intact = false;
  template <class A>
  void serialize(A& ar) {
    ar(producer, index, seq, intact);
  }
};

template <class T>
Queue<T> make_queue(const std::string& name, std::size_t capacity, std::size_t max_item) {
  auto q = Queue<T>::create(name, capacity, max_item);
  REQUIRE_MESSAGE(q.has_value(), q.error().message());
  return std::move(*q);
}

int fail(const char* what, const Error& e) {
  std::fprintf(stderr, "peer: %s: %s\n", what, e.message().c_str());
  return 2;
}

constexpr auto kPeerWait = 60s;  // bound on every blocking call a peer makes

}  // namespace

// --- peers -----------------------------------------------------------------------------------

// args: hex of a cereal-serialized Queue<Item> handle, producer id, count. Loads the handle
// (which opens the queue) and puts `count` items.
FERRY_TEST_PEER(queue_put_from_handle) {
  Queue<Item> q;
  try {
    const Bytes bytes = testing::from_hex(args.at(0));
    BoundedInputArchive in(ByteView(bytes.data(), bytes.size()));
    in(q);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "peer: load handle: %s\n", e.what());
    return 3;
  }
  const auto id = static_cast<std::uint32_t>(std::stoul(args.at(1)));
  const auto count = static_cast<std::uint32_t>(std::stoul(args.at(2)));
  for (std::uint32_t k = 0; k < count; ++k) {
    if (auto r = q.put_for(make_item(id, k), kPeerWait); !r) return fail("put", r.error());
  }
  return 0;
}

// args: endpoint, producer id, count. Opens the queue by endpoint and puts `count` items.
FERRY_TEST_PEER(queue_producer) {
  auto q = Queue<Item>::open(args.at(0));
  if (!q) return fail("open", q.error());
  const auto id = static_cast<std::uint32_t>(std::stoul(args.at(1)));
  const auto count = static_cast<std::uint32_t>(std::stoul(args.at(2)));
  for (std::uint32_t k = 0; k < count; ++k) {
    if (auto r = q->put_for(make_item(id, k), kPeerWait); !r) return fail("put", r.error());
  }
  return 0;
}

// args: work endpoint, receipts endpoint. Gets items until the work queue is closed and
// drained, putting a Receipt for each on the receipts queue.
FERRY_TEST_PEER(queue_consumer) {
  auto work = Queue<Item>::open(args.at(0));
  auto receipts = Queue<Receipt>::open(args.at(1));
  if (!work) return fail("open work", work.error());
  if (!receipts) return fail("open receipts", receipts.error());
  for (;;) {
    std::uint64_t seq = 0;
    auto it = work->get_for(kPeerWait, &seq);
    if (it.code() == Errc::channel_closed) return 0;
    if (!it) return fail("get", it.error());
    const Receipt r{it->producer, it->index, seq, *it == make_item(it->producer, it->index)};
    if (auto st = receipts->put_for(r, kPeerWait); !st) return fail("put receipt", st.error());
  }
}

// --- tests -----------------------------------------------------------------------------------

TEST_SUITE("ipc.queue") {
  TEST_CASE("a struct with strings, vectors and maps round-trips through a Queue") {
    testing::LeakCheck leaks;
    std::string ep;
    {
      auto q = make_queue<Item>("rt", 8, 4096);
      ep = q.endpoint();
      CHECK(ep == "shm://" + shm_name("rt"));
      CHECK(q.capacity() == 8);
      CHECK(q.max_item_bytes() == 4096);
      Item big = make_item(3, 41);
      big.tags["unicode"] = {"żółw", "\xE2\x9C\x93", std::string("nul\0inside", 10)};
      big.values.assign(200, -1);
      const std::vector<Item> sent{Item{}, make_item(1, 0), make_item(2, 14), big};
      std::vector<std::uint64_t> seqs;
      for (const auto& it : sent) {
        auto seq = q.try_put(it);
        REQUIRE(seq);
        seqs.push_back(*seq);
      }
      for (std::size_t i = 0; i < sent.size(); ++i) {
        std::uint64_t seq = 0;
        auto got = q.try_get(&seq);
        REQUIRE(got);
        CHECK(*got == sent[i]);
        CHECK(seq == seqs[i]);
      }
      CHECK(q.try_get().code() == Errc::would_block);
      CHECK(q.lost_count() == 0);

      // Another handle, as another process would open it, shares the queue.
      auto other = Queue<Item>::open(ep);
      REQUIRE(other);
      REQUIRE(q.put(big));
      auto back = other->get_for(5s);
      REQUIRE(back);
      CHECK(*back == big);
    }
    // The creator removed the name.
    CHECK(Queue<Item>::open(ep).code() == Errc::not_found);
    CHECK(Queue<Item>().try_put(Item{}).code() == Errc::invalid_argument);
    leaks.verify();
  }

  TEST_CASE("a handle passed to a child as a cereal argument opens the queue there" *
            doctest::timeout(90)) {
    testing::LeakCheck leaks;
    {
      constexpr std::uint32_t kCount = 500;  // many times the capacity: the child must block
      auto q = make_queue<Item>("handle", 8, 1024);
      Bytes handle;
      {
        BufferOutputArchive out(handle);
        out(q);
      }
      auto child = testing::spawn_peer("queue_put_from_handle",
                                       {testing::to_hex(handle), "7", std::to_string(kCount)});
      std::uint64_t last_seq = 0;
      std::uint32_t in_order = 0;
      for (std::uint32_t k = 0; k < kCount; ++k) {
        std::uint64_t seq = 0;
        auto it = q.get_for(30s, &seq);
        REQUIRE_MESSAGE(it, it.error().message());
        if (*it == make_item(7, k) && (k == 0 || seq > last_seq)) ++in_order;
        last_seq = seq;
      }
      CHECK(in_order == kCount);
      expect_exit(child);
      CHECK(q.try_get().code() == Errc::would_block);

      // Loading in this process gives a handle on the same queue too (not the creator's).
      Queue<Item> again;
      {
        BoundedInputArchive in(ByteView(handle.data(), handle.size()));
        in(again);
      }
      CHECK(again.endpoint() == q.endpoint());
      REQUIRE(again.put(make_item(1, 1)));
      CHECK(q.get_for(5s).value() == make_item(1, 1));
    }
    leaks.verify();
  }

  TEST_CASE("2 producer and 2 consumer processes: every item is got once, none lost or damaged" *
            doctest::timeout(110)) {
    testing::LeakCheck leaks;
    {
      constexpr std::uint32_t kPerProducer = 1500;
      auto work = make_queue<Item>("mpmc", 16, 1024);
      auto receipts = make_queue<Receipt>("mpmc-receipts", 64, 256);
      std::vector<testing::Child> consumers;
      for (int c = 0; c < 2; ++c)
        consumers.push_back(
            testing::spawn_peer("queue_consumer", {work.endpoint(), receipts.endpoint()}));
      std::vector<testing::Child> producers;
      for (std::uint32_t p = 0; p < 2; ++p) {
        producers.push_back(testing::spawn_peer(
            "queue_producer", {work.endpoint(), std::to_string(p), std::to_string(kPerProducer)}));
      }
      std::map<std::pair<std::uint32_t, std::uint32_t>, int> seen;
      std::set<std::uint64_t> seqs;
      std::size_t damaged = 0;
      for (std::uint32_t n = 0; n < 2 * kPerProducer; ++n) {
        auto r = receipts.get_for(30s);
        REQUIRE_MESSAGE(r, "receipt " << n << ": " << r.error().message());
        ++seen[{r->producer, r->index}];
        seqs.insert(r->seq);
        if (!r->intact) ++damaged;
      }
      for (auto& p : producers)
        expect_exit(p);
      work.close();  // the consumers drain, then see ChannelClosed and exit
      for (auto& c : consumers)
        expect_exit(c);

      CHECK(damaged == 0);
      CHECK(seqs.size() == 2 * kPerProducer);  // no sequence number twice
      std::size_t once = 0;
      for (std::uint32_t p = 0; p < 2; ++p) {
        for (std::uint32_t k = 0; k < kPerProducer; ++k) {
          auto it = seen.find({p, k});
          if (it != seen.end() && it->second == 1) ++once;
        }
      }
      CHECK(once == 2 * kPerProducer);
      CHECK(seen.size() == 2 * kPerProducer);
      CHECK(work.lost_count() == 0);
      CHECK(work.abandoned_count() == 0);
      CHECK(receipts.try_get().code() == Errc::would_block);
    }
    leaks.verify();
  }

  TEST_CASE("a full queue: try_put is QueueFull, a timed put Timeout, and close ends both sides") {
    testing::LeakCheck leaks;
    {
      auto q = make_queue<Item>("full", 4, 512);
      for (std::uint32_t k = 0; k < 4; ++k)
        REQUIRE(q.try_put(make_item(0, k)));
      CHECK(q.try_put(make_item(0, 4)).code() == Errc::queue_full);
      auto t0 = std::chrono::steady_clock::now();
      CHECK(q.put_for(make_item(0, 4), 150ms).code() == Errc::timeout);
      auto took = std::chrono::steady_clock::now() - t0;
      CHECK(took >= 150ms);
      CHECK(took < 5s);
      // One out, one in: the queue is usable again and kept its order.
      CHECK(q.try_get().value() == make_item(0, 0));
      REQUIRE(q.try_put(make_item(0, 4)));
      for (std::uint32_t k = 1; k <= 4; ++k)
        CHECK(q.try_get().value() == make_item(0, k));
      CHECK(q.try_get().code() == Errc::would_block);
      t0 = std::chrono::steady_clock::now();
      CHECK(q.get_for(150ms).code() == Errc::timeout);
      CHECK(std::chrono::steady_clock::now() - t0 >= 150ms);

      REQUIRE(q.put(make_item(0, 5)));
      q.close();
      CHECK(q.closed());
      CHECK(q.try_put(make_item(0, 6)).code() == Errc::channel_closed);
      CHECK(q.get().value() == make_item(0, 5));  // what was queued before the close drains
      CHECK(q.get().code() == Errc::channel_closed);
    }
    leaks.verify();
  }

  TEST_CASE("an item over the maximum size is refused with FrameTooLarge and nothing is lost") {
    testing::LeakCheck leaks;
    {
      constexpr std::size_t kMax = 256;
      auto q = make_queue<Item>("toobig", 4, kMax);
      REQUIRE(q.put(make_item(1, 1)));
      Item big = make_item(1, 2);
      big.name.assign(kMax, 'x');  // the encoding adds the other fields and length tags
      auto r = q.try_put(big);
      CHECK(r.code() == Errc::frame_too_large);
      CHECK(r.error().detail.find(std::to_string(kMax)) != std::string::npos);
      big.name.clear();
      big.values.assign(kMax, 1);
      CHECK(q.put_for(big, 1s).code() == Errc::frame_too_large);
      REQUIRE(q.put(make_item(1, 3)));
      CHECK(q.try_get().value() == make_item(1, 1));
      CHECK(q.try_get().value() == make_item(1, 3));
      CHECK(q.try_get().code() == Errc::would_block);
      CHECK(q.lost_count() == 0);

      SUBCASE("bytes that are not an Item are a decoding error; that item alone is consumed") {
        REQUIRE(q.raw().try_push(Bytes{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}));
        REQUIRE(q.put(make_item(1, 4)));
        auto bad = q.try_get();
        REQUIRE_FALSE(bad);
        CHECK((bad.code() == Errc::length_exceeds_remaining ||
               bad.code() == Errc::malformed_payload));
        CHECK(q.try_get().value() == make_item(1, 4));
      }
    }
    leaks.verify();
  }
}
