// Remote worker processes on one host share what they fetch: several ferry-worker processes
// serving one coordinator over loopback fetch an object once between them (one maps the
// others' /dev/shm copy), get the right values, and leave no ferry.hostcopy-* / hostclaim-*
// file behind after they exit, after the claimer is SIGKILLed mid-fetch, or (with the sweep)
// after every holder is SIGKILLed. A copy a live process holds is never swept.
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <fstream>
#include <map>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "ferry/ferry.hpp"
#include "ferry/shared/object_ref.hpp"
#include "ferry/shared/session.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;

namespace {

using Array = std::vector<std::uint64_t>;
// pid, objects fetched from the coordinator, objects read from a host copy, sum
using Read = std::tuple<std::int32_t, std::uint64_t, std::uint64_t, std::uint64_t>;

Array make_array(std::size_t n, std::uint64_t first) {
  Array a(n);
  std::iota(a.begin(), a.end(), first);
  return a;
}
std::uint64_t sum_of(const Array& a) {
  return std::accumulate(a.begin(), a.end(), std::uint64_t{0});
}

Read host_read(ferry::ObjectRef<Array> ref) {
  const std::uint64_t s = sum_of(ref.get());
  return {static_cast<std::int32_t>(::getpid()), ferry::object_fetches(),
          ferry::object_host_reads(), s};
}

// Reads an object by name with the size a ref claims for it.
std::uint64_t sum_by_name(std::string name, std::uint64_t size) {
  const ferry::ObjectRef<Array> ref(ferry::detail::object_block(name, size));
  return sum_of(ref.get());
}

// /dev/shm host copies and claims of `object` (any coordinator key).
std::vector<std::string> host_files_of(const std::string& object) {
  const std::string tail = "." + object.substr(std::string("ferry.").size());
  std::vector<std::string> out;
  if (DIR* d = ::opendir("/dev/shm")) {
    while (const dirent* e = ::readdir(d)) {
      const std::string_view n = e->d_name;
      if ((n.starts_with("ferry.hostcopy-") || n.starts_with("ferry.hostclaim-")) &&
          n.ends_with(tail)) {
        out.emplace_back(n);
      }
    }
    ::closedir(d);
  }
  return out;
}
std::vector<std::string> with_prefix(const std::vector<std::string>& names, std::string_view p) {
  std::vector<std::string> out;
  for (const auto& n : names)
    if (n.starts_with(p)) out.push_back(n);
  return out;
}

struct Workers {
  std::vector<ft::Child> procs;
  Workers(const std::string& endpoint, int n, std::vector<std::string> env = {}) {
    ft::SpawnOptions so;
    so.env = std::move(env);
    for (int i = 0; i < n; ++i)
      procs.push_back(ft::spawn(ft::self_exe(), {"--ferry-worker", "--connect", endpoint}, so));
  }
};

// Reads `ref` in tasks until every one of `n` worker processes has read it (bounded); the
// last report of each process.
std::map<std::int32_t, Read> read_on_every_worker(ferry::Pool& pool,
                                                  const ferry::ObjectRef<Array>& ref,
                                                  std::size_t n) {
  std::map<std::int32_t, Read> by_pid;
  for (int round = 0; round < 40 && by_pid.size() < n; ++round) {
    std::vector<ferry::Future<Read>> fs;
    for (std::size_t i = 0; i < 3 * n; ++i)
      fs.push_back(pool.submit(host_read, ref));
    for (auto& f : fs) {
      REQUIRE(f.wait_for(60s));
      const Read r = f.get();
      by_pid[std::get<0>(r)] = r;
    }
  }
  return by_pid;
}

// The worker (of `ws`) whose process holds a shared flock on `path` (the claimer: a process
// waiting for the claim only opens it for a moment, without a lock), or -1.
int holder_of(Workers& ws, const std::string& path) {
  struct stat target {};
  if (::stat(path.c_str(), &target) != 0) return -1;
  // "1: FLOCK  ADVISORY  READ  <pid> <major>:<minor>:<inode> 0 EOF"
  std::ifstream locks("/proc/locks");
  for (std::string line; std::getline(locks, line);) {
    std::istringstream in(line);
    std::string n, kind, advisory, mode, dev;
    pid_t pid = 0;
    if (!(in >> n >> kind >> advisory >> mode >> pid >> dev) || kind != "FLOCK") continue;
    if (!dev.ends_with(":" + std::to_string(target.st_ino))) continue;
    for (std::size_t i = 0; i < ws.procs.size(); ++i)
      if (ws.procs[i].pid() == pid) return static_cast<int>(i);
  }
  return -1;
}

// Waits (on inotify, bounded) until a claim of `object` is in /dev/shm and the process of `ws`
// holding it is known; its index, or -1 at the timeout.
int wait_for_claimer(Workers& ws, const std::string& object, std::chrono::milliseconds timeout) {
  const int in = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  REQUIRE(in >= 0);
  REQUIRE(::inotify_add_watch(in, "/dev/shm", IN_CREATE | IN_MOVED_TO) >= 0);
  const auto until = std::chrono::steady_clock::now() + timeout;
  int found = -1;
  while (found < 0) {
    const auto claims = with_prefix(host_files_of(object), "ferry.hostclaim-");
    if (!claims.empty()) found = holder_of(ws, "/dev/shm/" + claims[0]);
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    if (found >= 0 || left.count() <= 0) break;
    // The next file made in /dev/shm (or a moment, if the claim was there already).
    pollfd p{in, POLLIN, 0};
    (void)::poll(&p, 1, claims.empty() ? static_cast<int>(left.count()) : 1);
    char buf[4096];
    while (::read(in, buf, sizeof buf) > 0) {
    }
  }
  ::close(in);
  return found;
}

ferry::PoolOptions listening() {
  ferry::PoolOptions o;
  o.workers = 0;
  o.listen = "tcp://127.0.0.1:0";
  return o;
}

}  // namespace

FERRY_TASK(host_read);
FERRY_TASK(sum_by_name);

TEST_SUITE("coordinator.host_fetch") {
  TEST_CASE("three remote workers on one host fetch an object once between them") {
    ft::LeakCheck leaks;
    std::string object;
    {
      ferry::Pool pool(listening());
      Workers ws(pool.listen_endpoint(), 3);
      REQUIRE(pool.wait_workers(3, 20s));
      const Array a = make_array(1 << 18, 1);
      auto ref = pool.put(a);
      object = ref.name();
      const auto by_pid = read_on_every_worker(pool, ref, 3);
      REQUIRE(by_pid.size() == 3);
      std::uint64_t fetched = 0, mapped = 0;
      for (const auto& [pid, r] : by_pid) {
        CHECK(std::get<3>(r) == sum_of(a));
        fetched += std::get<1>(r);
        mapped += std::get<2>(r);
      }
      CHECK(fetched == 1);  // one process asked the coordinator...
      CHECK(mapped == 2);   // ...the two others mapped its copy
      const auto s = pool.stats();
      CHECK(s.objects_served == 1);
      CHECK(s.object_bytes_served == ref.size());
      // One complete copy, named with the coordinator's session, while the workers cache it.
      const auto files = host_files_of(object);
      REQUIRE(files.size() == 1);
      CHECK(files[0].starts_with("ferry.hostcopy-"));
      CHECK(files[0].find(ferry::SessionId::current().str()) != std::string::npos);
      pool.shutdown(ferry::ShutdownMode::drain);
      for (auto& w : ws.procs)
        ft::expect_exit(w, 0, 20s);
    }
    CHECK(host_files_of(object).empty());  // the last worker to let go removed it
    leaks.verify();
  }

  TEST_CASE("with FERRY_HOST_OBJECTS=0 each worker process fetches for itself") {
    ft::LeakCheck leaks;
    std::string object;
    {
      ferry::Pool pool(listening());
      Workers ws(pool.listen_endpoint(), 2, {"FERRY_HOST_OBJECTS=0"});
      REQUIRE(pool.wait_workers(2, 20s));
      const Array a = make_array(50'000, 7);
      auto ref = pool.put(a);
      object = ref.name();
      const auto by_pid = read_on_every_worker(pool, ref, 2);
      REQUIRE(by_pid.size() == 2);
      for (const auto& [pid, r] : by_pid) {
        CHECK(std::get<1>(r) == 1);
        CHECK(std::get<2>(r) == 0);
        CHECK(std::get<3>(r) == sum_of(a));
      }
      CHECK(pool.stats().objects_served == 2);
      CHECK(host_files_of(object).empty());
      pool.shutdown(ferry::ShutdownMode::drain);
      for (auto& w : ws.procs)
        ft::expect_exit(w, 0, 20s);
    }
    leaks.verify();
  }

  TEST_CASE("an object too large for /dev/shm is not claimed: a clear error, no SIGBUS") {
    ft::LeakCheck leaks;
    std::string object;
    {
      auto o = listening();
      o.max_retries = 0;
      ferry::Pool pool(o);
      Workers ws(pool.listen_endpoint(), 1);
      REQUIRE(pool.wait_workers(1, 20s));
      auto ref = pool.put(make_array(1000, 1));
      object = ref.name();
      // A ref claiming a petabyte: no room for a host copy, so the worker asks for itself,
      // and the coordinator's answer (another size) is the error; nothing is allocated first.
      auto f = pool.submit(sum_by_name, object, std::uint64_t{1} << 50);
      REQUIRE(f.wait_for(30s));
      try {
        (void)f.get();
        FAIL("a ref with a wrong size was read");
      } catch (const ferry::RemoteError& e) {
        CHECK(e.info().type == "ferry::ObjectUnavailable");
        CHECK(std::string(e.what()).find("the ref says") != std::string::npos);
      }
      CHECK(host_files_of(object).empty());
      // The worker is fine, and the right size still shares as usual.
      CHECK(pool.apply(sum_by_name, object, ref.size()) == sum_of(make_array(1000, 1)));
      CHECK(with_prefix(host_files_of(object), "ferry.hostcopy-").size() == 1);
      pool.shutdown(ferry::ShutdownMode::drain);
      ft::expect_exit(ws.procs[0], 0, 20s);
    }
    CHECK(host_files_of(object).empty());
    leaks.verify();
  }

  TEST_CASE("a claimer SIGKILLed mid-fetch: the others take over and nothing is left") {
    ft::LeakCheck leaks;
    std::string object;
    {
      ferry::Pool pool(listening());
      // Small chunks: the fetch takes thousands of round trips, so the kill lands inside it.
      Workers ws(pool.listen_endpoint(), 3, {"FERRY_OBJECT_FETCH_CHUNK=256"});
      REQUIRE(pool.wait_workers(3, 20s));
      // The claimer is stopped before it is killed, so the test knows its fetch had begun and
      // the claim was still incomplete at the kill; if the fetch won the race, a new object
      // tries again.
      int victim = -1;
      std::optional<ferry::ObjectRef<Array>> ref;
      Array a;
      std::vector<ferry::Future<Read>> fs;
      ferry::PoolStats before{};
      for (std::uint64_t attempt = 0; attempt < 5 && victim < 0; ++attempt) {
        before = pool.stats();
        a = make_array(1 << 17, 3 + attempt);
        ref = pool.put(a);
        object = ref->name();
        fs.clear();
        for (int i = 0; i < 6; ++i)
          fs.push_back(pool.submit(host_read, *ref));
        // Wait (bounded) for the claim to appear, then freeze the process holding it.
        const int claimer = wait_for_claimer(ws, object, 30s);
        REQUIRE(claimer >= 0);
        auto& proc = ws.procs[static_cast<std::size_t>(claimer)];
        // Mid-fetch: the coordinator has served it some bytes (checked again once it is frozen).
        const auto started = [&] {
          return pool.stats().object_bytes_served > before.object_bytes_served;
        };
        const auto until = std::chrono::steady_clock::now() + 30s;
        while (!started() && std::chrono::steady_clock::now() < until)
          std::this_thread::yield();
        proc.kill(SIGSTOP);
        if (started() && !with_prefix(host_files_of(object), "ferry.hostclaim-").empty()) {
          victim = claimer;
          proc.kill(SIGKILL);
          REQUIRE(proc.wait_for(20s));
        } else {
          proc.kill(SIGCONT);
          for (auto& f : fs)
            REQUIRE(f.wait_for(60s));
          MESSAGE("attempt ", attempt, ": the fetch finished before the claimer was stopped");
        }
      }
      REQUIRE(victim >= 0);
      for (auto& f : fs) {
        REQUIRE(f.wait_for(90s));  // the killed worker's task is retried elsewhere
        CHECK(std::get<3>(f.get()) == sum_of(a));
      }
      const auto s = pool.stats();
      CHECK(s.worker_deaths == 1);
      // The killed claimer's bytes (some, perhaps all: its last chunk may have been sent before
      // the kill) were lost; one survivor, not each, fetched the whole object again.
      const auto served = s.objects_served - before.objects_served;
      const auto bytes = s.object_bytes_served - before.object_bytes_served;
      CHECK((served == 1 || served == 2));
      CHECK(bytes > ref->size());
      CHECK(bytes <= 2 * ref->size());
      // The killed claim was taken over: one copy, complete.
      const auto files = host_files_of(object);
      CHECK(with_prefix(files, "ferry.hostclaim-").empty());
      CHECK(with_prefix(files, "ferry.hostcopy-").size() == 1);
      pool.shutdown(ferry::ShutdownMode::drain);
      for (std::size_t i = 0; i < ws.procs.size(); ++i)
        if (static_cast<int>(i) != victim) ft::expect_exit(ws.procs[i], 0, 20s);
    }
    (void)ferry::sweep_host_copies();  // whatever a kill at another moment could have left
    CHECK(host_files_of(object).empty());
    leaks.verify();
  }

  TEST_CASE("every holder SIGKILLed: a sweep removes the orphaned copy and spares a held one") {
    ft::LeakCheck leaks;
    std::string first, second;
    int held = -1;
    {
      ferry::Pool pool(listening());
      Workers ws(pool.listen_endpoint(), 2);
      REQUIRE(pool.wait_workers(2, 20s));
      const Array a = make_array(20'000, 1);
      auto ref_a = pool.put(a);
      first = ref_a.name();
      const std::uint64_t size_a = ref_a.size();
      REQUIRE(read_on_every_worker(pool, ref_a, 2).size() == 2);
      const auto copies_a = host_files_of(first);
      REQUIRE(copies_a.size() == 1);
      // This process holds the first copy as a worker would.
      held = ::open(("/dev/shm/" + copies_a[0]).c_str(), O_RDONLY | O_CLOEXEC);
      REQUIRE(held >= 0);
      REQUIRE(::flock(held, LOCK_SH) == 0);
      // Freed, then another value of the same size: a new name, a new copy, the new bytes.
      ref_a = {};
      const Array b = make_array(20'000, 1000);
      auto ref_b = pool.put(b);
      second = ref_b.name();
      CHECK(second != first);
      CHECK(ref_b.size() == size_a);
      for (const auto& [pid, r] : read_on_every_worker(pool, ref_b, 2))
        CHECK(std::get<3>(r) == sum_of(b));
      CHECK(host_files_of(second).size() == 1);
      for (auto& w : ws.procs) {
        w.kill(SIGKILL);
        REQUIRE(w.wait_for(20s));
      }
    }
    // The next remote worker to start on this host sweeps the unheld copy (before it connects:
    // this one never reaches a coordinator) and spares the held one. Whether the unheld copy is
    // still there before it starts is not checked: a remote worker or ferry-coordinator starting
    // in a test beside this one sweeps it just the same.
    {
      auto next = ft::spawn(ft::self_exe(), {"--ferry-worker", "--connect", "tcp://127.0.0.1:1",
                                             "--reconnect-timeout", "1"});
      REQUIRE(next.wait_for(30s));
    }
    CHECK(host_files_of(second).empty());
    CHECK(host_files_of(first).size() == 1);
    ::close(held);  // the last holder gone: now the stale-segment sweep removes it
    // Swept by this call, or by a remote worker or ferry-coordinator starting in a test beside
    // this one (each sweeps unheld copies): only its absence is certain.
    (void)ferry::sweep_stale_shm();
    CHECK(host_files_of(first).empty());
    leaks.verify();
  }
}
