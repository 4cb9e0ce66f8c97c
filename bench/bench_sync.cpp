#include "bench_sync.hpp"

#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>

#include "ferry/ipc/sync.hpp"
#include "ferry/shared/session.hpp"

extern char** environ;

namespace ferry::bench {
namespace {

namespace bip = boost::interprocess;
using BenchClock = std::chrono::steady_clock;

// The workload of both locks: take, bump a shared counter, release.
struct FerryTarget {
  ipc::Lock lock;
  ipc::Value<std::int64_t> counter;  // its own lock is unused: the bench's Lock guards it

  void op() {
    (void)lock.acquire();
    ++*counter.raw();
    (void)lock.release();
  }
  std::int64_t count() const { return *counter.raw(); }
};

struct BoostShared {
  bip::interprocess_mutex m;
  std::int64_t counter = 0;
};

// A Boost.Interprocess segment holding the mutex; the creator removes it.
class BoostTarget {
 public:
  static std::unique_ptr<BoostTarget> create(const std::string& object) {
    auto t = std::unique_ptr<BoostTarget>(new BoostTarget(object, true));
    t->shared_ = new (t->region_.get_address()) BoostShared{};
    return t;
  }
  static std::unique_ptr<BoostTarget> open(const std::string& object) {
    auto t = std::unique_ptr<BoostTarget>(new BoostTarget(object, false));
    t->shared_ = static_cast<BoostShared*>(t->region_.get_address());
    return t;
  }
  ~BoostTarget() {
    if (creator_) {
      shared_->~BoostShared();
      bip::shared_memory_object::remove(object_.c_str());
    }
  }
  BoostTarget(const BoostTarget&) = delete;
  BoostTarget& operator=(const BoostTarget&) = delete;

  void op() {
    shared_->m.lock();
    ++shared_->counter;
    shared_->m.unlock();
  }
  std::int64_t count() const { return shared_->counter; }

 private:
  BoostTarget(const std::string& object, bool create)
      : object_(object),
        shm_(create ? bip::shared_memory_object(bip::create_only, object.c_str(), bip::read_write)
                    : bip::shared_memory_object(bip::open_only, object.c_str(), bip::read_write)),
        creator_(create) {
    if (create) shm_.truncate(static_cast<bip::offset_t>(sizeof(BoostShared)));
    region_ = bip::mapped_region(shm_, bip::read_write);
  }
  std::string object_;
  bip::shared_memory_object shm_;
  bip::mapped_region region_;
  BoostShared* shared_ = nullptr;
  bool creator_;
};

template <class Target>
double uncontended_rate(Target& t, std::int64_t n) {
  const auto t0 = BenchClock::now();
  for (std::int64_t i = 0; i < n; ++i)
    t.op();
  const double s = std::chrono::duration<double>(BenchClock::now() - t0).count();
  return static_cast<double>(n) / s;
}

pid_t spawn_self(const std::vector<std::string>& args) {
  std::vector<std::string> a{"/proc/self/exe", kSyncBenchPeerArg};
  a.insert(a.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : a)
    argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), environ);
  if (rc != 0) throw std::runtime_error(std::string("posix_spawn: ") + std::strerror(rc));
  return pid;
}

int reap(pid_t pid) {
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// Two processes (this one and a peer) each do n ops at once; ops/s over both.
template <class Target>
double contended_rate(Target& t, const std::string& kind, const std::string& object,
                      const std::string& counter_object, std::int64_t n) {
  static int run = 0;
  const std::string tag = "bench-sync-" + std::to_string(::getpid()) + "-" + std::to_string(++run);
  auto ready = ipc::Event::create(tag + "-ready");
  auto go = ipc::Event::create(tag + "-go");
  if (!ready || !go) throw std::runtime_error("bench_sync: cannot create start events");
  const pid_t peer = spawn_self(
      {kind, object, counter_object, ready->shm_object(), go->shm_object(), std::to_string(n)});
  if (!ready->wait(ipc::Deadline::after(std::chrono::seconds(30)))) {
    ::kill(peer, SIGKILL);
    reap(peer);
    throw std::runtime_error("bench_sync: peer did not start");
  }
  const std::int64_t before = t.count();
  const auto t0 = BenchClock::now();
  go->set();
  for (std::int64_t i = 0; i < n; ++i)
    t.op();
  const int rc = reap(peer);
  const double s = std::chrono::duration<double>(BenchClock::now() - t0).count();
  if (rc != 0) throw std::runtime_error("bench_sync: peer failed");
  if (t.count() - before != 2 * n) throw std::runtime_error("bench_sync: lost updates");
  return static_cast<double>(2 * n) / s;
}

}  // namespace

void run_sync_bench(bool quick, std::vector<SyncBenchResult>& out) {
  const std::int64_t n_solo = quick ? 300000 : 5000000;
  const std::int64_t n_pair = quick ? 100000 : 1000000;
  const std::string tag = "bench-sync-" + std::to_string(::getpid());

  auto lock = ipc::Lock::create(tag + "-lock");
  auto counter = ipc::Value<std::int64_t>::create(tag + "-counter", 0);
  if (!lock || !counter) throw std::runtime_error("bench_sync: cannot create the ferry Lock");
  FerryTarget ferry_target{std::move(*lock), std::move(*counter)};
  const std::string boost_object = shm_name(tag + "-boost");
  auto boost_target = BoostTarget::create(boost_object);

  out.push_back(
      {"sync.lock.uncontended_ops_per_s", uncontended_rate(ferry_target, n_solo), "ops/s"});
  out.push_back({"baseline.boost-ipc-mutex.uncontended_ops_per_s",
                 uncontended_rate(*boost_target, n_solo), "ops/s"});
  out.push_back({"sync.lock.contended_ops_per_s",
                 contended_rate(ferry_target, "ferry", ferry_target.lock.shm_object(),
                                ferry_target.counter.shm_object(), n_pair),
                 "ops/s"});
  out.push_back({"baseline.boost-ipc-mutex.contended_ops_per_s",
                 contended_rate(*boost_target, "boost", boost_object, "-", n_pair), "ops/s"});
}

std::vector<SyncBenchResult> run_sync_bench(bool quick) {
  std::vector<SyncBenchResult> out;
  run_sync_bench(quick, out);
  return out;
}

// argv: exe kSyncBenchPeerArg kind lock-object counter-object ready-object go-object n
int run_sync_bench_peer(int argc, char** argv) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the bench
  if (argc != 8) {
    std::fprintf(stderr, "%s: bad arguments\n", kSyncBenchPeerArg);
    return 2;
  }
  const std::string kind = argv[2];
  const std::int64_t n = std::stoll(argv[7]);
  auto ready = ipc::Event::open_object(argv[5]);
  auto go = ipc::Event::open_object(argv[6]);
  if (!ready || !go) return 3;
  try {
    auto run = [&](auto& target) {
      ready->set();
      if (!go->wait(ipc::Deadline::after(std::chrono::seconds(30)))) return 4;
      for (std::int64_t i = 0; i < n; ++i)
        target.op();
      return 0;
    };
    if (kind == "ferry") {
      auto lock = ipc::Lock::open_object(argv[3]);
      auto counter = ipc::Value<std::int64_t>::open_object(argv[4]);
      if (!lock || !counter) return 5;
      FerryTarget t{std::move(*lock), std::move(*counter)};
      return run(t);
    }
    if (kind == "boost") {
      auto t = BoostTarget::open(argv[3]);
      return run(*t);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", kSyncBenchPeerArg, e.what());
    return 6;
  }
  return 2;
}

}  // namespace ferry::bench
