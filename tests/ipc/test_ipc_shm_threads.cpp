// In-process (threads) variants of the shared-memory ring and queue, for ThreadSanitizer:
// the same code paths as between processes, with both ends in one address space.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "ferry/ipc/shm_queue.hpp"
#include "ferry/ipc/shm_ring.hpp"
#include "testing.hpp"

using namespace ferry;
using namespace ferry::ipc;
using namespace std::chrono_literals;

namespace {

std::uint8_t pattern(std::uint64_t i, std::size_t j) {
  return static_cast<std::uint8_t>((i * 131 + j * 7) & 0xff);
}

bool matches(std::uint64_t id, ByteView p, std::size_t size) {
  if (p.size() != size) return false;
  for (std::size_t j = 0; j < size; ++j) {
    if (p[j] != pattern(id, j)) return false;
  }
  return true;
}

Bytes payload(std::uint64_t id, std::size_t size) {
  Bytes b(size);
  for (std::size_t j = 0; j < size; ++j)
    b[j] = pattern(id, j);
  return b;
}

// A ring in ordinary memory; both ends in this process.
struct HeapRing {
  explicit HeapRing(std::size_t capacity)
      : mem(static_cast<std::uint8_t*>(std::aligned_alloc(64, ring_footprint(capacity)))) {
    std::memset(mem.get(), 0, ring_footprint(capacity));
    ring = init_ring(mem.get(), capacity);
  }
  struct Free {
    void operator()(std::uint8_t* p) const noexcept { std::free(p); }
  };
  std::unique_ptr<std::uint8_t, Free> mem;
  RingControl* ring = nullptr;
};

struct FlagProbe final : PeerProbe {
  std::atomic<bool> flag{false};
  bool closed() noexcept override { return flag.load(std::memory_order_acquire); }
  bool dead() noexcept override { return false; }
};

// Frame sizes: mostly small, now and then larger than the ring (chunked).
std::size_t size_of(std::uint64_t i) {
  if (i % 5000 == 4999) return 100'000;
  return static_cast<std::size_t>((i * 37) % 3000);
}

}  // namespace

TEST_SUITE("ipc.shm.threads") {
  TEST_CASE("an SPSC ring carries frames in order between two threads, chunking big ones") {
    constexpr std::uint64_t kCount = 30000;
    HeapRing hr(16 << 10);
    FlagProbe probe;
    RingOptions opt;
    RingProducer tx(hr.ring, opt);
    RingConsumer rx(hr.ring, opt);
    std::thread producer([&] {
      FrameHeader h;
      for (std::uint64_t i = 0; i < kCount; ++i) {
        h.request_id = i;
        const Bytes p = payload(i, size_of(i));
        if (!tx.send(h, p, Deadline::after(60s), probe)) return;
      }
      probe.flag.store(true, std::memory_order_release);
      wake_ring(*hr.ring);
    });
    std::uint64_t good = 0;
    Frame f;
    std::uint64_t i = 0;
    for (;; ++i) {
      auto st = rx.recv(f, Deadline::after(60s), probe);
      if (!st) {
        CHECK(st.code() == Errc::channel_closed);
        break;
      }
      if (f.request_id() == i && matches(i, f.payload, size_of(i))) ++good;
    }
    producer.join();
    CHECK(i == kCount);
    CHECK(good == kCount);
  }

  TEST_CASE("send_batch publishes frames in order, even a batch much larger than the ring") {
    // The batch holds ~20x the ring: the producer must publish what it has before it waits
    // for room, or both ends would wait for each other.
    constexpr std::uint64_t kCount = 3000;
    HeapRing hr(16 << 10);
    FlagProbe probe;
    RingOptions opt;
    RingProducer tx(hr.ring, opt);
    RingConsumer rx(hr.ring, opt);
    std::vector<Frame> batch(kCount);
    for (std::uint64_t i = 0; i < kCount; ++i) {
      batch[i].header.request_id = i;
      batch[i].payload = payload(i, i % 200);
    }
    std::thread producer([&] {
      CHECK(tx.send_batch(batch, Deadline::after(60s), probe));
      probe.flag.store(true, std::memory_order_release);
      wake_ring(*hr.ring);
    });
    std::uint64_t good = 0, i = 0;
    Frame f;
    for (;; ++i) {
      auto st = rx.recv(f, Deadline::after(60s), probe);
      if (!st) {
        CHECK(st.code() == Errc::channel_closed);
        break;
      }
      if (f.request_id() == i && matches(i, f.payload, i % 200)) ++good;
    }
    producer.join();
    CHECK(i == kCount);
    CHECK(good == kCount);
  }

  TEST_CASE("a timed-out chunked send is aborted and the receiver skips it") {
    HeapRing hr(16 << 10);
    FlagProbe probe;
    RingOptions opt;
    RingProducer tx(hr.ring, opt);
    RingConsumer rx(hr.ring, opt);
    FrameHeader h;
    h.request_id = 1;
    const Bytes big = payload(1, 100'000);
    CHECK(tx.send(h, big, Deadline::now(), probe).code() == Errc::queue_full);
    CHECK(tx.send(h, big, Deadline::after(20ms), probe).code() == Errc::timeout);
    Frame f;
    CHECK(rx.recv(f, Deadline::now(), probe).code() == Errc::would_block);
    h.request_id = 2;
    REQUIRE(tx.send(h, payload(2, 10), Deadline::now(), probe));
    REQUIRE(rx.recv(f, Deadline::now(), probe));
    CHECK(f.request_id() == 2);
    CHECK(matches(2, f.payload, 10));
  }

  TEST_CASE("loaned frames are viewed in place by the consumer thread") {
    constexpr std::uint64_t kCount = 4000;
    HeapRing hr(64 << 10);
    FlagProbe probe;
    RingOptions opt;
    RingProducer tx(hr.ring, opt);
    RingConsumer rx(hr.ring, opt);
    std::thread producer([&] {
      for (std::uint64_t i = 0; i < kCount; ++i) {
        const std::size_t n = (i * 101) % tx.max_loan();
        auto loan = tx.loan(n, Deadline::after(60s), probe);
        if (!loan) return;
        for (std::size_t j = 0; j < n; ++j)
          (*loan)[j] = pattern(i, j);
        if (!tx.publish(n, MessageKind::data, i)) return;
      }
    });
    std::uint64_t good = 0;
    const auto* lo = reinterpret_cast<const std::uint8_t*>(hr.ring);
    const auto* hi = lo + ring_footprint(64 << 10);
    for (std::uint64_t i = 0; i < kCount; ++i) {
      auto v = rx.recv_view(Deadline::after(60s), probe);
      REQUIRE(v);
      const std::size_t n = (i * 101) % tx.max_loan();
      const bool in_place = n == 0 || (v->payload.data() >= lo && v->payload.data() < hi);
      if (v->header.request_id == i && in_place && matches(i, v->payload, n)) ++good;
      rx.release();
    }
    producer.join();
    CHECK(good == kCount);
  }

  TEST_CASE(
      "an MPMC queue shared by 4 producer and 4 consumer threads delivers each message once") {
    testing::LeakCheck leaks;
    {
      ShmQueueOptions o;
      o.capacity = 32;
      o.slot_bytes = 256;
      auto q = ShmQueue::create("threads", o);
      REQUIRE(q);
      constexpr std::uint32_t kPer = 20000;
      std::vector<std::thread> producers, consumers;
      std::vector<std::vector<std::uint64_t>> got(4);
      std::atomic<int> bad{0};
      for (std::uint32_t p = 0; p < 4; ++p) {
        producers.emplace_back([&, p] {
          Bytes m(8);
          for (std::uint32_t k = 0; k < kPer; ++k) {
            std::memcpy(m.data(), &p, 4);
            std::memcpy(m.data() + 4, &k, 4);
            m.resize(8 + k % 200, static_cast<std::uint8_t>(k));
            if (!(*q)->push(m)) bad.fetch_add(1);
            m.resize(8);
          }
        });
      }
      for (std::size_t c = 0; c < 4; ++c) {
        consumers.emplace_back([&, c] {
          Bytes m;
          for (;;) {
            auto st = (*q)->pop(m);
            if (st.code() == Errc::channel_closed) return;
            if (!st || m.size() < 8) {
              bad.fetch_add(1);
              return;
            }
            std::uint32_t p = 0, k = 0;
            std::memcpy(&p, m.data(), 4);
            std::memcpy(&k, m.data() + 4, 4);
            if (m.size() != 8 + k % 200) bad.fetch_add(1);
            got[c].push_back(std::uint64_t{p} << 32 | k);
          }
        });
      }
      for (auto& t : producers)
        t.join();
      (*q)->close();
      for (auto& t : consumers)
        t.join();
      CHECK(bad.load() == 0);
      std::set<std::uint64_t> all;
      std::size_t total = 0;
      for (const auto& g : got) {
        total += g.size();
        all.insert(g.begin(), g.end());
      }
      CHECK(total == 4 * kPer);
      CHECK(all.size() == 4 * kPer);
      CHECK((*q)->lost_count() == 0);
    }
    leaks.verify();
  }
}
