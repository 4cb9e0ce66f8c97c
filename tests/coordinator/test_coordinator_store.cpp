// The object store (Pool::put, ObjectRef<T>) with real worker processes: values put once and
// read by tasks by handle, decoded at most once per worker process, freed with the last ref and
// the last task holding one, and nothing left in /dev/shm after a normal exit, a SIGKILLed
// worker or a SIGKILLed coordinator (once the stale-session sweep ran). Remote workers fetch
// an object over their connection, once per process, in chunks; a freed one is a named error.
#include <dirent.h>
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "ferry/ferry.hpp"
#include "ferry/ipc/factory.hpp"
#include "ferry/shared/messages.hpp"
#include "ferry/shared/object_ref.hpp"
#include "ferry/shared/session.hpp"
#include "ferry/worker/runtime.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;

namespace {

using Array = std::vector<std::uint64_t>;
using Report = std::tuple<std::int32_t, std::uint64_t, std::uint64_t>;  // pid, decodes, sum

Array make_array(std::size_t n) {
  Array a(n);
  std::iota(a.begin(), a.end(), std::uint64_t{1});
  return a;
}

std::uint64_t sum_of(const Array& a, std::size_t begin, std::size_t end) {
  return std::accumulate(a.begin() + static_cast<std::ptrdiff_t>(begin),
                         a.begin() + static_cast<std::ptrdiff_t>(end), std::uint64_t{0});
}

// /dev/shm names that start with `prefix`.
std::vector<std::string> segments_with(const std::string& prefix) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir("/dev/shm")) {
    while (const dirent* e = ::readdir(d)) {
      if (std::string_view(e->d_name).starts_with(prefix)) out.emplace_back(e->d_name);
    }
    ::closedir(d);
  }
  return out;
}
std::vector<std::string> store_segments() {
  return segments_with(ferry::shm_name("obj-"));
}

std::uint64_t sum_slice(ferry::ObjectRef<Array> ref, std::int64_t begin, std::int64_t end) {
  return sum_of(ref.get(), static_cast<std::size_t>(begin), static_cast<std::size_t>(end));
}
// Reads the whole array and says which process did, and how many objects it has decoded.
Report read_and_report(ferry::ObjectRef<Array> ref) {
  const Array& a = ref.get();
  return {static_cast<std::int32_t>(::getpid()), ferry::object_decodes(), sum_of(a, 0, a.size())};
}
std::uint64_t cached_now(int) {
  return ferry::cached_objects();
}
std::uint64_t decodes_after_reading(ferry::ObjectRef<Array> ref) {
  (void)ref.get();
  return ferry::object_decodes();
}
// How many objects this process fetched from its coordinator, and in how many chunks.
std::tuple<std::uint64_t, std::uint64_t> fetches_after_reading(ferry::ObjectRef<Array> ref) {
  (void)ref.get();
  return {ferry::object_fetches(), ferry::object_fetch_chunks()};
}
// Reads an object by name, as a ref would, without holding it alive in the task's arguments.
std::uint64_t sum_by_name(std::string name, std::uint64_t size) {
  const ferry::ObjectRef<Array> ref(ferry::detail::object_block(name, size));
  return sum_of(ref.get(), 0, ref.get().size());
}
// Tasks taking the value, fed by a ref (pool.submit(sum_cref, ref, ...)).
std::uint64_t sum_cref(const Array& a, std::int64_t begin, std::int64_t end) {
  return sum_of(a, static_cast<std::size_t>(begin), static_cast<std::size_t>(end));
}
std::uint64_t sum_value(Array a, std::int64_t scale) {
  a.push_back(0);  // its own copy: changing it touches no one else's
  return sum_of(a, 0, a.size()) * static_cast<std::uint64_t>(scale);
}
// Where the const T& points, in which process, after how many decodes.
std::tuple<std::int32_t, std::uint64_t, std::uint64_t> where_is(const Array& a) {
  return {static_cast<std::int32_t>(::getpid()), reinterpret_cast<std::uintptr_t>(a.data()),
          ferry::object_decodes()};
}
std::int64_t same(std::int64_t v) {
  return v;
}
std::uint64_t die_reading(ferry::ObjectRef<Array> ref) {
  (void)ref.get();
  ::raise(SIGKILL);
  return 0;
}

// Waits (bounded) for a process that became this one's child (the test is a subreaper), and
// reaps it. False if it did not end in time.
bool reap_within(pid_t pid, std::chrono::milliseconds timeout) {
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return ::waitpid(pid, nullptr, WNOHANG) == pid;
  pollfd p{fd, POLLIN, 0};
  const bool ended = ::poll(&p, 1, static_cast<int>(timeout.count())) == 1;
  ::close(fd);
  return ended && ::waitpid(pid, nullptr, 0) == pid;
}

}  // namespace

FERRY_TASK(sum_slice);
FERRY_TASK(read_and_report);
FERRY_TASK(cached_now);
FERRY_TASK(die_reading);
FERRY_TASK(decodes_after_reading);
FERRY_TASK(fetches_after_reading);
FERRY_TASK(sum_by_name);
FERRY_TASK(sum_cref);
FERRY_TASK(sum_value);
FERRY_TASK(where_is);
FERRY_TASK(same);

// A coordinator of its own session: puts an object, has both workers read it, says
// "<session> <object> <worker pid>..." and waits to be killed.
FERRY_TEST_PEER(store_coordinator) {
  ferry::Pool pool({.workers = 2, .transport = ferry::Transport::shm});
  auto ref = pool.put(make_array(1 << 20));
  std::vector<ferry::Future<Report>> fs;
  for (int i = 0; i < 8; ++i)
    fs.push_back(pool.submit(read_and_report, ref));
  for (auto& f : fs)
    (void)f.get();
  std::ostringstream line;
  line << ferry::SessionId::current().str() << ' ' << ref.name();
  for (const auto& w : pool.stats().workers)
    line << ' ' << w.pid;
  std::printf("%s\n", line.str().c_str());
  std::fflush(stdout);
  for (;;)
    ::pause();
}

// A coordinator of its own session with a listen address: says its endpoint, waits for one
// remote worker, has it read a 32 MiB object, says "<session> <object>" and waits to be
// killed.
FERRY_TEST_PEER(fetch_coordinator) {
  ferry::PoolOptions o;
  o.workers = 0;
  o.listen = "tcp://127.0.0.1:0";
  ferry::Pool pool(o);
  std::printf("%s\n", pool.listen_endpoint().c_str());
  std::fflush(stdout);
  if (!pool.wait_workers(1, 30s)) return 3;
  auto ref = pool.put(make_array(4 << 20));
  auto f = pool.submit(read_and_report, ref);
  std::printf("%s %s\n", ferry::SessionId::current().str().c_str(), ref.name().c_str());
  std::fflush(stdout);
  for (;;)
    ::pause();
}

TEST_SUITE("coordinator.store") {
  TEST_CASE("put and get and tasks reading a ref round-trip on pipe and shm and zmq") {
    ft::LeakCheck leaks;
    const Array a = make_array(100'000);
    const auto n = static_cast<std::int64_t>(a.size());
    for (auto t : {ferry::Transport::pipe, ferry::Transport::shm, ferry::Transport::zmq}) {
      CAPTURE(ferry::transport_name(t));
      ferry::Pool pool({.workers = 1, .transport = t});
      auto ref = pool.put(a);
      CHECK(ref.valid());
      CHECK(ref.get() == a);
      CHECK(&ref.get() == &ref.get());  // decoded once, then shared
      CHECK(store_segments().size() == 1);
      CHECK(pool.apply(sum_slice, ref, std::int64_t{0}, n) == sum_of(a, 0, a.size()));
      // Refs in a map's items travel the same way.
      std::vector<std::tuple<ferry::ObjectRef<Array>, std::int64_t, std::int64_t>> items;
      for (std::int64_t b = 0; b < n; b += 10'000)
        items.emplace_back(ref, b, b + 10'000);
      const auto parts = pool.starmap(sum_slice, items, 2);
      REQUIRE(parts.size() == items.size());
      for (std::size_t i = 0; i < parts.size(); ++i)
        CHECK(parts[i] == sum_of(a, i * 10'000, (i + 1) * 10'000));
      const auto s = pool.stats();
      CHECK(s.objects_put == 1);
      CHECK(s.object_bytes_put == ref.size());
      CHECK(s.arg_objects == 0);  // the tasks carried a handle, not the array
      items.clear();
      CHECK(store_segments().size() == 1);
      ref = {};
      CHECK(store_segments().empty());  // the last ref went, no task holds one
    }
    leaks.verify();
  }

  TEST_CASE("many tasks reading one ref decode it at most once per worker process") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 2, .transport = ferry::Transport::shm});
      const Array a = make_array(1 << 20);
      const std::uint64_t total = sum_of(a, 0, a.size());
      auto ref = pool.put(a);
      std::vector<ferry::Future<Report>> fs;
      for (int i = 0; i < 40; ++i)
        fs.push_back(pool.submit(read_and_report, ref));
      std::map<std::int32_t, std::uint64_t> decodes_by_pid;
      for (auto& f : fs) {
        const auto [pid, decodes, sum] = f.get();
        CHECK(sum == total);
        // Each worker decoded only this object, once: every task of it sees 1.
        CHECK(decodes == 1);
        decodes_by_pid[pid] = decodes;
      }
      CHECK(decodes_by_pid.size() <= 2);
      CHECK(pool.stats().objects_put == 1);
      CHECK(pool.stats().arg_objects == 0);
      CHECK(pool.stats().worker_deaths == 0);
      // Freed: the segment goes with the last ref, and each worker drops its decoded copy
      // before its next task.
      ref = {};
      CHECK(store_segments().empty());
      for (int i = 0; i < 8; ++i)
        CHECK(pool.apply(cached_now, i) == 0);
    }
    leaks.verify();
  }

  TEST_CASE("tasks keep their object alive after the last ref and refs outlive the pool") {
    ft::LeakCheck leaks;
    const Array a = make_array(200'000);
    {
      ferry::Pool pool({.workers = 1, .transport = ferry::Transport::shm});
      auto ref = pool.put(a);
      std::vector<ferry::Future<std::uint64_t>> fs;
      for (std::int64_t i = 0; i < 20; ++i)
        fs.push_back(pool.submit(sum_slice, ref, i * 10'000, (i + 1) * 10'000));
      ref = {};  // the queued tasks hold the object now
      for (std::size_t i = 0; i < fs.size(); ++i)
        CHECK(fs[i].get() == sum_of(a, i * 10'000, (i + 1) * 10'000));
      CHECK(store_segments().empty());
    }
    ferry::ObjectRef<Array> kept;
    {
      ferry::Pool pool({.workers = 1, .transport = ferry::Transport::pipe});
      kept = pool.put(a);
      CHECK(pool.apply(sum_slice, kept, std::int64_t{0}, std::int64_t{10}) == sum_of(a, 0, 10));
    }
    CHECK(store_segments().empty());  // the pool removed the name on shutdown...
    CHECK(kept.get() == a);           // ...and the coordinator still reads its mapping
    leaks.verify();
  }

  TEST_CASE("the cache size bound drops an idle object and a later read decodes it again") {
    ft::LeakCheck leaks;
    {
      // The worker inherits a bound of one byte: any second object pushes the first out.
      ::setenv("FERRY_OBJECT_CACHE_BYTES", "1", 1);
      ferry::Pool pool({.workers = 1, .transport = ferry::Transport::shm});
      const bool ready = pool.wait_ready(30s);
      ::unsetenv("FERRY_OBJECT_CACHE_BYTES");
      REQUIRE(ready);
      auto a = pool.put(make_array(1000));
      auto b = pool.put(make_array(2000));
      CHECK(pool.apply(decodes_after_reading, a) == 1);
      CHECK(pool.apply(decodes_after_reading, a) == 1);  // cached: no second decode
      CHECK(pool.apply(decodes_after_reading, b) == 2);
      CHECK(pool.apply(cached_now, 0) == 1);  // a went to make room for b
      CHECK(pool.apply(decodes_after_reading, a) == 3);
    }
    CHECK(store_segments().empty());
    leaks.verify();
  }

  TEST_CASE("a worker killed while reading a ref leaves no segment and the object stays usable") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 1, .transport = ferry::Transport::shm, .max_retries = 0});
      const Array a = make_array(1 << 20);
      auto ref = pool.put(a);
      auto f = pool.submit(die_reading, ref);
      REQUIRE(f.wait_for(60s));
      CHECK_THROWS_AS(f.get(), ferry::WorkerDied);
      CHECK(pool.stats().worker_deaths == 1);
      CHECK(store_segments().size() == 1);  // the ref still holds it
      const auto n = static_cast<std::int64_t>(a.size());
      CHECK(pool.apply(sum_slice, ref, std::int64_t{0}, n) == sum_of(a, 0, a.size()));
      ref = {};
      CHECK(store_segments().empty());
    }
    leaks.verify();
  }

  TEST_CASE("a SIGKILLed coordinator's objects go with the stale-session sweep") {
    ft::LeakCheck leaks;
    {
      // Started without FERRY_SESSION: the peer is a session of its own, as a program is.
      ft::PipeFds out;
      ft::SpawnOptions opt;
      opt.stdout_fd = out.w;
      auto peer = ft::spawn(ft::self_exe(), {"--ferry-test-peer", "store_coordinator"}, opt);
      out.close_w();
      const std::string line = ft::read_line(out.r, 60s);
      REQUIRE_FALSE(line.empty());
      std::istringstream in(line);
      std::string session, object;
      in >> session >> object;
      std::vector<pid_t> workers;
      for (pid_t p; in >> p;)
        workers.push_back(p);
      CHECK(session != ferry::SessionId::current().str());
      CHECK(workers.size() == 2);
      const std::string prefix = "ferry." + session + ".";
      CHECK(object.starts_with(prefix));
      CHECK(segments_with(object).size() == 1);
      peer.kill(SIGKILL);
      REQUIRE(peer.wait_for(20s));
      // Its workers die with it (parent-death signal) and come to this subreaper.
      for (pid_t w : workers)
        CHECK(reap_within(w, 20s));
      // Nobody is left to remove it but a sweep: this call, or that of a ferry-coordinator
      // starting in a test beside this one (each sweeps stale sessions when it starts), so
      // only its absence afterwards is certain.
      (void)ferry::sweep_stale_shm();
      CHECK(segments_with(object).empty());
      CHECK(segments_with(prefix).empty());
    }
    leaks.verify();
  }

  TEST_CASE("remote workers fetch an object from the coordinator once per process") {
    ft::LeakCheck leaks;
    {
      ferry::PoolOptions o;
      o.workers = 0;
      o.listen = "tcp://127.0.0.1:0";
      o.max_retries = 0;
      ferry::Pool pool(o);
      // Two processes of two task threads each: the threads of one process share one fetch.
      // Not the host's: test_coordinator_host_fetch.cpp has the processes share theirs.
      ft::SpawnOptions so;
      so.env = {"FERRY_HOST_OBJECTS=0"};
      std::vector<ft::Child> ws;
      for (int i = 0; i < 2; ++i) {
        ws.push_back(
            ft::spawn(ft::self_exe(),
                      {"--ferry-worker", "--connect", pool.listen_endpoint(), "--slots", "2"}, so));
      }
      REQUIRE(pool.wait_workers(2, 20s));
      const Array a = make_array(200'000);
      const std::uint64_t total = sum_of(a, 0, a.size());
      auto ref = pool.put(a);
      std::vector<ferry::Future<Report>> reads;
      for (int i = 0; i < 40; ++i)
        reads.push_back(pool.submit(read_and_report, ref));
      std::set<std::int32_t> pids;
      for (auto& f : reads) {
        REQUIRE(f.wait_for(20s));
        const auto [pid, decodes, sum] = f.get();
        CHECK(sum == total);
        CHECK(decodes == 1);  // each process decoded this one object once
        pids.insert(pid);
      }
      CHECK(!pids.empty());
      CHECK(pids.size() <= 2);
      for (int i = 0; i < 8; ++i) {
        const auto f = pool.apply(fetches_after_reading, ref);
        CHECK(std::get<0>(f) == 1);  // fetched once by the process, whatever its task count
        CHECK(std::get<1>(f) == 1);  // in one chunk: it is well within the frame limit
      }
      CHECK(pool.apply(sum_slice, ref, std::int64_t{10}, std::int64_t{20}) == sum_of(a, 10, 20));
      CHECK(pool.stats().worker_deaths == 0);
      pool.shutdown(ferry::ShutdownMode::drain);
      for (auto& w : ws)
        ft::expect_exit(w, 0, 20s);
    }
    leaks.verify();
  }

  TEST_CASE("an object larger than a chunk is fetched in chunks over ipc and reads whole") {
    ft::LeakCheck leaks;
    const std::string sock = "/tmp/ferry-test-store-" + std::to_string(::getpid()) + ".sock";
    {
      ferry::PoolOptions o;
      o.workers = 0;
      o.listen = "ipc://" + sock;
      o.max_retries = 0;
      ferry::Pool pool(o);
      ft::SpawnOptions so;
      so.env = {"FERRY_OBJECT_FETCH_CHUNK=4096"};  // what a frame limit of 4 KiB would do
      auto w =
          ft::spawn(ft::self_exe(), {"--ferry-worker", "--connect", pool.listen_endpoint()}, so);
      REQUIRE(pool.wait_workers(1, 20s));
      const Array a = make_array(100'000);
      auto ref = pool.put(a);
      const std::uint64_t chunks = (ref.size() + 4095) / 4096;
      REQUIRE(chunks > 100);
      auto r = pool.submit(read_and_report, ref);
      REQUIRE(r.wait_for(20s));
      CHECK(std::get<2>(r.get()) == sum_of(a, 0, a.size()));
      const auto f = pool.apply(fetches_after_reading, ref);
      CHECK(std::get<0>(f) == 1);
      CHECK(std::get<1>(f) == chunks);
      pool.shutdown(ferry::ShutdownMode::drain);
      ft::expect_exit(w, 0, 20s);
    }
    ::unlink(sock.c_str());
    leaks.verify();
  }

  TEST_CASE("a remote worker reading a freed object fails with ObjectUnavailable naming why") {
    ft::LeakCheck leaks;
    {
      ferry::PoolOptions o;
      o.workers = 0;
      o.listen = "tcp://127.0.0.1:0";
      o.max_retries = 0;
      ferry::Pool pool(o);
      auto w = ft::spawn(ft::self_exe(), {"--ferry-worker", "--connect", pool.listen_endpoint()});
      REQUIRE(pool.wait_workers(1, 20s));
      auto ref = pool.put(make_array(1000));
      const std::string name = ref.name();
      const std::uint64_t size = ref.size();
      ref = {};  // freed: no ref and no task holds it
      CHECK(store_segments().empty());
      auto f = pool.submit(sum_by_name, name, size);
      REQUIRE(f.wait_for(20s));
      try {
        (void)f.get();
        FAIL("a remote worker read a freed object");
      } catch (const ferry::RemoteError& e) {
        CHECK(e.info().type == "ferry::ObjectUnavailable");
        const std::string what = e.what();
        CHECK(what.find("freed by its pool") != std::string::npos);
        CHECK(what.find(name) != std::string::npos);
      }
      // The worker is fine: a live object still reads.
      auto live = pool.put(make_array(10));
      CHECK(pool.apply(sum_slice, live, std::int64_t{0}, std::int64_t{10}) == 55);
      pool.shutdown(ferry::ShutdownMode::drain);
      ft::expect_exit(w, 0, 20s);
    }
    leaks.verify();
  }

  TEST_CASE("a peer that is not an admitted worker is not sent an object's bytes") {
    ft::LeakCheck leaks;
    {
      ferry::PoolOptions o;
      o.workers = 0;
      o.listen = "tcp://127.0.0.1:0";
      ferry::Pool pool(o);
      auto ref = pool.put(make_array(1000));
      auto ch = ferry::ipc::open_channel(pool.listen_endpoint(), ferry::ipc::Role::connect);
      REQUIRE(ch);
      const ferry::msg::ObjectFetch ask{ref.name(), ref.size(), 0, 1 << 20};
      REQUIRE((*ch)->send(ferry::make_frame(ferry::MessageKind::object_fetch, ask, 7)));
      ferry::Frame reply;
      REQUIRE((*ch)->recv_for(reply, 20s));
      CHECK(reply.header.kind == ferry::MessageKind::reject);  // "register again", no data
      CHECK(pool.stats().workers.empty());
    }
    leaks.verify();
  }
  TEST_CASE("a ref feeds a task taking const T& or T, on local and remote workers") {
    ft::LeakCheck leaks;
    const Array a = make_array(50'000);
    const std::uint64_t total = sum_of(a, 0, a.size());
    const auto n = static_cast<std::int64_t>(a.size());
    auto check_pool = [&](ferry::Pool& pool) {
      auto ref = pool.put(a);
      CHECK(pool.apply(sum_cref, ref, std::int64_t{0}, n) == total);
      CHECK(pool.apply(sum_cref, ref, std::int64_t{5}, std::int64_t{9}) == sum_of(a, 5, 9));
      CHECK(pool.apply(sum_value, ref, std::int64_t{3}) == 3 * total);
      // Mixed with a Future: the task waits for it in the pool, then the ref feeds const T&.
      auto begin = pool.submit(same, std::int64_t{100});
      auto f = pool.submit(sum_cref, ref, begin, pool.submit(same, std::int64_t{200}));
      REQUIRE(f.wait_for(20s));
      CHECK(f.get() == sum_of(a, 100, 200));
      // A const T& is the process's one decoded value: the same address each time, one decode.
      std::map<std::int32_t, std::uint64_t> address_by_pid;
      for (int i = 0; i < 12; ++i) {
        const auto [pid, address, decodes] = pool.apply(where_is, ref);
        CHECK(decodes == 1);
        auto [it, fresh] = address_by_pid.emplace(pid, address);
        CHECK(it->second == address);
      }
      CHECK(pool.stats().arg_objects == 0);  // the array travelled as a handle each time
      CHECK(pool.stats().objects_put == 1);
    };
    for (auto t : {ferry::Transport::pipe, ferry::Transport::shm}) {
      CAPTURE(ferry::transport_name(t));
      ferry::Pool pool({.workers = 2, .transport = t});
      check_pool(pool);
    }
    {
      ferry::PoolOptions o;
      o.workers = 0;
      o.listen = "tcp://127.0.0.1:0";
      o.max_retries = 0;
      ferry::Pool pool(o);
      auto w = ft::spawn(ft::self_exe(),
                         {"--ferry-worker", "--connect", pool.listen_endpoint(), "--slots", "2"});
      REQUIRE(pool.wait_workers(1, 20s));
      check_pool(pool);
      pool.shutdown(ferry::ShutdownMode::drain);
      ft::expect_exit(w, 0, 20s);
    }
    CHECK(store_segments().empty());
    leaks.verify();
  }
  TEST_CASE("a remote worker fetching from a coordinator that is SIGKILLed does not hang") {
    ft::LeakCheck leaks;
    {
      ft::PipeFds out;
      ft::SpawnOptions opt;
      opt.stdout_fd = out.w;
      auto peer = ft::spawn(ft::self_exe(), {"--ferry-test-peer", "fetch_coordinator"}, opt);
      out.close_w();
      const std::string endpoint = ft::read_line(out.r, 60s);
      REQUIRE_FALSE(endpoint.empty());
      // Small chunks: the 32 MiB fetch takes many round trips, so the kill lands inside it.
      ft::SpawnOptions wo;
      wo.env = {"FERRY_OBJECT_FETCH_CHUNK=256"};
      auto w = ft::spawn(ft::self_exe(),
                         {"--ferry-worker", "--connect", endpoint, "--reconnect-timeout", "1"}, wo);
      const std::string line = ft::read_line(out.r, 60s);
      REQUIRE_FALSE(line.empty());
      std::istringstream in(line);
      std::string session, object;
      in >> session >> object;
      peer.kill(SIGKILL);
      REQUIRE(peer.wait_for(20s));
      // The fetch ends with the link (heartbeat timeout), then the worker gives up reconnecting.
      ft::expect_exit(w, ferry::worker::kExitLost, 30s);
      // Swept by this call or by a ferry-coordinator starting beside this test (see above).
      (void)ferry::sweep_stale_shm();
      CHECK(segments_with(object).empty());
      CHECK(segments_with("ferry." + session + ".").empty());
    }
    leaks.verify();
  }
}
