// Pool behaviour with real worker processes (self-exec copies of this test binary).
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <numeric>
#include <ranges>
#include <set>
#include <thread>

#include "ferry/ferry.hpp"
#include "ferry/ipc/factory.hpp"
#include "ferry/shared/messages.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;

namespace {

std::int64_t add(std::int64_t a, std::int64_t b) {
  return a + b;
}
std::int32_t worker_pid(std::int32_t) {
  return static_cast<std::int32_t>(::getpid());
}

// Sets the named event (so the test knows the task is running), then sleeps.
std::int64_t signal_then_sleep(std::string event, std::int64_t ms) {
  auto e = ferry::Event::open(event).value();
  e.set();
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

std::string g_greeting = "none";
void set_greeting(std::string g) {
  g_greeting = std::move(g);
}
std::string greeting(std::int32_t) {
  return g_greeting;
}

std::string echo_text(std::string s) {
  std::printf("echo says %s\n", s.c_str());
  std::fprintf(stderr, "echo warns %s\n", s.c_str());
  return s;
}

// Argument whose decoding fails in the worker (mode 1: throws, mode 2: the worker dies).
struct Hostile {
  int mode = 0;
  template <class A>
  void save(A& ar) const {
    ar(mode);
  }
  template <class A>
  void load(A& ar) {
    ar(mode);
    if (mode == 1) throw std::runtime_error("refusing to decode Hostile");
    if (mode == 2) ::raise(SIGKILL);
  }
};
int take_hostile(Hostile h) {
  return h.mode;
}

// Result whose encoding fails in the worker (throws) or kills it.
struct BadResult {
  int mode = 0;
  template <class A>
  void save(A& ar) const {
    if (mode == 1) throw std::runtime_error("refusing to encode BadResult");
    if (mode == 2) ::raise(SIGKILL);
    ar(mode);
  }
  template <class A>
  void load(A& ar) {
    ar(mode);
    // Only the coordinator decodes results: mode 3 fails there.
    if (mode == 3) throw std::runtime_error("refusing to decode BadResult in the coordinator");
  }
};
BadResult make_bad(int mode) {
  return BadResult{mode};
}

std::int64_t fail_on_three(std::int64_t x) {
  if (x == 3) throw std::invalid_argument("three is refused");
  return x;
}

// Drains an imap_unordered, going on after each failed item: values by index, failures.
template <class R>
std::pair<std::map<std::size_t, R>, std::vector<ferry::FailureInfo>> drain(
    ferry::ImapUnordered<R>& it) {
  std::map<std::size_t, R> values;
  std::vector<ferry::FailureInfo> failures;
  for (;;) {
    try {
      auto item = it.next();
      if (!item) break;
      CHECK(values.emplace(item->first, std::move(item->second)).second);
    } catch (const ferry::TaskFailure& e) {
      failures.push_back(e.info());
    }
  }
  return {std::move(values), std::move(failures)};
}

}  // namespace

// A worker from another release: speaks protocol version 99 in its hello.
FERRY_TEST_PEER(old_protocol_worker) {
  auto ch =
      ferry::ipc::open_channel(std::getenv("FERRY_WORKER_ENDPOINT"), ferry::ipc::Role::connect);
  if (!ch) return 3;
  ferry::msg::Hello h;
  h.protocol_version = 99;
  h.pid = ::getpid();
  h.registry_hash = ferry::TaskRegistry::instance().hash();
  if (!(*ch)->send(ferry::make_frame(ferry::MessageKind::hello, h))) return 3;
  ferry::Frame f;
  if (!(*ch)->recv_for(f, 10s)) return 3;
  return f.header.kind == ferry::MessageKind::reject ? 4 : 0;
}

// A worker of the release before (protocol 1): version 1 in its frame header and its hello.
FERRY_TEST_PEER(v1_worker) {
  auto ch =
      ferry::ipc::open_channel(std::getenv("FERRY_WORKER_ENDPOINT"), ferry::ipc::Role::connect);
  if (!ch) return 3;
  ferry::msg::Hello h;
  h.protocol_version = 1;
  h.pid = ::getpid();
  h.registry_hash = ferry::TaskRegistry::instance().hash();
  ferry::Frame hello = ferry::make_frame(ferry::MessageKind::hello, h);
  hello.header.version = 1;
  if (!(*ch)->send(hello)) return 3;
  ferry::Frame f;
  if (!(*ch)->recv_for(f, 10s)) return 3;
  return f.header.kind == ferry::MessageKind::reject ? 4 : 0;
}

FERRY_TASK(add);
FERRY_TASK(worker_pid);
FERRY_TASK(signal_then_sleep);
FERRY_TASK(set_greeting);
FERRY_TASK(greeting);
FERRY_TASK(echo_text);
FERRY_TASK(take_hostile);
FERRY_TASK(make_bad);
FERRY_TASK(fail_on_three);

using ferry::builtin::square;

TEST_SUITE("coordinator.pool") {
  TEST_CASE("submit, apply and map give correct results over every transport") {
    ft::LeakCheck leaks;
    for (auto t : {ferry::Transport::pipe, ferry::Transport::shm, ferry::Transport::zmq}) {
      CAPTURE(ferry::transport_name(t));
      ferry::Pool pool({.workers = 2, .transport = t});
      CHECK(pool.wait_ready(10s));
      auto f = pool.submit(square, 12);
      CHECK(f.get() == 144);
      CHECK(pool.apply(add, 40, 2) == 42);
      auto squares = pool.map(square, std::views::iota(0, 1000));
      REQUIRE(squares.size() == 1000);
      bool all = true;
      for (std::size_t i = 0; i < 1000; ++i)
        all = all && squares[i] == static_cast<std::int64_t>(i * i);
      CHECK(all);
      auto sums = pool.starmap(add, std::vector<std::tuple<int, int>>{{1, 2}, {3, 4}}, 1);
      CHECK(sums == std::vector<std::int64_t>{3, 7});
    }
    leaks.verify();
  }

  TEST_CASE("imap_unordered yields every item once, and map_reduce and as_completed agree") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 2});
      std::set<std::size_t> seen;
      std::int64_t sum = 0;
      for (auto& [i, v] : pool.imap_unordered(square, std::views::iota(0, 500), 7)) {
        CHECK(seen.insert(i).second);
        CHECK(v == static_cast<std::int64_t>(i * i));
        sum += v;
      }
      CHECK(seen.size() == 500);
      auto total = pool.map_reduce(square, std::views::iota(0, 500), std::int64_t{0},
                                   [](std::int64_t a, std::int64_t b) { return a + b; });
      CHECK(total == sum);
      std::vector<ferry::Future<std::int64_t>> fs;
      for (int i = 0; i < 20; ++i)
        fs.push_back(pool.submit(square, i));
      auto done = ferry::as_completed(fs);
      int n = 0;
      while (auto f = done.next()) {
        CHECK(f->ready());
        ++n;
      }
      CHECK(n == 20);
    }
    leaks.verify();
  }

  TEST_CASE("a task that throws gives RemoteError with type, message, pid and stack") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 1});
      auto f = pool.submit(ferry::builtin::fail, 7);
      try {
        f.get();
        FAIL("expected RemoteError");
      } catch (const ferry::RemoteError& e) {
        CHECK(e.info().type == "std::runtime_error");
        CHECK(e.info().message.find("fail(7)") != std::string::npos);
        CHECK(e.info().pid > 0);
        CHECK(e.info().pid != ::getpid());
        CHECK(!e.info().host.empty());
        CHECK(!e.info().stack.empty());
        CHECK(e.info().task == "fail");
        CHECK(std::string(e.what()).find("RemoteError") != std::string::npos);
      }
      CHECK(pool.apply(square, 3) == 9);  // the worker survives its task's exception
    }
    leaks.verify();
  }

  // With shared-memory objects off, as for a remote worker (test_coordinator_objects: on,
  // such results arrive whole).
  TEST_CASE("a result too large for a frame is a FrameTooLarge error, not a death or a retry") {
    ft::LeakCheck leaks;
    for (auto t : {ferry::Transport::pipe, ferry::Transport::shm, ferry::Transport::zmq}) {
      CAPTURE(ferry::transport_name(t));
      ferry::Pool pool({.workers = 1, .transport = t, .object_threshold = 0});
      // 70,000,000 bytes encode to 70,000,008 (a length, then the bytes): over 64 MiB.
      auto f = pool.submit(ferry::builtin::blob, 70'000'000);
      try {
        f.get();
        FAIL("expected RemoteError");
      } catch (const ferry::RemoteError& e) {
        CHECK(e.info().type == "ferry::FrameTooLarge");
        CHECK(e.info().message.find("70000008") != std::string::npos);
        CHECK(e.info().message.find(std::to_string(ferry::kDefaultMaxFrame)) != std::string::npos);
        CHECK(e.info().task == "blob");
      }
      CHECK(pool.apply(square, 9) == 81);
      CHECK(pool.apply(ferry::builtin::blob, 1000).size() == 1000);
      const auto st = pool.stats();
      CHECK(st.worker_deaths == 0);
      CHECK(st.retries == 0);
      CHECK(st.workers_spawned == 1);  // the same worker served the tasks after it
    }
    leaks.verify();
  }

  TEST_CASE("in a chunk, only the item whose result is too large for a frame fails") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 1, .object_threshold = 0});
      const std::vector<std::int64_t> sizes{10, 70'000'000, 20};
      auto it = pool.imap_unordered(ferry::builtin::blob, sizes, 3);
      auto [values, failures] = drain(it);
      REQUIRE(values.size() == 2);
      CHECK(values.at(0) == ferry::builtin::blob(10));
      CHECK(values.at(2) == ferry::builtin::blob(20));
      REQUIRE(failures.size() == 1);
      CHECK(failures[0].item == 1);
      CHECK(failures[0].type == "ferry::FrameTooLarge");
      CHECK(failures[0].message.find("70000008") != std::string::npos);
      CHECK(failures[0].message.find(std::to_string(ferry::kDefaultMaxFrame)) != std::string::npos);
      try {
        pool.map(ferry::builtin::blob, sizes, 3);
        FAIL("expected RemoteError");
      } catch (const ferry::RemoteError& e) {
        CHECK(e.info().item == 1);
        CHECK(e.info().type == "ferry::FrameTooLarge");
      }
      // Each fits alone, not both: the larger is left out, the other keeps its value.
      auto pair = pool.imap_unordered(ferry::builtin::blob,
                                      std::vector<std::int64_t>{40'000'000, 30'000'000}, 2);
      auto [kept, left_out] = drain(pair);
      REQUIRE(kept.size() == 1);
      CHECK(kept.at(1).size() == 30'000'000);
      REQUIRE(left_out.size() == 1);
      CHECK(left_out[0].item == 0);
      CHECK(left_out[0].type == "ferry::FrameTooLarge");
      CHECK(left_out[0].message.find("together") != std::string::npos);
      const auto st = pool.stats();
      CHECK(st.worker_deaths == 0);
      CHECK(st.retries == 0);
      CHECK(st.workers_spawned == 1);
      CHECK(pool.apply(square, 5) == 25);
    }
    leaks.verify();
  }

  TEST_CASE("a map reports the failing item's index and the other items still run") {
    ferry::Pool pool({.workers = 2});
    try {
      pool.map(ferry::builtin::fail, std::vector<int>{1, 2, 3}, 3);
      FAIL("expected RemoteError");
    } catch (const ferry::RemoteError& e) {
      CHECK(e.info().item == 0);
    }
    CHECK(pool.map(square, std::vector<int>{1, 2, 3}, 2) == std::vector<std::int64_t>{1, 4, 9});
  }

  TEST_CASE("imap_unordered: a failing item does not lose the other items of its chunk") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 2});
      auto it = pool.imap_unordered(fail_on_three, std::views::iota(0, 10), 5);
      auto [values, failures] = drain(it);
      REQUIRE(failures.size() == 1);
      CHECK(failures[0].item == 3);
      CHECK(failures[0].kind == ferry::FailureKind::remote_error);
      CHECK(failures[0].type == "std::invalid_argument");
      CHECK(failures[0].message == "three is refused");
      CHECK(values.size() == 9);
      CHECK_FALSE(values.contains(3));
      for (auto& [i, v] : values)
        CHECK(v == static_cast<std::int64_t>(i));
    }
    leaks.verify();
  }

  TEST_CASE("a chunk whose worker died on every attempt fails each item with its own index") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 1, .max_retries = 0});
      auto it = pool.imap_unordered(ferry::builtin::crash, std::vector<int>{1, 2, 3}, 3);
      auto [values, failures] = drain(it);
      CHECK(values.empty());
      std::set<std::int64_t> items;
      for (auto& f : failures) {
        CHECK(f.kind == ferry::FailureKind::worker_died);
        items.insert(f.item);
      }
      CHECK(failures.size() == 3);
      CHECK(items == std::set<std::int64_t>{0, 1, 2});
      CHECK(pool.apply(square, 4) == 16);
    }
    leaks.verify();
  }

  TEST_CASE("map throws the first failure in input order once every chunk has finished") {
    ferry::Pool pool({.workers = 2});
    try {
      pool.map(fail_on_three, std::views::iota(0, 10), 2);
      FAIL("expected RemoteError");
    } catch (const ferry::RemoteError& e) {
      CHECK(e.info().item == 3);
      CHECK(e.info().message == "three is refused");
    }
    // All five chunks came back (the one holding item 3 as a per-item outcome).
    CHECK(pool.stats().succeeded == 5);
  }

  TEST_CASE("a worker SIGKILLed mid-task: the task is re-run and its result arrives once") {
    ft::LeakCheck leaks;
    {
      auto ev = ferry::Event::create("pool-kill-ev").value();
      ferry::Pool pool({.workers = 2});
      REQUIRE(pool.wait_ready(10s));
      auto f = pool.submit(signal_then_sleep, std::string("pool-kill-ev"), 300);
      REQUIRE(static_cast<bool>(ev.wait_for(10s)));
      // Find the worker that runs it: the one not answering a quick probe is busy, so kill
      // every worker instead; the retry lands on a replacement.
      for (auto& w : pool.stats().workers) {
        if (w.alive) ::kill(w.pid, SIGKILL);
      }
      CHECK(f.get() == 300);
      auto st = pool.stats();
      CHECK(st.retries >= 1);
      CHECK(st.worker_deaths >= 1);
      CHECK(st.succeeded == 1);
      CHECK(pool.apply(square, 5) == 25);
    }
    leaks.verify();
  }

  TEST_CASE("the poison task fails with WorkerDied after its retries while the others complete") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 2, .max_retries = 3});
      auto poison = pool.submit(ferry::builtin::crash, 1);
      std::vector<ferry::Future<std::int64_t>> good;
      for (int i = 0; i < 50; ++i)
        good.push_back(pool.submit(square, i));
      try {
        poison.get();
        FAIL("expected WorkerDied");
      } catch (const ferry::WorkerDied& e) {
        const std::string what = e.what();
        CHECK(what.find("attempt 4/4") != std::string::npos);
        CHECK(what.find("retry 3/3") != std::string::npos);
        CHECK(what.find("SIGKILL") != std::string::npos);
        CHECK(e.info().signal == SIGKILL);
      }
      for (int i = 0; i < 50; ++i)
        CHECK(good[static_cast<std::size_t>(i)].get() == i * i);
      CHECK(pool.stats().worker_deaths == 4);
      CHECK(pool.apply(square, 6) == 36);  // replacements serve the pool
    }
    leaks.verify();
  }

  TEST_CASE("a task past the timeout is killed, retried, and ends as TaskTimeout") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 2, .max_retries = 1, .task_timeout = 200ms});
      auto slow = pool.submit(ferry::builtin::sleep_ms, 10000);
      auto quick = pool.submit(square, 4);
      CHECK(quick.get() == 16);
      CHECK_THROWS_AS(slow.get(), ferry::TaskTimeout);
      CHECK(slow.failure()->attempt == 2);
    }
    leaks.verify();
  }

  TEST_CASE("a SIGSTOPped worker past the task timeout is replaced and the task completes") {
    ft::LeakCheck leaks;
    {
      auto ev = ferry::Event::create("pool-stop-ev").value();
      ferry::Pool pool({.workers = 1, .task_timeout = 1000ms});
      REQUIRE(pool.wait_ready(10s));
      auto f = pool.submit(signal_then_sleep, std::string("pool-stop-ev"), 100);
      REQUIRE(static_cast<bool>(ev.wait_for(10s)));
      ::kill(pool.stats().workers.at(0).pid, SIGSTOP);
      CHECK(f.get() == 100);
      CHECK(pool.stats().retries == 1);
    }
    leaks.verify();
  }

  TEST_CASE("cancel removes a queued task and stops a running one") {
    ft::LeakCheck leaks;
    {
      auto ev = ferry::Event::create("pool-cancel-ev").value();
      ferry::Pool pool({.workers = 1});
      auto running = pool.submit(signal_then_sleep, std::string("pool-cancel-ev"), 10000);
      auto queued = pool.submit(square, 3);
      REQUIRE(static_cast<bool>(ev.wait_for(10s)));
      CHECK(queued.cancel());
      CHECK(running.cancel());
      CHECK_THROWS_AS(running.get(), ferry::Cancelled);
      CHECK_THROWS_AS(queued.get(), ferry::Cancelled);
      CHECK_FALSE(running.cancel());
      CHECK(pool.apply(square, 7) == 49);
      CHECK(pool.stats().worker_deaths == 0);
    }
    leaks.verify();
  }

  TEST_CASE("max_tasks_per_worker recycles workers without stranding queued work") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 2, .max_tasks_per_worker = 3});
      std::vector<ferry::Future<std::int32_t>> fs;
      for (int i = 0; i < 30; ++i)
        fs.push_back(pool.submit(worker_pid, i));
      std::set<std::int32_t> pids;
      for (auto& f : fs)
        pids.insert(f.get());
      CHECK(pids.size() >= 10);
      CHECK(pool.stats().workers_recycled >= 8);
      CHECK(pool.stats().worker_deaths == 0);
    }
    leaks.verify();
  }

  TEST_CASE("try_submit refuses when the in-flight window is full and submit waits") {
    ferry::Pool pool({.workers = 1, .max_in_flight = 2});
    auto a = pool.submit(ferry::builtin::sleep_ms, 200);
    auto b = pool.submit(ferry::builtin::sleep_ms, 1);
    CHECK_FALSE(pool.try_submit(square, 2).has_value());
    auto c = pool.submit(square, 2);  // waits for a slot
    CHECK(c.get() == 4);
    CHECK(a.ready());
  }

  TEST_CASE("the per-worker initializer runs before the first task") {
    ferry::Pool pool({.workers = 2, .initializer = ferry::initializer(set_greeting, "hello")});
    CHECK(pool.apply(greeting, 0) == "hello");
  }

  TEST_CASE("worker output reaches the pool's sink, prefixed with the worker") {
    std::mutex m;
    std::vector<std::string> lines;
    {
      ferry::Pool pool({.workers = 1, .on_output = [&](const ferry::WorkerLine& l) {
                          std::lock_guard lk(m);
                          lines.push_back(std::to_string(l.stream) + ":" + std::string(l.line));
                        }});
      CHECK(pool.apply(echo_text, std::string("hi")) == "hi");
    }
    CHECK(std::find(lines.begin(), lines.end(), "1:echo says hi") != lines.end());
    CHECK(std::find(lines.begin(), lines.end(), "2:echo warns hi") != lines.end());
  }

  TEST_CASE("failure matrix: decoding, encoding and result decoding failures are per task") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 2, .max_retries = 1});
      auto decode_throws = pool.submit(take_hostile, Hostile{1});
      auto decode_dies = pool.submit(take_hostile, Hostile{2});
      auto encode_throws = pool.submit(make_bad, 1);
      auto encode_dies = pool.submit(make_bad, 2);
      auto coordinator_decode = pool.submit(make_bad, 3);
      auto fine = pool.submit(make_bad, 0);
      CHECK_THROWS_AS(decode_throws.get(), ferry::RemoteError);
      CHECK_THROWS_AS(decode_dies.get(), ferry::WorkerDied);
      CHECK_THROWS_AS(encode_throws.get(), ferry::RemoteError);
      CHECK_THROWS_AS(encode_dies.get(), ferry::WorkerDied);
      try {
        coordinator_decode.get();
        FAIL("expected a decode failure");
      } catch (const ferry::RemoteError& e) {
        CHECK(e.info().type == "ferry::DecodeError");
      }
      CHECK(fine.get().mode == 0);
      CHECK(pool.apply(square, 2) == 4);
    }
    leaks.verify();
  }

  TEST_CASE(
      "a worker program without this program's tasks runs the built-in ones, and ours are "
      "Rejected naming the task") {
    ft::LeakCheck leaks;
    {
      // ferry-worker has the built-in tasks only: this test's `add` is not among them.
      ferry::Pool pool({.workers = 1, .worker_program = FERRY_WORKER_EXE});
      CHECK(pool.apply(square, 7) == 49);
      auto f = pool.submit(add, 1, 2);
      try {
        f.get();
        FAIL("expected Rejected");
      } catch (const ferry::Rejected& e) {
        const std::string what = e.what();
        CHECK(what.find("no worker serves task 'add'") != std::string::npos);
        CHECK(what.find("(long, long) -> long") != std::string::npos);
      }
      CHECK(pool.apply(square, 8) == 64);  // the pool goes on
    }
    leaks.verify();
  }

  TEST_CASE("a worker speaking another protocol version is rejected with both versions named") {
    std::mutex m;
    std::vector<std::string> events;
    ferry::PoolOptions o;
    o.workers = 1;
    o.worker_program = ft::self_exe();
    o.worker_args = {"--ferry-test-peer", "old_protocol_worker"};
    o.on_event = [&](std::string_view l) {
      std::lock_guard lk(m);
      events.emplace_back(l);
    };
    ferry::Pool pool(o);
    auto f = pool.submit(square, 2);
    try {
      f.get();
      FAIL("expected Rejected");
    } catch (const ferry::Rejected& e) {
      const std::string what = e.what();
      CHECK(what.find("protocol version mismatch") != std::string::npos);
      CHECK(what.find("99") != std::string::npos);
    }
    std::lock_guard lk(m);
    CHECK(!events.empty());
  }

  TEST_CASE("a protocol 1 worker is rejected, naming versions 1 and 5") {
    static_assert(ferry::kProtocolVersion == 5, "update this test's expected text");
    std::mutex m;
    std::vector<std::string> events;
    ferry::PoolOptions o;
    o.workers = 1;
    o.worker_program = ft::self_exe();
    o.worker_args = {"--ferry-test-peer", "v1_worker"};
    o.on_event = [&](std::string_view l) {
      std::lock_guard lk(m);
      events.emplace_back(l);
    };
    ferry::Pool pool(o);
    auto f = pool.submit(square, 2);
    try {
      f.get();
      FAIL("expected Rejected");
    } catch (const ferry::Rejected& e) {
      const std::string what = e.what();
      CHECK(what.find("protocol version mismatch: worker speaks 1, coordinator 5") !=
            std::string::npos);
    }
    std::lock_guard lk(m);
    REQUIRE(!events.empty());
    CHECK(events.front().find("worker speaks 1, coordinator 5") != std::string::npos);
  }

  TEST_CASE("workers that cannot be started make tasks fail with Rejected, naming why") {
    // A fake launcher (no processes at all) drives the supervisor's failure path.
    struct FailingLauncher : ferry::coordinator::Launcher {
      std::atomic<int> calls{0};
      ferry::Result<std::unique_ptr<ferry::coordinator::Process>> spawn(
          const ferry::coordinator::SpawnSpec&) override {
        ++calls;
        return ferry::Error{ferry::Errc::system_error, "no processes on this fake"};
      }
    };
    auto launcher = std::make_shared<FailingLauncher>();
    ferry::PoolOptions o;
    o.workers = 2;
    o.launcher = launcher;
    ferry::Pool pool(o);
    auto f = pool.submit(square, 3);
    try {
      f.get();
      FAIL("expected Rejected");
    } catch (const ferry::Rejected& e) {
      CHECK(std::string(e.what()).find("no processes on this fake") != std::string::npos);
    }
    CHECK(launcher->calls >= 1);
    CHECK_FALSE(pool.wait_ready(100ms));
  }

  TEST_CASE("shutdown(cancel) fails what is left with Cancelled and leaves nothing behind") {
    ft::LeakCheck leaks;
    std::vector<ferry::Future<std::int64_t>> fs;
    {
      ferry::Pool pool({.workers = 2});
      for (int i = 0; i < 10; ++i)
        fs.push_back(pool.submit(ferry::builtin::sleep_ms, 5000));
      const auto t0 = std::chrono::steady_clock::now();
      pool.shutdown(ferry::ShutdownMode::cancel);
      CHECK(std::chrono::steady_clock::now() - t0 < 3s);
    }
    for (auto& f : fs)
      CHECK_THROWS_AS(f.get(), ferry::Cancelled);
    leaks.verify();
  }

  TEST_CASE("imap_unordered and map_reduce take a const range") {
    ferry::Pool pool({.workers = 1});
    const std::vector<std::int64_t> xs{1, 2, 3};
    std::int64_t sum = 0;
    for (auto& [i, v] : pool.imap_unordered(square, xs))
      sum += v;
    CHECK(sum == 14);
    CHECK(pool.map_reduce(square, xs, std::int64_t{0}, std::plus<>{}) == 14);
  }
}
