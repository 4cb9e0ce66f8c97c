// Cross-process synchronization primitives, exercised by real processes (self-exec peers).
// Peers report to the test over a pipe on fd 3 and, where they must be told when to go on,
// read from a pipe on fd 4; no test sleeps to synchronize.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "ferry/ipc/sync.hpp"
#include "ferry/shared/archive.hpp"
#include "testing.hpp"

using namespace ferry;
using namespace ferry::ipc;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

namespace {

constexpr int kReportFd = 3;  // peer -> test
constexpr int kGoFd = 4;      // test -> peer

using testing::expect_exit;
using testing::PipeFds;
using testing::read_byte;

void write_byte(int fd, char c) {
  while (::write(fd, &c, 1) < 0 && errno == EINTR) {
  }
}

// Peer side: report a byte to the test / wait for the test's go (EOF counts as go).
void report(char c) {
  write_byte(kReportFd, c);
}
void wait_go() {
  char c;
  while (::read(kGoFd, &c, 1) < 0 && errno == EINTR) {
  }
}
[[noreturn]] void hang_until_killed() {
  for (;;)
    ::pause();
}

// A status as one report byte: the Errc value.
char code_byte(const Status& s) {
  return static_cast<char>(s.code());
}
Errc errc_of(std::optional<char> c) {
  return c ? static_cast<Errc>(static_cast<unsigned char>(*c)) : Errc::unsupported;
}

testing::SpawnOptions with_report(const PipeFds& rep) {
  testing::SpawnOptions o;
  o.fds = {{rep.w, kReportFd}};
  return o;
}
testing::SpawnOptions with_report_and_go(const PipeFds& rep, const PipeFds& go) {
  testing::SpawnOptions o;
  o.fds = {{rep.w, kReportFd}, {go.r, kGoFd}};
  return o;
}

double elapsed_s(SteadyClock::time_point since) {
  return std::chrono::duration<double>(SteadyClock::now() - since).count();
}

// Widens the read-modify-write window so that, without the lock, two processes on two cores
// (or one preempted inside the window) reliably lose updates.
void slow_increment(volatile std::int64_t* p) {
  const std::int64_t v = *p;
  for (int spin = 0; spin < 400; ++spin)
    std::atomic_signal_fence(std::memory_order_seq_cst);  // a compiler-only barrier: no skip
  *p = v + 1;
}

constexpr std::int64_t kIncrementsPerPeer = 250000;
constexpr int kCounterPeers = 4;

}  // namespace

// ---- peers

// args: counter name, start-event name, "locked" | "unlocked"
FERRY_TEST_PEER(sync_counter) {
  auto counter = Value<std::int64_t>::open(args.at(0));
  auto go = Event::open(args.at(1));
  if (!counter || !go) return 10;
  if (!go->wait()) return 11;
  const bool locked = args.at(2) == "locked";
  volatile std::int64_t* raw = counter->raw();
  for (std::int64_t i = 0; i < kIncrementsPerPeer; ++i) {
    if (locked) {
      auto g = counter->lock();
      if (!g) return 12;
      slow_increment(raw);
    } else {
      slow_increment(raw);
    }
  }
  return 0;
}

// Takes the Lock, reports 'H', hangs until killed. args: lock name
FERRY_TEST_PEER(lock_hold_forever) {
  auto l = Lock::open(args.at(0));
  if (!l || !l->acquire()) return 10;
  report('H');
  hang_until_killed();
}

// Takes the Lock, reports 'H', releases when told to, exits. args: lock name
FERRY_TEST_PEER(lock_hold_until_go) {
  auto l = Lock::open(args.at(0));
  if (!l || !l->acquire()) return 10;
  report('H');
  wait_go();
  return l->release() ? 0 : 11;
}

// Reports 'W', blocks in acquire, reports the Errc; if owner_died, repairs and releases.
FERRY_TEST_PEER(lock_wait_and_report) {
  auto l = Lock::open(args.at(0));
  if (!l) return 10;
  report('W');
  Status s = l->acquire();
  report(code_byte(s));
  if (s.code() == Errc::owner_died && !l->make_consistent()) return 11;
  if (s || s.code() == Errc::owner_died) return l->release() ? 0 : 12;
  return 13;
}

// Locks the Value, half-updates it (first field), reports 'H', hangs until killed.
struct Pair {
  std::int64_t a;
  std::int64_t b;  // invariant: a == b
};
FERRY_TEST_PEER(value_hold_forever) {
  auto v = Value<Pair>::open(args.at(0));
  if (!v) return 10;
  auto g = v->lock();
  if (!g) return 11;
  (*g)->a = 99;
  report('H');
  hang_until_killed();
}

// Takes the RLock three levels deep, reports 'H', hangs until killed.
FERRY_TEST_PEER(rlock_hold_forever) {
  auto l = RLock::open(args.at(0));
  if (!l) return 10;
  for (int i = 0; i < 3; ++i) {
    if (!l->acquire()) return 11;
  }
  report('H');
  hang_until_killed();
}

// Reports 'W', blocks on the RLock, reports the Errc and its depth, repairs, releases.
FERRY_TEST_PEER(rlock_wait_and_report) {
  auto l = RLock::open(args.at(0));
  if (!l) return 10;
  report('W');
  Status s = l->acquire();
  report(code_byte(s));
  report(static_cast<char>(l->depth()));
  if (s.code() == Errc::owner_died && !l->make_consistent()) return 11;
  return l->release() ? 0 : 12;
}

// Reports the Errc of one try_acquire of the RLock (and releases it if it got it).
FERRY_TEST_PEER(rlock_try) {
  auto l = RLock::open(args.at(0));
  if (!l) return 10;
  Status s = l->try_acquire();
  report(code_byte(s));
  if (s) (void)l->release();
  return 0;
}

// Takes n units of the Semaphore, reports 'H', hangs until killed. args: name, n
FERRY_TEST_PEER(sem_hold_forever) {
  auto s = Semaphore::open(args.at(0));
  if (!s) return 10;
  for (int i = 0; i < std::stoi(args.at(1)); ++i) {
    if (!s->acquire()) return 11;
  }
  report('H');
  hang_until_killed();
}

// Reports 'W', blocks on the Semaphore, reports the Errc, releases.
FERRY_TEST_PEER(sem_wait_and_report) {
  auto s = Semaphore::open(args.at(0));
  if (!s) return 10;
  report('W');
  Status st = s->acquire();
  report(code_byte(st));
  if (st || st.code() == Errc::owner_died) return s->release() ? 0 : 11;
  return 12;
}

// Reports 'W', waits on the Event, exits 0 if it was set.
FERRY_TEST_PEER(event_wait) {
  auto e = Event::open(args.at(0));
  if (!e) return 10;
  report('W');
  return e->wait() ? 0 : 11;
}

// Opens the Barrier and reports 'W'; then either waits at it (args[1] == "wait") and reports
// the Errc, or hangs until killed without arriving ("absent").
FERRY_TEST_PEER(barrier_party) {
  auto b = Barrier::open(args.at(0));
  if (!b) return 10;
  if (args.at(1) == "absent") {
    report('W');
    hang_until_killed();
  }
  report('W');
  auto r = b->wait();
  report(static_cast<char>(r.code()));
  return 0;
}

// Passes the Barrier `rounds` times; reports each arrival index (+ 'a').
FERRY_TEST_PEER(barrier_rounds) {
  auto b = Barrier::open(args.at(0));
  if (!b) return 10;
  for (int i = 0; i < std::stoi(args.at(1)); ++i) {
    auto r = b->wait(Deadline::after(30s));
    if (!r) return 11;
    report(static_cast<char>('a' + *r));
  }
  return 0;
}

// A bounded queue in shared memory, guarded by a Condition's lock.
struct SharedQueue {
  std::int64_t items[8];
  std::uint32_t head;
  std::uint32_t tail;  // head == tail: empty; tail - head == 8: full
};
constexpr int kQueueItems = 2000;

// Producer: pushes 1..kQueueItems, waiting while the queue is full.
FERRY_TEST_PEER(cond_producer) {
  auto c = Condition::open(args.at(0));
  auto q = Value<SharedQueue>::open(args.at(1));
  if (!c || !q) return 10;
  SharedQueue* s = q->raw();
  for (std::int64_t i = 1; i <= kQueueItems; ++i) {
    auto g = c->lock();
    if (!g) return 11;
    if (!c->wait(
            *g, [&] { return s->tail - s->head < 8; }, Deadline::after(30s)))
      return 12;
    s->items[s->tail % 8] = i;
    ++s->tail;
    c->notify_all();
  }
  return 0;
}

// Consumer: pops kQueueItems, checks they come in order, reports 'K' when all did.
FERRY_TEST_PEER(cond_consumer) {
  auto c = Condition::open(args.at(0));
  auto q = Value<SharedQueue>::open(args.at(1));
  if (!c || !q) return 10;
  SharedQueue* s = q->raw();
  for (std::int64_t want = 1; want <= kQueueItems; ++want) {
    auto g = c->lock();
    if (!g) return 11;
    if (!c->wait(
            *g, [&] { return s->tail != s->head; }, Deadline::after(30s)))
      return 12;
    const std::int64_t got = s->items[s->head % 8];
    ++s->head;
    c->notify_all();
    if (got != want) return 13;
  }
  report('K');
  return 0;
}

// Receives a Value<int64_t>, a Lock and a Semaphore serialized by name (hex of the cereal
// bytes); sets the value to 42 under the lock and releases one semaphore unit.
FERRY_TEST_PEER(receive_handles) {
  Value<std::int64_t> v;
  Lock l;
  Semaphore sem;
  try {
    const Bytes bytes = testing::from_hex(args.at(0));
    BoundedInputArchive in(ByteView(bytes.data(), bytes.size()));
    in(v, l, sem);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "decode: %s\n", e.what());
    return 10;
  }
  {
    auto g = l.guard();
    if (!g || !v.set(42)) return 11;
  }
  return sem.release() ? 0 : 12;
}

// ---- tests

TEST_SUITE("ipc.sync") {
  TEST_CASE("a Lock makes 4 processes' 1,000,000 increments of a shared counter exact") {
    testing::LeakCheck leaks;
    {
      auto counter = Value<std::int64_t>::create("counter", 0);
      auto go = Event::create("go");
      REQUIRE(counter);
      REQUIRE(go);
      std::vector<testing::Child> peers;
      for (int i = 0; i < kCounterPeers; ++i)
        peers.push_back(testing::spawn_peer("sync_counter", {"counter", "go", "locked"}));
      go->set();
      for (auto& p : peers)
        expect_exit(p, 0, 110s);
      CHECK(counter->get().value() == kCounterPeers * kIncrementsPerPeer);
    }
    leaks.verify();
  }

  TEST_CASE("without the lock the same 4-process counter loses updates") {
    testing::LeakCheck leaks;
    {
      auto counter = Value<std::int64_t>::create("counter", 0);
      auto go = Event::create("go");
      REQUIRE(counter);
      REQUIRE(go);
      std::vector<testing::Child> peers;
      for (int i = 0; i < kCounterPeers; ++i)
        peers.push_back(testing::spawn_peer("sync_counter", {"counter", "go", "unlocked"}));
      go->set();
      for (auto& p : peers)
        expect_exit(p, 0, 110s);
      const auto total = counter->get().value();
      MESSAGE("unlocked total: " << total << " of " << kCounterPeers * kIncrementsPerPeer);
      CHECK(total < kCounterPeers * kIncrementsPerPeer);
      CHECK(total > 0);
    }
    leaks.verify();
  }

  TEST_CASE("a Lock whose holder is SIGKILLed passes to a blocked waiter with owner_died") {
    testing::LeakCheck leaks;
    {
      auto lock = Lock::create("lock");
      REQUIRE(lock);
      PipeFds hrep, wrep;
      auto holder = testing::spawn_peer("lock_hold_forever", {"lock"}, with_report(hrep));
      REQUIRE(read_byte(hrep.r, 20s) == 'H');
      auto waiter = testing::spawn_peer("lock_wait_and_report", {"lock"}, with_report(wrep));
      REQUIRE(read_byte(wrep.r, 20s) == 'W');
      CHECK(lock->try_acquire().code() == Errc::would_block);

      const auto t0 = SteadyClock::now();
      holder.kill(SIGKILL);
      CHECK(errc_of(read_byte(wrep.r, 5s)) == Errc::owner_died);
      CHECK(elapsed_s(t0) < 1.0);
      expect_exit(waiter);
      REQUIRE(holder.wait_for(10s));
      // The waiter repaired it: the lock is ordinary again.
      CHECK(lock->acquire_for(5s));
      CHECK(lock->release());
    }
    leaks.verify();
  }

  TEST_CASE("a Lock recovered without make_consistent becomes broken, never a hang") {
    testing::LeakCheck leaks;
    {
      auto lock = Lock::create("lock");
      REQUIRE(lock);
      PipeFds rep;
      auto holder = testing::spawn_peer("lock_hold_forever", {"lock"}, with_report(rep));
      REQUIRE(read_byte(rep.r, 20s) == 'H');
      holder.kill(SIGKILL);
      REQUIRE(holder.wait_for(10s));
      {
        auto g = lock->guard_for(1s);
        REQUIRE(g);
        CHECK(g->owner_died());
      }  // released without make_consistent()
      CHECK(lock->try_acquire().code() == Errc::broken);
      CHECK(lock->acquire_for(100ms).code() == Errc::broken);
    }
    leaks.verify();
  }

  TEST_CASE("a Value whose lock holder is SIGKILLed mid-update reports owner_died to lock()") {
    testing::LeakCheck leaks;
    {
      auto v = Value<Pair>::create("pair", Pair{1, 1});
      REQUIRE(v);
      PipeFds rep;
      auto holder = testing::spawn_peer("value_hold_forever", {"pair"}, with_report(rep));
      REQUIRE(read_byte(rep.r, 20s) == 'H');
      const auto t0 = SteadyClock::now();
      holder.kill(SIGKILL);
      {
        auto g = v->lock(Deadline::after(5s));
        REQUIRE(g);
        CHECK(elapsed_s(t0) < 1.0);
        CHECK(g->owner_died());
        CHECK((*g)->a == 99);  // the dead holder's half-done update is visible: repair it
        (*g)->a = (*g)->b;
        CHECK(g->make_consistent());
        CHECK_FALSE(g->owner_died());
      }
      CHECK(v->get().value().a == 1);
      CHECK(v->set(Pair{2, 2}));
      CHECK(v->with_lock([](Pair& p) { return p.a + p.b; }).value() == 4);
      REQUIRE(holder.wait_for(10s));
    }
    leaks.verify();
  }

  TEST_CASE("an RLock held 3 deep by a SIGKILLed process passes to a waiter at depth 1") {
    testing::LeakCheck leaks;
    {
      auto lock = RLock::create("rlock");
      REQUIRE(lock);
      PipeFds hrep, wrep;
      auto holder = testing::spawn_peer("rlock_hold_forever", {"rlock"}, with_report(hrep));
      REQUIRE(read_byte(hrep.r, 20s) == 'H');
      auto waiter = testing::spawn_peer("rlock_wait_and_report", {"rlock"}, with_report(wrep));
      REQUIRE(read_byte(wrep.r, 20s) == 'W');

      const auto t0 = SteadyClock::now();
      holder.kill(SIGKILL);
      CHECK(errc_of(read_byte(wrep.r, 5s)) == Errc::owner_died);
      CHECK(elapsed_s(t0) < 1.0);
      CHECK(read_byte(wrep.r, 5s) == 1);  // depth
      expect_exit(waiter);
      REQUIRE(holder.wait_for(10s));
      CHECK(lock->acquire_for(5s));
      CHECK(lock->release());
    }
    leaks.verify();
  }

  TEST_CASE("an RLock re-entered 3 times is free only after 3 releases") {
    testing::LeakCheck leaks;
    {
      auto lock = RLock::create("rlock");
      REQUIRE(lock);
      CHECK(lock->depth() == 0);
      CHECK(lock->release().code() == Errc::invalid_argument);
      for (std::uint32_t i = 1; i <= 3; ++i) {
        REQUIRE(lock->acquire());
        CHECK(lock->depth() == i);
      }
      auto try_from_other_process = [] {
        PipeFds rep;
        auto p = testing::spawn_peer("rlock_try", {"rlock"}, with_report(rep));
        const Errc e = errc_of(read_byte(rep.r, 20s));
        expect_exit(p);
        return e;
      };
      CHECK(lock->release());
      CHECK(lock->release());
      CHECK(lock->depth() == 1);
      CHECK(try_from_other_process() == Errc::would_block);
      CHECK(lock->release());
      CHECK(lock->depth() == 0);
      CHECK(try_from_other_process() == Errc::ok);
      {
        auto g1 = lock->guard();
        REQUIRE(g1);
        auto g2 = lock->try_guard();
        REQUIRE(g2);
        CHECK(lock->depth() == 2);
      }
      CHECK(lock->depth() == 0);
    }
    leaks.verify();
  }

  TEST_CASE("a Semaphore's units held by a SIGKILLed process are reclaimed for a waiter") {
    testing::LeakCheck leaks;
    {
      auto sem = Semaphore::create("sem", 2);
      REQUIRE(sem);
      PipeFds hrep, wrep;
      auto holder = testing::spawn_peer("sem_hold_forever", {"sem", "2"}, with_report(hrep));
      REQUIRE(read_byte(hrep.r, 20s) == 'H');
      CHECK(sem->value() == 0);
      CHECK(sem->try_acquire().code() == Errc::would_block);
      auto waiter = testing::spawn_peer("sem_wait_and_report", {"sem"}, with_report(wrep));
      REQUIRE(read_byte(wrep.r, 20s) == 'W');

      const auto t0 = SteadyClock::now();
      holder.kill(SIGKILL);
      REQUIRE(holder.wait_for(10s));
      CHECK(errc_of(read_byte(wrep.r, 5s)) == Errc::owner_died);
      CHECK(elapsed_s(t0) < 1.0);
      expect_exit(waiter);
      CHECK(sem->value() == 2);  // both dead units back, the waiter's released
    }
    leaks.verify();
  }

  TEST_CASE("a BoundedSemaphore refuses a release past its bound with invalid_argument") {
    testing::LeakCheck leaks;
    {
      auto sem = BoundedSemaphore::create("bsem", 2);
      REQUIRE(sem);
      CHECK(sem->bound() == 2);
      CHECK(sem->release().code() == Errc::invalid_argument);
      CHECK(sem->value() == 2);
      REQUIRE(sem->acquire());
      REQUIRE(sem->try_acquire());
      CHECK(sem->try_acquire().code() == Errc::would_block);
      CHECK(sem->release(2));
      CHECK(sem->release().code() == Errc::invalid_argument);
      CHECK(sem->value() == 2);
      // A plain Semaphore handle cannot open it, nor the other way round.
      CHECK(Semaphore::open("bsem").code() == Errc::invalid_argument);
    }
    leaks.verify();
  }

  TEST_CASE("an Event set once wakes all 3 processes waiting on it") {
    testing::LeakCheck leaks;
    {
      auto ev = Event::create("ev");
      REQUIRE(ev);
      PipeFds rep;
      std::vector<testing::Child> peers;
      for (int i = 0; i < 3; ++i)
        peers.push_back(testing::spawn_peer("event_wait", {"ev"}, with_report(rep)));
      for (int i = 0; i < 3; ++i)
        REQUIRE(read_byte(rep.r, 20s) == 'W');
      CHECK_FALSE(ev->is_set());
      ev->set();
      CHECK(ev->is_set());
      for (auto& p : peers)
        expect_exit(p, 0, 10s);
      ev->clear();
      CHECK_FALSE(ev->is_set());
      CHECK(ev->try_wait().code() == Errc::would_block);
    }
    leaks.verify();
  }

  TEST_CASE("a Condition carries 2000 items in order from a producer to a consumer process") {
    testing::LeakCheck leaks;
    {
      auto cond = Condition::create("cond");
      auto queue = Value<SharedQueue>::create("queue", SharedQueue{});
      REQUIRE(cond);
      REQUIRE(queue);
      PipeFds rep;
      auto consumer = testing::spawn_peer("cond_consumer", {"cond", "queue"}, with_report(rep));
      auto producer = testing::spawn_peer("cond_producer", {"cond", "queue"});
      CHECK(read_byte(rep.r, 60s) == 'K');
      expect_exit(producer);
      expect_exit(consumer);
    }
    leaks.verify();
  }

  TEST_CASE("a Barrier of 4 lets 4 processes through 3 rounds with distinct arrival indices") {
    testing::LeakCheck leaks;
    {
      auto bar = Barrier::create("bar", 4);
      REQUIRE(bar);
      PipeFds rep;
      std::vector<testing::Child> peers;
      for (int i = 0; i < 4; ++i)
        peers.push_back(testing::spawn_peer("barrier_rounds", {"bar", "3"}, with_report(rep)));
      std::array<int, 4> seen{};
      for (int i = 0; i < 12; ++i) {
        auto c = read_byte(rep.r, 30s);
        REQUIRE(c);
        REQUIRE(*c >= 'a');
        REQUIRE(*c < 'a' + 4);
        ++seen[static_cast<std::size_t>(*c - 'a')];
      }
      for (int n : seen)
        CHECK(n == 3);
      for (auto& p : peers)
        expect_exit(p);
      CHECK_FALSE(bar->broken());
    }
    leaks.verify();
  }

  TEST_CASE("a Barrier of 4 whose 4th party is SIGKILLed before arriving breaks for the 3 others") {
    testing::LeakCheck leaks;
    {
      auto bar = Barrier::create("bar", 4);
      REQUIRE(bar);
      PipeFds rep, vrep;
      std::vector<testing::Child> waiters;
      for (int i = 0; i < 3; ++i)
        waiters.push_back(testing::spawn_peer("barrier_party", {"bar", "wait"}, with_report(rep)));
      auto victim = testing::spawn_peer("barrier_party", {"bar", "absent"}, with_report(vrep));
      for (int i = 0; i < 3; ++i)
        REQUIRE(read_byte(rep.r, 20s) == 'W');
      REQUIRE(read_byte(vrep.r, 20s) == 'W');

      const auto t0 = SteadyClock::now();
      victim.kill(SIGKILL);
      for (int i = 0; i < 3; ++i)
        CHECK(errc_of(read_byte(rep.r, 5s)) == Errc::broken);
      CHECK(elapsed_s(t0) < 1.0);
      for (auto& w : waiters)
        expect_exit(w);
      REQUIRE(victim.wait_for(10s));
      CHECK(bar->broken());
      CHECK(bar->wait().code() == Errc::broken);
      // reset() forgets the dead party: the barrier works again.
      bar->reset();
      CHECK_FALSE(bar->broken());
    }
    leaks.verify();
  }

  TEST_CASE("a Barrier party SIGKILLed while waiting breaks it for the parties waiting with it") {
    testing::LeakCheck leaks;
    {
      auto bar = Barrier::create("bar", 4);
      REQUIRE(bar);
      PipeFds rep, vrep;
      auto victim = testing::spawn_peer("barrier_party", {"bar", "wait"}, with_report(vrep));
      REQUIRE(read_byte(vrep.r, 20s) == 'W');
      std::vector<testing::Child> waiters;
      for (int i = 0; i < 2; ++i)
        waiters.push_back(testing::spawn_peer("barrier_party", {"bar", "wait"}, with_report(rep)));
      for (int i = 0; i < 2; ++i)
        REQUIRE(read_byte(rep.r, 20s) == 'W');

      const auto t0 = SteadyClock::now();
      victim.kill(SIGKILL);
      for (int i = 0; i < 2; ++i)
        CHECK(errc_of(read_byte(rep.r, 5s)) == Errc::broken);
      CHECK(elapsed_s(t0) < 1.0);
      for (auto& w : waiters)
        expect_exit(w);
      REQUIRE(victim.wait_for(10s));
    }
    leaks.verify();
  }

  TEST_CASE("timed and try forms return timeout / would_block within their deadline") {
    testing::LeakCheck leaks;
    {
      auto lock = Lock::create("lock");
      auto sem = Semaphore::create("sem", 0);
      auto ev = Event::create("ev");
      auto cond = Condition::create("cond");
      auto bar = Barrier::create("bar", 2);
      REQUIRE(lock);
      REQUIRE(sem);
      REQUIRE(ev);
      REQUIRE(cond);
      REQUIRE(bar);

      PipeFds rep, go;
      auto holder =
          testing::spawn_peer("lock_hold_until_go", {"lock"}, with_report_and_go(rep, go));
      REQUIRE(read_byte(rep.r, 20s) == 'H');
      auto timed = [](auto&& call, std::chrono::milliseconds d) {
        const auto t0 = SteadyClock::now();
        const Errc e = call(d).code();
        const double took = elapsed_s(t0);
        CHECK(took >= std::chrono::duration<double>(d).count() * 0.99);
        CHECK(took < std::chrono::duration<double>(d).count() + 1.0);
        return e;
      };
      CHECK(lock->try_acquire().code() == Errc::would_block);
      CHECK(timed([&](auto d) { return lock->acquire_for(d); }, 200ms) == Errc::timeout);
      CHECK(lock->try_guard().code() == Errc::would_block);
      write_byte(go.w, 'g');
      expect_exit(holder);
      CHECK(lock->acquire_for(5s));
      CHECK(lock->release());

      CHECK(sem->try_acquire().code() == Errc::would_block);
      CHECK(timed([&](auto d) { return sem->acquire_for(d); }, 150ms) == Errc::timeout);
      CHECK(ev->try_wait().code() == Errc::would_block);
      CHECK(timed([&](auto d) { return ev->wait_for(d); }, 150ms) == Errc::timeout);
      {
        auto g = cond->lock();
        REQUIRE(g);
        CHECK(timed([&](auto d) { return cond->wait_for(*g, d); }, 150ms) == Errc::timeout);
        CHECK(g->owns_lock());  // retaken on timeout
        CHECK(timed([&](auto d) { return cond->wait_for(*g, d, [] { return false; }); }, 150ms) ==
              Errc::timeout);
      }
      CHECK(timed([&](auto d) { return bar->wait_for(d); }, 150ms) == Errc::timeout);
      CHECK(bar->broken());  // a party that timed out breaks the barrier
      CHECK(bar->wait_for(1s).code() == Errc::broken);
    }
    leaks.verify();
  }

  TEST_CASE("handles serialized by name with cereal open the same primitives in another process") {
    testing::LeakCheck leaks;
    {
      auto v = Value<std::int64_t>::create("val", 7);
      auto l = Lock::create("lock");
      auto sem = Semaphore::create("sem", 0, {.reclaim_dead_holders = false});
      REQUIRE(v);
      REQUIRE(l);
      REQUIRE(sem);
      Bytes bytes;
      {
        BufferOutputArchive out(bytes);
        out(*v, *l, *sem);
      }
      auto peer = testing::spawn_peer("receive_handles", {testing::to_hex(bytes)});
      CHECK(sem->acquire_for(20s));
      expect_exit(peer);
      CHECK(v->get().value() == 42);

      // Round trip in this process too: the loaded handle is not the creator.
      Value<std::int64_t> again;
      {
        BoundedInputArchive in(ByteView(bytes.data(), bytes.size()));
        in(again);
      }
      CHECK(again.shm_object() == v->shm_object());
      CHECK(again.get().value() == 42);
    }
    leaks.verify();
  }

  TEST_CASE("names: session-prefixed, exclusive create, typed open, removed by the creator") {
    testing::LeakCheck leaks;
    {
      auto l = Lock::create("named");
      REQUIRE(l);
      CHECK(l->shm_object() == shm_name("named"));
      CHECK(::access(("/dev/shm/" + shm_name("named")).c_str(), F_OK) == 0);
      CHECK(Lock::create("named").code() == Errc::already_exists);
      CHECK(Event::open("named").code() == Errc::invalid_argument);
      CHECK(Lock::open("missing").code() == Errc::not_found);
      CHECK(Lock::create("a/b").code() == Errc::invalid_argument);
      CHECK(Lock::create("").code() == Errc::invalid_argument);
      auto opened = Lock::open("named");
      REQUIRE(opened);
      CHECK(opened->acquire());
      // Same thread, two handles: not re-entered. Try and timed forms answer as for any
      // unavailable lock (the timed one after its deadline); the blocking form, which would
      // wait forever, is an error at once.
      CHECK(l->try_acquire().code() == Errc::would_block);
      const auto t0 = std::chrono::steady_clock::now();
      CHECK(l->acquire_for(std::chrono::milliseconds(80)).code() == Errc::timeout);
      CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(80));
      CHECK(l->acquire().code() == Errc::invalid_argument);
      CHECK(opened->release());
      CHECK(Value<std::int32_t>::create("v32", 1));  // destroyed at once: name removed
      CHECK(Value<std::int32_t>::open("v32").code() == Errc::not_found);
      auto arr = Array<double>::create("arr", 5, 1.5);
      REQUIRE(arr);
      CHECK(Array<float>::open("arr").code() == Errc::invalid_argument);  // element size
      auto arr2 = Array<double>::open("arr");
      REQUIRE(arr2);
      CHECK(arr2->size() == 5);
      CHECK(arr2->set(4, 2.5));
      CHECK(arr->get(4).value() == 2.5);
      CHECK(arr->get(5).code() == Errc::invalid_argument);
      CHECK(arr->with_lock([](std::span<double> s) {
                 double sum = 0;
                 for (double x : s)
                   sum += x;
                 return sum;
               })
                .value() == 8.5);
    }
    // The creators are gone: so are their names (LeakCheck), and the handles moved from were
    // left empty.
    leaks.verify();
  }
}
