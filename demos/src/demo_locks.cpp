// rlock: a Lock is not re-entrant, an RLock is. deadlock: two processes, two locks, opposite
// order; timed acquires find the cycle instead of hanging; ordered locks never deadlock.
#include <unistd.h>

#include <array>
#include <string>
#include <thread>
#include <vector>

#include "tour.hpp"

namespace ferry::demos {
namespace {

// ---- rlock (Python: rlock_ex.py / reentrant_lock.py)

struct RlockReport {
  std::string lock_again;  // what the timed re-acquire of the held Lock returned
  double lock_again_ms = 0;
  std::string lock_blocking;  // what the blocking re-acquire returned
  double lock_blocking_ms = 0;
  bool rlock_again = false;
  std::uint32_t depth_at_top = 0;
  std::uint32_t depth_after = 0;  // after one release per acquire
  template <class A>
  void serialize(A& ar) {
    ar(lock_again, lock_again_ms, lock_blocking, lock_blocking_ms, rlock_again, depth_at_top,
       depth_after);
  }
};

// Takes the Lock twice, then the RLock twice, pausing (events) while holding each so the main
// process can try them from outside.
RlockReport rlock_owner(std::string base) {
  auto lock = Lock::open(base + ".lock").value();
  auto rlock = RLock::open(base + ".rlock").value();
  auto event = [&](const char* what) { return Event::open(base + "." + what).value(); };
  RlockReport r;

  lock.acquire().value();
  say("    (worker) got the Lock for the first time; asking for it again blocks this process");
  auto t0 = Clock::now();
  const Status again = lock.acquire_for(1s);
  r.lock_again_ms = ms_since(t0);
  r.lock_again = again ? "ok" : again.error().message();
  if (again) lock.release().value();  // (cannot happen: a Lock is not re-entrant)
  t0 = Clock::now();
  const Status forever = lock.acquire();
  r.lock_blocking_ms = ms_since(t0);
  r.lock_blocking = forever ? "ok" : forever.error().message();
  if (forever) lock.release().value();
  event("lock-held").set();
  event("lock-checked").wait_for(5s).value();
  lock.release().value();

  rlock.acquire().value();
  r.rlock_again = static_cast<bool>(rlock.acquire_for(300ms));
  r.depth_at_top = rlock.depth();
  event("rlock-held").set();
  event("rlock-checked").wait_for(5s).value();
  rlock.release().value();
  rlock.release().value();
  r.depth_after = rlock.depth();
  return r;
}

// ---- deadlock (Python: deadlock.py)

char lock_letter(std::int32_t i) {
  return static_cast<char>('A' + i);
}

struct DeadlockReport {
  std::int32_t pid = 0;
  std::string second;  // outcome of the timed acquire of the second lock
  bool cycle = false;
  std::string story;
  template <class A>
  void serialize(A& ar) {
    ar(pid, second, cycle, story);
  }
};

// Shared bookkeeping of a deadlock run: who holds which lock, who waits for which.
struct Table {
  std::array<Lock, 2> locks;
  Array<std::int32_t> holder;  // lock -> participant holding it, or -1
  Array<std::int32_t> waits;   // participant -> lock it waits for, or -1
  Array<std::int32_t> pids;    // participant -> pid
  static Table open(const std::string& base) {
    return {{Lock::open(base + ".lock0").value(), Lock::open(base + ".lock1").value()},
            Array<std::int32_t>::open(base + ".holder").value(),
            Array<std::int32_t>::open(base + ".waits").value(),
            Array<std::int32_t>::open(base + ".pids").value()};
  }
};

// Participant `me` takes lock `first`, waits until the other has its own first lock, then
// asks for `second` with a timeout. When that times out it reads the table: if the holder of
// `second` is waiting for `first`, the two wait for each other forever — a cycle.
DeadlockReport deadlock_opposite(std::string base, std::int32_t me, std::int32_t first,
                                 std::int32_t second) {
  Table t = Table::open(base);
  auto took_first = Barrier::open(base + ".took-first").value();
  auto looked = Barrier::open(base + ".looked").value();
  DeadlockReport r;
  r.pid = static_cast<std::int32_t>(::getpid());
  t.pids.set(static_cast<std::size_t>(me), r.pid).value();

  t.locks[static_cast<std::size_t>(first)].acquire_for(10s).value();
  t.holder.set(static_cast<std::size_t>(first), me).value();
  // Say what it is about to wait for before anyone can time out, so the table is complete
  // whenever either looks at it (however late the other is scheduled).
  t.waits.set(static_cast<std::size_t>(me), second).value();
  took_first.wait_for(10s).value();

  const Status st = t.locks[static_cast<std::size_t>(second)].acquire_for(300ms);
  r.second = st ? "ok" : st.error().message();
  if (st) {  // (the other let go first: no deadlock this time)
    t.locks[static_cast<std::size_t>(second)].release().value();
  } else {
    const std::int32_t other = t.holder.get(static_cast<std::size_t>(second)).value();
    const std::int32_t other_waits =
        other >= 0 ? t.waits.get(static_cast<std::size_t>(other)).value() : -1;
    r.cycle = other >= 0 && other != me && other_waits == first &&
              t.holder.get(static_cast<std::size_t>(first)).value() == me;
    r.story = strf(
        "P%d (pid %d) holds lock %c and waits for lock %c; lock %c is held by P%d "
        "(pid %d), which waits for lock %c",
        me, r.pid, lock_letter(first), lock_letter(second), lock_letter(second), other,
        other >= 0 ? t.pids.get(static_cast<std::size_t>(other)).value() : 0,
        lock_letter(other_waits));
  }
  // Both have looked at the table before either changes it.
  looked.wait_for(10s).value();
  t.waits.set(static_cast<std::size_t>(me), -1).value();
  t.holder.set(static_cast<std::size_t>(first), -1).value();
  t.locks[static_cast<std::size_t>(first)].release().value();
  return r;
}

// The fix: every process takes the locks in one global order (A, then B).
std::int32_t deadlock_ordered(std::string base, std::int32_t me) {
  Table t = Table::open(base);
  for (std::size_t i : {0u, 1u})
    t.locks[i].acquire_for(10s).value();
  std::this_thread::sleep_for(20ms);
  t.locks[1].release().value();
  t.locks[0].release().value();
  return me;
}

}  // namespace

FERRY_TASK(rlock_owner);
FERRY_TASK(deadlock_opposite);
FERRY_TASK(deadlock_ordered);

int rlock(const Options& opt) {
  Verdict v;
  const std::string base = unique_name("rlock");
  auto lock = Lock::create(base + ".lock").value();
  auto rlock = RLock::create(base + ".rlock").value();
  auto make_event = [&](const char* what) { return Event::create(base + "." + what).value(); };
  auto lock_held = make_event("lock-held");
  auto lock_checked = make_event("lock-checked");
  auto rlock_held = make_event("rlock-held");
  auto rlock_checked = make_event("rlock-checked");

  say("A worker takes a Lock, then asks for it again; then the same with an RLock. As with");
  say("Python's lock.acquire(timeout=3), which returns False 3 s later, the Lock is not");
  say("re-entered: the timed acquire blocks its own holder until it times out. An RLock "
      "re-enters.");
  Pool pool(lesson_pool(opt));
  auto f = pool.submit(rlock_owner, base);

  lock_held.wait_for(10s).value();
  const Status outside = lock.acquire_for(100ms);
  if (outside) lock.release().value();
  lock_checked.set();
  rlock_held.wait_for(10s).value();
  const Status try_r = rlock.try_acquire();
  if (try_r) rlock.release().value();
  rlock_checked.set();
  const RlockReport r = f.get();
  const Status after = rlock.acquire_for(1s);
  if (after) rlock.release().value();

  auto text = [](const Status& st) { return st ? std::string("ok") : st.error().message(); };
  say("  worker: got the Lock; asked for it again with acquire_for(1 s)");
  sayf("          -> %s after %.0f ms", r.lock_again.c_str(), r.lock_again_ms);
  say("  worker: asked again with a blocking acquire(), which could never succeed");
  sayf("          -> %s after %.0f ms", r.lock_blocking.c_str(), r.lock_blocking_ms);
  sayf("  main:   acquire_for(100 ms) on the Lock the worker holds -> %s", text(outside).c_str());
  say("  worker: released the Lock; got the RLock (depth 1), asked for it again");
  sayf("          -> %s, depth %u", r.rlock_again ? "ok" : "failed", r.depth_at_top);
  sayf("  main:   try_acquire() on the RLock the worker holds -> %s", text(try_r).c_str());
  sayf("  worker: released the RLock twice (depth %u)", r.depth_after);
  sayf("  main:   acquire_for(1 s) on the RLock -> %s", text(after).c_str());
  say("Python's blocking lock.acquire() would hang that process for ever; ferry answers the");
  say("blocking form with an error at once, since only the caller could ever release the lock.");
  v.check(
      r.lock_again == "Timeout" && r.lock_again_ms >= 990,
      strf("the owner's timed re-acquire of its Lock timed out after the full 1 s (%s, %.0f ms)",
           r.lock_again.c_str(), r.lock_again_ms));
  v.check(r.lock_blocking.rfind("InvalidArgument", 0) == 0 && r.lock_blocking_ms < 500,
          strf("the owner's blocking re-acquire was refused at once (%.0f ms), not a hang",
               r.lock_blocking_ms));
  v.check(outside.code() == Errc::timeout, "another process timed out on the held Lock");
  v.check(r.rlock_again && r.depth_at_top == 2, "the RLock was re-entered by its owner (depth 2)");
  v.check(try_r.code() == Errc::would_block, "another process could not take the held RLock");
  v.check(r.depth_after == 0 && after, "after one release per acquire the RLock was free");
  return v.exit_code();
}

int deadlock(const Options& opt) {
  Verdict v;
  const std::string base = unique_name("deadlock");
  auto lock0 = Lock::create(base + ".lock0").value();
  auto lock1 = Lock::create(base + ".lock1").value();
  auto holder = Array<std::int32_t>::create(base + ".holder", 2, -1).value();
  auto waits = Array<std::int32_t>::create(base + ".waits", 2, -1).value();
  auto pids = Array<std::int32_t>::create(base + ".pids", 2, 0).value();
  auto took_first = Barrier::create(base + ".took-first", 2).value();
  auto looked = Barrier::create(base + ".looked", 2).value();

  Pool pool(lesson_pool(opt, 2));
  await_workers(pool);
  say("1) P0 takes lock A then B; P1 takes lock B then A. Each waits until the other holds its");
  say("   first lock, so both end up waiting for each other (Python's deadlock.py hangs here).");
  say("   ferry's timed acquire gives up after 300 ms, and a table of holders shows the cycle.");
  const auto t0 = Clock::now();
  auto f0 = pool.submit(deadlock_opposite, base, 0, 0, 1);
  auto f1 = pool.submit(deadlock_opposite, base, 1, 1, 0);
  const DeadlockReport r0 = f0.get();
  const DeadlockReport r1 = f1.get();
  const double stuck_ms = ms_since(t0);
  const bool free_after = lock0.try_acquire() && lock1.try_acquire();
  (void)lock0.release();
  (void)lock1.release();
  for (const auto* r : {&r0, &r1}) {
    sayf("   P%d's timed acquire of its second lock: %s", r == &r0 ? 0 : 1, r->second.c_str());
    if (!r->story.empty()) sayf("     %s%s", r->story.c_str(), r->cycle ? ": a cycle." : ".");
  }
  sayf("   both backed off and returned after %.0f ms instead of hanging", stuck_ms);

  say("2) The same work with ordered locks: both take A first, then B.");
  auto g0 = pool.submit(deadlock_ordered, base, 0);
  auto g1 = pool.submit(deadlock_ordered, base, 1);
  const auto t1 = Clock::now();
  const bool ordered_done = g0.get() == 0 && g1.get() == 1;
  sayf("   both got lock A, then lock B, did their work and returned after %.0f ms", ms_since(t1));

  v.check(r0.cycle && r1.cycle,
          "both processes timed out on their second lock and found the cycle of waits");
  v.check(free_after, "both backed off cleanly: locks A and B were free afterwards");
  v.check(ordered_done, "with one lock order, both processes got both locks and finished");
  return v.exit_code();
}

}  // namespace ferry::demos
