// ShmQueue across real processes, including producers and consumers that are SIGKILLed.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "ferry/ipc/shm_queue.hpp"
#include "ferry/shared/session.hpp"
#include "testing.hpp"

using namespace ferry;
using namespace ferry::ipc;
using namespace std::chrono_literals;

namespace {

// A message: producer id (4 bytes), index (4 bytes), then (k % 300) pattern bytes.
Bytes message(std::uint32_t id, std::uint32_t k) {
  Bytes b(8 + k % 300);
  std::memcpy(b.data(), &id, 4);
  std::memcpy(b.data() + 4, &k, 4);
  for (std::size_t j = 8; j < b.size(); ++j)
    b[j] = static_cast<std::uint8_t>(id * 31 + k + j);
  return b;
}

bool parse(ByteView b, std::uint32_t& id, std::uint32_t& k) {
  if (b.size() < 8) return false;
  std::memcpy(&id, b.data(), 4);
  std::memcpy(&k, b.data() + 4, 4);
  if (b.size() != 8 + k % 300) return false;
  for (std::size_t j = 8; j < b.size(); ++j) {
    if (b[j] != static_cast<std::uint8_t>(id * 31 + k + j)) return false;
  }
  return true;
}

// One fixed-size record per message, appended with a single write(2) so a SIGKILL leaves
// whole records (a torn tail is ignored when reading).
struct Rec {
  std::uint64_t seq;
  std::uint32_t id;
  std::uint32_t k;
};

void append(int fd, const Rec& r) {
  if (::write(fd, &r, sizeof r) != static_cast<ssize_t>(sizeof r)) std::abort();
}

std::vector<Rec> read_recs(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<Rec> out;
  Rec r{};
  while (in.read(reinterpret_cast<char*>(&r), sizeof r))
    out.push_back(r);
  return out;
}

std::unique_ptr<ShmQueue> peer_open(const std::string& ep) {
  auto q = ShmQueue::open(ep);
  if (!q) {
    std::fprintf(stderr, "peer: open %s: %s\n", ep.c_str(), q.error().message().c_str());
    std::exit(3);
  }
  return std::move(*q);
}

struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/ferry-shmq-XXXXXX";
    REQUIRE(::mkdtemp(t) != nullptr);
    path = t;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

void expect_clean_exit(testing::Child& c) {
  testing::expect_exit(c, 0, 120s);
}

std::unique_ptr<ShmQueue> create(const std::string& name, std::size_t cap, std::size_t slot) {
  ShmQueueOptions o;
  o.capacity = cap;
  o.slot_bytes = slot;
  auto q = ShmQueue::create(name, o);
  REQUIRE_MESSAGE(q.has_value(), q.error().message());
  return std::move(*q);
}

}  // namespace

// --- peers -----------------------------------------------------------------------------------

// Pushes `count` messages, recording (seq, id, k) for each in `file`.
FERRY_TEST_PEER(q_producer) {
  auto q = peer_open(args.at(0));
  const auto id = static_cast<std::uint32_t>(std::stoul(args.at(1)));
  const auto count = static_cast<std::uint32_t>(std::stoul(args.at(2)));
  const int fd = ::open(args.at(3).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return 4;
  for (std::uint32_t k = 0; k < count; ++k) {
    auto seq = q->push(message(id, k));
    if (!seq) {
      std::fprintf(stderr, "push: %s\n", seq.error().message().c_str());
      return 2;
    }
    append(fd, Rec{*seq, id, k});
  }
  ::close(fd);
  return 0;
}

// Pops until the queue is closed and drained, recording what it got in `file`. A "victim"
// records each message between claiming and committing it, and says "mid-run" on stdout
// while holding its 301st claim so the test kills it around there.
FERRY_TEST_PEER(q_consumer) {
  auto q = peer_open(args.at(0));
  const int fd = ::open(args.at(1).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return 4;
  const bool victim = args.at(2) == "victim";
  Bytes buf;
  for (std::uint64_t n = 0;; ++n) {
    std::uint32_t id = 0, k = 0;
    if (victim) {
      auto s = q->begin_pop(Deadline::never());
      if (s.code() == Errc::channel_closed) return 0;
      if (!s) return 2;
      if (n == 300) {  // while holding a claim, so the kill lands near one
        std::printf("mid-run\n");
        std::fflush(stdout);
      }
      if (!parse(s->bytes, id, k)) return 5;
      append(fd, Rec{s->seq, id, k});
      if (!q->commit_pop(*s)) return 6;
    } else {
      std::uint64_t seq = 0;
      auto st = q->pop(buf, &seq);
      if (st.code() == Errc::channel_closed) return 0;
      if (!st) {
        std::fprintf(stderr, "pop: %s\n", st.error().message().c_str());
        return 2;
      }
      if (!parse(buf, id, k)) return 5;
      append(fd, Rec{seq, id, k});
    }
  }
}

// Claims one message and hangs holding it (until killed).
FERRY_TEST_PEER(q_claim_hang) {
  auto q = peer_open(args.at(0));
  auto s = q->begin_pop(Deadline::after(60s));
  if (!s) return 2;
  std::printf("claimed %llu\n", static_cast<unsigned long long>(s->seq));
  std::fflush(stdout);
  for (;;)
    ::pause();
}

// Reserves a slot for a push and hangs holding it (until killed).
FERRY_TEST_PEER(q_reserve_hang) {
  auto q = peer_open(args.at(0));
  auto s = q->begin_push(16, Deadline::after(60s));
  if (!s) return 2;
  std::printf("reserved %llu\n", static_cast<unsigned long long>(s->seq));
  std::fflush(stdout);
  for (;;)
    ::pause();
}

// --- tests -----------------------------------------------------------------------------------

TEST_SUITE("ipc.shm_queue") {
  TEST_CASE("try, timed and blocking forms report QueueFull, WouldBlock, Timeout and close") {
    testing::LeakCheck leaks;
    {
      auto q = create("forms", 4, 64);
      CHECK(q->endpoint() == "shm://" + shm_name("forms"));
      Bytes out;
      CHECK(q->try_pop(out).code() == Errc::would_block);
      for (std::uint32_t k = 0; k < 4; ++k) {
        auto seq = q->try_push(message(1, k));
        REQUIRE(seq);
        CHECK(*seq == k);
      }
      CHECK(q->try_push(message(1, 9)).code() == Errc::queue_full);
      auto t0 = std::chrono::steady_clock::now();
      CHECK(q->push_for(message(1, 9), 150ms).code() == Errc::timeout);
      CHECK(std::chrono::steady_clock::now() - t0 >= 150ms);
      CHECK(q->try_push(Bytes(65)).code() == Errc::invalid_argument);
      CHECK(q->try_push(Bytes(65)).error().detail.find("slot") != std::string::npos);
      // Another handle (as another process would open it) sees the same queue.
      auto other = ShmQueue::open(q->endpoint());
      REQUIRE(other);
      std::uint32_t id = 0, k = 0;
      for (std::uint32_t i = 0; i < 4; ++i) {
        std::uint64_t seq = 0;
        REQUIRE((*other)->pop(out, &seq));
        CHECK(seq == i);
        REQUIRE(parse(out, id, k));
        CHECK(k == i);
      }
      t0 = std::chrono::steady_clock::now();
      CHECK(q->pop_for(out, 150ms).code() == Errc::timeout);
      CHECK(std::chrono::steady_clock::now() - t0 >= 150ms);
      REQUIRE(q->push(message(1, 5)));
      q->close();
      CHECK(q->push(message(1, 6)).code() == Errc::channel_closed);
      CHECK((*other)->pop(out));  // drains what was pushed before the close
      CHECK((*other)->pop(out).code() == Errc::channel_closed);
      CHECK(q->lost_count() == 0);
      CHECK(q->abandoned_count() == 0);
    }
    CHECK(testing::shm_segments_of_session().empty());
    CHECK(ShmQueue::open("forms").code() == Errc::not_found);
    leaks.verify();
  }

  TEST_CASE("messages from a producer process arrive in FIFO order with rising sequence numbers") {
    testing::LeakCheck leaks;
    {
      TempDir dir;
      auto q = create("fifo", 16, 512);
      constexpr std::uint32_t kCount = 20000;
      auto prod = testing::spawn_peer(
          "q_producer", {q->endpoint(), "7", std::to_string(kCount), dir.path + "/p"});
      Bytes out;
      for (std::uint32_t i = 0; i < kCount; ++i) {
        std::uint64_t seq = 0;
        REQUIRE(q->pop_for(out, 60s, &seq));
        std::uint32_t id = 0, k = 0;
        REQUIRE(parse(out, id, k));
        CHECK(id == 7);
        CHECK(k == i);
        CHECK(seq == i);
      }
      expect_clean_exit(prod);
    }
    leaks.verify();
  }

  TEST_CASE(
      "4 producers, 4 consumers, one consumer SIGKILLed: every message is popped once or "
      "reported lost") {
    testing::LeakCheck leaks;
    {
      TempDir dir;
      auto q = create("mpmc", 64, 1024);
      constexpr std::uint32_t kPerProducer = 5000;
      // Consumer 0 is the victim; it says on stdout when it is mid-run.
      auto victim_peer =
          testing::spawn_reporting_peer("q_consumer", {q->endpoint(), dir.path + "/c0", "victim"});
      std::vector<testing::Child> consumers;
      consumers.push_back(std::move(victim_peer.child));
      for (int c = 1; c < 4; ++c) {
        consumers.push_back(testing::spawn_peer(
            "q_consumer", {q->endpoint(), dir.path + "/c" + std::to_string(c), "survivor"}));
      }
      std::vector<testing::Child> producers;
      for (int p = 0; p < 4; ++p) {
        producers.push_back(testing::spawn_peer(
            "q_producer", {q->endpoint(), std::to_string(p), std::to_string(kPerProducer),
                           dir.path + "/p" + std::to_string(p)}));
      }
      REQUIRE(victim_peer.line(60s) == "mid-run");
      consumers[0].kill(SIGKILL);
      auto vst = consumers[0].wait_for(30s);
      REQUIRE(vst);
      CHECK(vst->signal == SIGKILL);
      for (auto& p : producers)
        expect_clean_exit(p);  // the survivors kept the queue flowing
      q->close();
      for (int c = 1; c < 4; ++c)
        expect_clean_exit(consumers[static_cast<std::size_t>(c)]);

      // Every pushed message, by sequence number.
      std::map<std::uint64_t, std::pair<std::uint32_t, std::uint32_t>> pushed;
      for (int p = 0; p < 4; ++p) {
        for (const auto& r : read_recs(dir.path + "/p" + std::to_string(p)))
          pushed[r.seq] = {r.id, r.k};
      }
      REQUIRE(pushed.size() == 4 * kPerProducer);
      std::set<std::uint64_t> survivors, victim;
      std::size_t survivor_recs = 0;
      bool contents_ok = true;
      for (int c = 0; c < 4; ++c) {
        for (const auto& r : read_recs(dir.path + "/c" + std::to_string(c))) {
          auto it = pushed.find(r.seq);
          if (it == pushed.end() || it->second != std::make_pair(r.id, r.k)) contents_ok = false;
          if (c == 0) {
            victim.insert(r.seq);
          } else {
            survivors.insert(r.seq);
            ++survivor_recs;
          }
        }
      }
      CHECK(contents_ok);                        // each seq carried the message pushed as it
      CHECK(survivor_recs == survivors.size());  // no message popped twice by survivors
      const auto lost_v = q->lost();
      const std::set<std::uint64_t> lost(lost_v.begin(), lost_v.end());
      CHECK(lost_v.size() == lost.size());
      CHECK(q->lost_count() == lost.size());
      CHECK(lost.size() <= 1);  // only the victim's message in hand can be lost
      std::size_t in_both_victim_and_lost = 0, unaccounted = 0;
      for (const auto& [seq, msg] : pushed) {
        const bool s = survivors.count(seq) != 0, v = victim.count(seq) != 0,
                   l = lost.count(seq) != 0;
        if (s && (v || l)) FAIL_CHECK("seq " << seq << " delivered to a survivor and elsewhere");
        if (v && l) ++in_both_victim_and_lost;
        if (!s && !v && !l) ++unaccounted;
      }
      // The victim records a message between claim and commit, so a kill right after the
      // record leaves it both recorded and lost; anything else is exactly one place.
      CHECK(in_both_victim_and_lost <= 1);
      CHECK(unaccounted == 0);
      CHECK(survivors.size() + victim.size() + lost.size() - in_both_victim_and_lost ==
            pushed.size());
      MESSAGE("survivors " << survivors.size() << ", victim " << victim.size() << ", lost "
                           << lost.size());
    }
    leaks.verify();
  }

  TEST_CASE(
      "a consumer killed while holding a message: it is reported lost by sequence number "
      "and the queue keeps flowing") {
    testing::LeakCheck leaks;
    {
      auto q = create("claimdead", 4, 64);
      auto peer = testing::spawn_reporting_peer("q_claim_hang", {q->endpoint()});
      auto seq0 = q->push(message(1, 0));
      REQUIRE(seq0);
      REQUIRE(peer.line(60s) == "claimed " + std::to_string(*seq0));
      peer.child.kill(SIGKILL);
      REQUIRE(peer.child.wait_for(30s));
      // Enough traffic to wrap onto the dead consumer's slot several times.
      Bytes got;
      for (std::uint32_t k = 1; k <= 20; ++k) {
        REQUIRE(q->push_for(message(1, k), 10s));
        std::uint64_t seq = 0;
        REQUIRE(q->pop_for(got, 10s, &seq));
        std::uint32_t id = 0, kk = 0;
        REQUIRE(parse(got, id, kk));
        CHECK(kk == k);
        CHECK(seq == k);
      }
      CHECK(q->lost() == std::vector<std::uint64_t>{*seq0});
      CHECK(q->lost_count() == 1);
      CHECK(q->abandoned_count() == 0);
    }
    leaks.verify();
  }

  TEST_CASE(
      "a producer killed while holding a slot: consumers skip it and the queue keeps "
      "flowing") {
    testing::LeakCheck leaks;
    {
      auto q = create("pushdead", 4, 64);
      auto peer = testing::spawn_reporting_peer("q_reserve_hang", {q->endpoint()});
      REQUIRE(peer.line(60s) == "reserved 0");
      auto seq1 = q->push(message(2, 1));  // queued behind the dead producer's slot
      REQUIRE(seq1);
      CHECK(*seq1 == 1);
      Bytes got;
      std::uint64_t seq = 0;
      CHECK(q->try_pop(got).code() == Errc::would_block);  // its producer is still alive
      peer.child.kill(SIGKILL);
      REQUIRE(peer.child.wait_for(30s));
      REQUIRE(q->pop_for(got, 10s, &seq));
      CHECK(seq == 1);
      for (std::uint32_t k = 2; k <= 20; ++k) {
        REQUIRE(q->push_for(message(2, k), 10s));
        REQUIRE(q->pop_for(got, 10s, &seq));
        CHECK(seq == k);
      }
      CHECK(q->abandoned_count() == 1);
      CHECK(q->lost_count() == 0);
    }
    leaks.verify();
  }
}
