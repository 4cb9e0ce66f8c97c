// Large arguments and results as shared-memory objects between a pool and its local workers:
// exact round trips around the threshold on every local transport, values over the frame
// limit both ways, nothing left in /dev/shm when a reader or a writer is killed, forged
// handles refused, a full /dev/shm named, and remote workers still bound by the frame limit.
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "ferry/ferry.hpp"
#include "ferry/ipc/factory.hpp"
#include "ferry/ipc/shm_object.hpp"
#include "ferry/shared/messages.hpp"
#include "ferry/shared/session.hpp"
#include "raw_worker.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;

namespace {

constexpr std::size_t kThreshold = 64 * 1024;

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i)
    s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
  return s;
}

std::uint64_t fnv(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;
  for (char c : s)
    h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h;
}

// /dev/shm names of this session that start with ferry.<session>.<tag>.
std::vector<std::string> objects_of_session(std::string_view tag) {
  const std::string prefix = ferry::shm_name(tag);
  std::vector<std::string> out;
  if (DIR* d = ::opendir("/dev/shm")) {
    while (const dirent* e = ::readdir(d)) {
      if (std::string_view(e->d_name).starts_with(prefix)) out.emplace_back(e->d_name);
    }
    ::closedir(d);
  }
  return out;
}

std::string echo_big(std::string s) {
  return s;
}
// How many argument objects of the session exist while the task runs (its own, if it has one).
std::int64_t arg_objects_now(std::string) {
  return static_cast<std::int64_t>(objects_of_session("arg-").size());
}
std::uint64_t text_checksum(std::string s) {
  return fnv(s) ^ s.size();
}
std::string make_text(std::int64_t n) {
  return pattern(static_cast<std::size_t>(n));
}
int die_with_arguments(std::string) {
  ::raise(SIGKILL);
  return 0;
}

int peer_fail(const std::string& what) {
  std::fprintf(stderr, "peer: %s\n", what.c_str());
  return 2;
}

// Runs until the test sets `event` (bounded).
int wait_on_event(std::string event) {
  return ferry::Event::open(event).value().wait_for(std::chrono::seconds(60)) ? 1 : 0;
}

}  // namespace

FERRY_TASK(wait_on_event);
FERRY_TASK(echo_big);
FERRY_TASK(arg_objects_now);
FERRY_TASK(text_checksum);
FERRY_TASK(make_text);
FERRY_TASK(die_with_arguments);

// A worker that answers every task with a result "in" the shared-memory object named by its
// argument: a name it did not make (and may not pass).
FERRY_TEST_PEER(forging_worker) {
  if (args.empty()) return 3;
  auto ch =
      ferry::ipc::open_channel(std::getenv("FERRY_WORKER_ENDPOINT"), ferry::ipc::Role::connect);
  if (!ch) return 3;
  if (!ferry::testing::send_hello_and_offer(**ch)) return 3;
  ferry::Frame f;
  if (!(*ch)->recv_for(f, 10s) || f.header.kind != ferry::MessageKind::welcome) return 4;
  for (;;) {
    if (!(*ch)->recv(f)) return 0;  // the pool went
    if (f.header.kind == ferry::MessageKind::shutdown) return 0;
    if (f.header.kind != ferry::MessageKind::task) continue;
    auto t = ferry::msg::decode_task(ferry::FrameView{f.header, f.payload});
    if (!t) return 5;
    const ferry::msg::ObjectHandle forged{args[0], 8};
    if (!(*ch)->send(ferry::msg::make_result_frame(ferry::msg::ResultHeader{t->header.attempt},
                                                   forged, f.header.request_id))) {
      return 0;
    }
  }
}

// In a mount namespace of its own, a 4 MiB /dev/shm: an 8 MiB argument cannot be written as
// an object. The task fails Rejected naming NoSpace and the size; nothing is left.
FERRY_TEST_PEER(objects_full_shm) {
  if (::unshare(CLONE_NEWNS) != 0) return 77;
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return 77;
  if (::mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=1777") != 0) {
    return 77;
  }
  {
    ferry::Pool pool({.workers = 1, .transport = ferry::Transport::pipe});
    const std::string big(std::size_t{8} << 20, 'x');
    auto f = pool.submit(text_checksum, big);
    try {
      (void)f.get();
      return peer_fail("an 8 MiB object was written into a 4 MiB /dev/shm");
    } catch (const ferry::Rejected& e) {
      const std::string what = e.what();
      std::fprintf(stderr, "peer: %s\n", what.c_str());
      for (const std::string& part : {std::string("NoSpace"), std::string("/dev/shm is full"),
                                      std::to_string(big.size() + 8) + " bytes"}) {
        if (what.find(part) == std::string::npos) return peer_fail("no '" + part + "'");
      }
    }
    if (pool.apply(text_checksum, std::string("small")) != text_checksum("small")) {
      return peer_fail("the pool did not go on after NoSpace");
    }
    if (!objects_of_session("").empty()) return peer_fail("a segment was left in /dev/shm");
  }
  return 0;
}

TEST_SUITE("coordinator.objects") {
  TEST_CASE("sizes around the threshold round-trip exactly on pipe, shm and zmq") {
    ft::LeakCheck leaks;
    for (auto t : {ferry::Transport::pipe, ferry::Transport::shm, ferry::Transport::zmq}) {
      CAPTURE(ferry::transport_name(t));
      ferry::Pool pool({.workers = 1, .transport = t, .object_threshold = kThreshold});
      for (int d : {-1, 0, 1}) {
        CAPTURE(d);
        // A one-string tuple (and a string value) encodes as an 8-byte length and the
        // characters: these encode to threshold - 1, threshold and threshold + 1 bytes.
        const std::string s =
            pattern(static_cast<std::size_t>(static_cast<long>(kThreshold) + d - 8));
        CHECK(pool.apply(echo_big, s) == s);
        // Only above the threshold do the arguments travel as an object.
        CHECK(pool.apply(arg_objects_now, s) == (d > 0 ? 1 : 0));
      }
      CHECK(objects_of_session("").size() <= 1);  // at most the zmq socket file
      CHECK(objects_of_session("arg-").empty());
      CHECK(pool.stats().worker_deaths == 0);
    }
    leaks.verify();
  }

  TEST_CASE("arguments and results over the 64 MiB frame limit pass on every local transport") {
    ft::LeakCheck leaks;
    const std::size_t n = 70'000'000;
    const std::string big = pattern(n);
    const auto sum = text_checksum(big);
    for (auto t : {ferry::Transport::pipe, ferry::Transport::shm, ferry::Transport::zmq}) {
      CAPTURE(ferry::transport_name(t));
      ferry::Pool pool({.workers = 1, .transport = t});
      auto arg = pool.submit(text_checksum, big);
      REQUIRE(arg.wait_for(300s));
      CHECK(arg.get() == sum);  // before: Rejected, FrameTooLarge
      auto res = pool.submit(make_text, static_cast<std::int64_t>(n));
      REQUIRE(res.wait_for(300s));
      const std::string got = res.get();  // before: RemoteError, FrameTooLarge
      CHECK(got.size() == n);
      CHECK(got == big);
      CHECK(objects_of_session("arg-").empty());
      CHECK(objects_of_session("res").empty());
    }
    leaks.verify();
  }

  TEST_CASE("a worker killed while it has the arguments mapped leaves no segment") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 1, .transport = ferry::Transport::shm, .max_retries = 1});
      auto f = pool.submit(die_with_arguments, pattern(8 << 20));
      REQUIRE(f.wait_for(300s));
      CHECK_THROWS_AS(f.get(), ferry::WorkerDied);
      CHECK(pool.stats().worker_deaths == 2);  // ran twice on the same object
      // The outcome is final: its object is gone before the caller hears of it.
      CHECK(objects_of_session("arg-").empty());
      CHECK(pool.apply(text_checksum, std::string("after")) == text_checksum("after"));
    }
    leaks.verify();
  }

  TEST_CASE("a worker killed while writing a result object leaves no segment") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 1, .transport = ferry::Transport::shm, .max_retries = 0});
      REQUIRE(pool.wait_ready(20s));
      const pid_t pid = pool.stats().workers.at(0).pid;
      // Told by inotify when the worker creates its result object (the name appears before
      // the first byte is written; writing 768 MiB takes a while longer), the test kills it.
      const int watch = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
      REQUIRE(watch >= 0);
      REQUIRE(::inotify_add_watch(watch, "/dev/shm", IN_CREATE) >= 0);
      auto f = pool.submit(make_text, std::int64_t{768} << 20);
      const std::string res_prefix = ferry::shm_name("res");
      bool seen = false;
      const auto until = std::chrono::steady_clock::now() + 300s;
      while (!seen && std::chrono::steady_clock::now() < until) {
        pollfd p{watch, POLLIN, 0};
        if (::poll(&p, 1, 1000) <= 0) continue;
        alignas(inotify_event) char buf[4096];
        const ssize_t n = ::read(watch, buf, sizeof buf);
        for (ssize_t at = 0; at < n;) {
          const auto* ev = reinterpret_cast<const inotify_event*>(buf + at);
          if (ev->len > 0 && std::string_view(ev->name).starts_with(res_prefix)) seen = true;
          at += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
        }
      }
      ::close(watch);
      REQUIRE(seen);
      ::kill(pid, SIGKILL);
      REQUIRE(f.wait_for(300s));
      try {
        (void)f.get();
        MESSAGE("the result was complete before the kill landed");
      } catch (const ferry::WorkerDied&) {
      }
      // Once the pool has seen the worker go (the replacement answers), its objects are gone.
      CHECK(pool.apply(text_checksum, std::string("x")) == text_checksum("x"));
      CHECK(objects_of_session("res").empty());
    }
    leaks.verify();
  }

  TEST_CASE("a forged result handle from a worker is refused as BadHandle, touching nothing") {
    ft::LeakCheck leaks;
    {
      // A decoy this process made: the forging worker names it as its result.
      const std::string decoy_name = ferry::ipc::new_object_name("decoy");
      const std::string text = "12345678";
      auto decoy = ferry::ipc::SharedObject::create(
          decoy_name, ferry::ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), 8));
      REQUIRE(decoy);
      ft::Events ev;
      ferry::PoolOptions o;
      o.workers = 1;
      o.max_retries = 0;
      o.worker_program = ft::self_exe();
      o.worker_args = {"--ferry-test-peer", "forging_worker", decoy_name};
      o.on_event = ev.sink();
      ferry::Pool pool(o);
      auto f = pool.submit(echo_big, std::string("hello"));
      REQUIRE(f.wait_for(30s));
      try {
        (void)f.get();
        FAIL("a forged handle was accepted");
      } catch (const ferry::RemoteError& e) {
        CHECK(e.info().type == "ferry::BadHandle");
        CHECK(std::string(e.what()).find(decoy_name) != std::string::npos);
      }
      CHECK(ev.has("not a name this worker may create"));
      CHECK(ferry::ipc::SharedObject::open(decoy_name, 8).has_value());  // not unlinked
    }
    leaks.verify();
  }

  TEST_CASE("a full /dev/shm fails the task Rejected, naming NoSpace and the size") {
    ft::LeakCheck leaks;
    {
      auto peer = ft::spawn_peer("objects_full_shm");
      auto ex = peer.wait_for(300s);
      REQUIRE(ex);
      if (ex->code == 77) {
        MESSAGE("skipped: cannot mount a private tmpfs on /dev/shm here (needs CAP_SYS_ADMIN)");
      } else {
        CHECK(ex->signal == 0);
        CHECK(ex->code == 0);
      }
    }
    leaks.verify();
  }

  // In a pool with local workers a large argument is an object, and the scheduler may give
  // the task to a remote worker, where the pool then refuses to send it: it must leave that
  // worker's queue too. It used to keep its place there for good (with one place, every later
  // task waited).
  TEST_CASE("a task too large for a remote worker does not keep a place in its queue") {
    ft::LeakCheck leaks;
    {
      ferry::PoolOptions o;
      o.workers = 1;
      o.listen = "tcp://127.0.0.1:0";
      o.prefetch = 1;
      ferry::Pool pool(o);
      // ferry-worker serves the built-in tasks only: wait_on_event runs on the local worker.
      auto w = ft::spawn(FERRY_WORKER_EXE, {"--connect", pool.listen_endpoint(), "--slots", "1"});
      REQUIRE(pool.wait_workers(2, 20s));
      auto go = ferry::Event::create("objects-remote-place").value();
      auto blocker = pool.submit(wait_on_event, std::string("objects-remote-place"));
      // The local worker is busy with the blocker (and takes nothing more, prefetch 1): the
      // large task goes to the remote one and is refused there.
      auto big = pool.submit(ferry::builtin::repeat, std::string(70'000'000, 'x'), 1);
      REQUIRE(big.wait_for(20s));
      CHECK_THROWS_AS((void)big.get(), ferry::Rejected);
      auto small = pool.submit(ferry::builtin::repeat, std::string("ab"), 2);
      const bool ran = small.wait_for(20s);
      go.set();
      REQUIRE(ran);
      CHECK(small.get() == "abab");
      CHECK(blocker.get() == 1);
      pool.shutdown(ferry::ShutdownMode::drain);
      ft::expect_exit(w, 0, 20s);
    }
    leaks.verify();
  }

  TEST_CASE("remote workers keep the frame limit: an argument over it is Rejected") {
    ft::LeakCheck leaks;
    {
      ft::Events ev;
      ferry::PoolOptions o;
      o.workers = 0;
      o.listen = "tcp://127.0.0.1:0";
      o.on_event = ev.sink();
      ferry::Pool pool(o);
      auto w = ft::spawn(FERRY_WORKER_EXE, {"--connect", pool.listen_endpoint()});
      REQUIRE(pool.wait_workers(1, 20s));
      auto big = pool.submit(ferry::builtin::repeat, std::string(70'000'000, 'x'), 1);
      REQUIRE(big.wait_for(20s));
      try {
        (void)big.get();
        FAIL("expected Rejected");
      } catch (const ferry::Rejected& e) {
        CHECK(std::string(e.what()).find("FrameTooLarge") != std::string::npos);
      }
      // Above the object threshold but within a frame: the bytes go in the frame.
      const std::string two_mib(2 << 20, 'y');
      CHECK(pool.apply(ferry::builtin::repeat, two_mib, 1) == two_mib);
      CHECK(objects_of_session("arg-").empty());
      pool.shutdown(ferry::ShutdownMode::drain);
      ft::expect_exit(w, 0, 20s);
    }
    leaks.verify();
  }
}
