// cpu-bound: the same CPU work sequentially, on N threads, on N processes (Python: perf.py
// and perfmp.py). io-bound: socket-bound tasks against a slow local server, sequentially and
// on a pool (Python: flags.py and flags_threadpool.py).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "tour.hpp"

namespace ferry::demos {
namespace {

// ---- cpu-bound

// Primes in [lo, hi) by trial division: pure CPU, no memory traffic to speak of.
std::int64_t primes_between(std::int64_t lo, std::int64_t hi) {
  std::int64_t count = 0;
  for (std::int64_t k = std::max<std::int64_t>(lo, 2); k < hi; ++k) {
    bool prime = k == 2 || k % 2 != 0;
    for (std::int64_t d = 3; prime && d * d <= k; d += 2)
      prime = k % d != 0;
    count += prime ? 1 : 0;
  }
  return count;
}

// ---- io-bound

// A deliberately slow service on loopback: reads one line, waits `delay` (as a remote server
// under load would), answers with twice the number. One thread per connection.
class SlowServer {
 public:
  explicit SlowServer(std::chrono::milliseconds delay) : delay_(delay) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;  // any free port
    socklen_t len = sizeof a;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 128) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0 ||
        ::pipe2(stop_, O_CLOEXEC) != 0) {
      const int e = errno;
      ::close(fd_);
      throw std::runtime_error(std::string("listening on loopback: ") + std::strerror(e));
    }
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~SlowServer() {
    [[maybe_unused]] auto n = ::write(stop_[1], "x", 1);
    acceptor_.join();
    for (auto& t : handlers_)
      t.join();
    ::close(fd_);
    ::close(stop_[0]);
    ::close(stop_[1]);
  }
  SlowServer(const SlowServer&) = delete;
  SlowServer& operator=(const SlowServer&) = delete;
  std::int32_t port() const noexcept { return port_; }

 private:
  void accept_loop() {
    for (;;) {
      pollfd p[2] = {{fd_, POLLIN, 0}, {stop_[0], POLLIN, 0}};
      if (::poll(p, 2, -1) < 0) {
        if (errno == EINTR) continue;
        return;
      }
      if (p[1].revents != 0) return;
      const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      handlers_.emplace_back([this, c] { answer(c); });
    }
  }
  void answer(int c) {
    std::string line;
    char ch = 0;
    while (::recv(c, &ch, 1, 0) == 1 && ch != '\n')
      line.push_back(ch);
    std::this_thread::sleep_for(delay_);
    const std::string reply = std::to_string(2 * std::stoll(line.empty() ? "0" : line)) + "\n";
    [[maybe_unused]] auto n = ::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
    ::close(c);
  }

  std::chrono::milliseconds delay_;
  int fd_ = -1;
  int stop_[2] = {-1, -1};
  std::int32_t port_ = 0;
  std::thread acceptor_;
  std::vector<std::thread> handlers_;  // touched by the acceptor thread only, until joined
};

// One request: connect, send n, block until the answer arrives. Nearly all of its time is
// spent waiting on the socket, not on the CPU.
std::int64_t fetch_double(std::int32_t port, std::int64_t n) {
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  timeval patience{10, 0};
  ::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    const int e = errno;
    ::close(s);
    throw std::runtime_error(std::string("connect: ") + std::strerror(e));
  }
  const std::string req = std::to_string(n) + "\n";
  [[maybe_unused]] auto sent = ::send(s, req.data(), req.size(), MSG_NOSIGNAL);
  std::string reply;
  char buf[64];
  for (;;) {
    const auto k = ::recv(s, buf, sizeof buf, 0);
    if (k <= 0) break;
    reply.append(buf, static_cast<std::size_t>(k));
  }
  ::close(s);
  if (reply.empty()) throw std::runtime_error("no answer from the server");
  return std::stoll(reply);
}

}  // namespace

FERRY_TASK(primes_between);
FERRY_TASK(fetch_double);

int cpu_bound(const Options& opt) {
  Verdict v;
  const unsigned n = requested_workers(opt);
  constexpr std::int64_t kLimit = 2'000'000;
  const std::int64_t pieces = 8 * static_cast<std::int64_t>(n);
  std::vector<std::tuple<std::int64_t, std::int64_t>> chunks;
  for (std::int64_t i = 0; i < pieces; ++i)
    chunks.emplace_back(kLimit * i / pieces, kLimit * (i + 1) / pieces);
  sayf("Counting the primes below %lld by trial division (pure CPU work), cut into %lld pieces",
       static_cast<long long>(kLimit), static_cast<long long>(pieces));
  sayf("handed out to whoever is free: sequentially, on %u threads of this process, and on %u", n,
       n);
  say("worker processes (started before the clock starts).");

  // Sequential.
  auto t0 = Clock::now();
  std::int64_t seq = 0;
  for (const auto& [lo, hi] : chunks)
    seq += primes_between(lo, hi);
  const double seq_ms = ms_since(t0);

  // n threads sharing a counter of the next piece.
  t0 = Clock::now();
  std::atomic<std::size_t> next{0};
  std::atomic<std::int64_t> thr{0};
  {
    std::vector<std::jthread> threads;
    for (unsigned i = 0; i < n; ++i) {
      threads.emplace_back([&] {
        for (std::size_t k = next.fetch_add(1); k < chunks.size(); k = next.fetch_add(1))
          thr += primes_between(std::get<0>(chunks[k]), std::get<1>(chunks[k]));
      });
    }
  }
  const double thr_ms = ms_since(t0);

  // n processes.
  auto popt = lesson_pool(opt);
  popt.workers = n;
  Pool pool(std::move(popt));
  await_workers(pool);
  t0 = Clock::now();
  std::int64_t procs = 0;
  for (auto c : pool.starmap(primes_between, chunks, 1))
    procs += c;
  const double proc_ms = ms_since(t0);

  say("  way                             wall ms   speed-up");
  sayf("  sequential (1 thread)          %8.1f   %7.2fx", seq_ms, 1.0);
  sayf("  %2u threads, 1 process          %8.1f   %7.2fx", n, thr_ms, seq_ms / thr_ms);
  sayf("  %2u worker processes (ferry)    %8.1f   %7.2fx", n, proc_ms, seq_ms / proc_ms);
  const double ideal = static_cast<double>(std::min(n, cpu_count()));
  if (std::max(seq_ms / thr_ms, seq_ms / proc_ms) < 0.75 * ideal) {
    sayf("  (below the %.0fx that %u CPUs allow: other programs are using them right now)", ideal,
         cpu_count());
  }
  say("C++ threads run truly in parallel: nothing like Python's GIL holds them back, so threads");
  say("and processes both scale with the cores. In Python the CPU-bound threads take turns on the");
  say("GIL and run no faster than one thread (often slower); only processes scale there.");
  v.check(seq == thr && seq == procs,
          strf("all three found the same %lld primes", static_cast<long long>(seq)));
  return v.exit_code();
}

int io_bound(const Options& opt) {
  Verdict v;
  constexpr std::int64_t kRequests = 24;
  constexpr auto kDelay = 25ms;
  const unsigned cores = cpu_count();
  auto popt = lesson_pool(opt);
  popt.workers = 4 * requested_workers(opt);
  SlowServer server(kDelay);
  sayf("A small server on 127.0.0.1:%d answers each request after %lld ms. %lld requests, each",
       server.port(), static_cast<long long>(kDelay.count()), static_cast<long long>(kRequests));
  say("a task that connects, asks and waits on its socket: first one after the other, then on a");
  sayf("pool. Waiting costs no CPU, so the pool has 4 workers per --workers (%u) on %u CPUs.",
       requested_workers(opt), cores);

  std::vector<std::tuple<std::int32_t, std::int64_t>> asks;
  for (std::int64_t i = 1; i <= kRequests; ++i)
    asks.emplace_back(server.port(), i);
  auto t0 = Clock::now();
  std::vector<std::int64_t> seq;
  for (const auto& [port, x] : asks)
    seq.push_back(fetch_double(port, x));
  const double seq_ms = ms_since(t0);

  Pool pool(std::move(popt));
  await_workers(pool);
  t0 = Clock::now();
  const auto par = pool.starmap(fetch_double, asks, 1);
  const double par_ms = ms_since(t0);
  const double speedup = seq_ms / par_ms;

  say("  way                              wall ms   speed-up");
  sayf("  one request after the other     %8.1f   %7.2fx", seq_ms, 1.0);
  sayf("  %2u worker processes             %8.1f   %7.2fx", pool.size(), par_ms, speedup);
  if (speedup > static_cast<double>(cores)) {
    sayf("The speed-up (%.1fx) exceeds the %u CPUs: the tasks spend their time waiting on sockets,",
         speedup, cores);
    say("and many waiting processes (or threads: in Python the GIL is released while waiting)");
    say("overlap their waits.");
  } else {
    sayf("This time the speed-up (%.1fx) did not exceed the %u CPUs (a busy machine?); the tasks",
         speedup, cores);
    say("wait on sockets, so with idle CPUs their waits overlap and it usually does.");
  }
  std::int64_t right = 0;
  for (std::int64_t i = 0; i < kRequests; ++i) {
    const auto k = static_cast<std::size_t>(i);
    right += seq[k] == 2 * (i + 1) && par[k] == 2 * (i + 1) ? 1 : 0;
  }
  v.check(right == kRequests,
          strf("every answer was right, both ways: %lld of %lld", static_cast<long long>(right),
               static_cast<long long>(kRequests)));
  return v.exit_code();
}

}  // namespace ferry::demos
