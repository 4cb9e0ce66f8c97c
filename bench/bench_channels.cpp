// `ferry-bench channels`: ping-pong round trip (p50/p99) and one-way streaming (msgs/s, GB/s)
// at 64 B, 1 KiB and 1 MiB for each ferry transport, and the same workload on raw pipes,
// raw libzmq (REQ/REP, PUSH/PULL), Boost.Interprocess message_queue and, when mpirun is there,
// Open MPI's shared-memory transport (ferry-bench-mpi-peer) in the same run.
// (bench/ is the one place outside ipc/ that uses libzmq and Boost.Interprocess directly:
// the baselines must not go through ferry.)
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <zmq.hpp>

#include "ferry/ipc/factory.hpp"
#include "ferry/ipc/pipe_channel.hpp"
#include "ferry/shared/session.hpp"
#include "harness.hpp"

namespace ferry::bench {

namespace {

namespace bip = boost::interprocess;

struct Workload {
  std::size_t bytes;
  int rtt_iters;
  int stream_count;
};

// FERRY_BENCH_CHANNEL_DIVISOR=D divides every count by D: the same code paths in a fraction
// of the time, for the tests on a busy machine (figures from it are not worth quoting).
int count_divisor() {
  const char* env = std::getenv("FERRY_BENCH_CHANNEL_DIVISOR");
  const int d = env != nullptr ? std::atoi(env) : 1;
  return d > 1 ? d : 1;
}

std::vector<Workload> workloads(bool quick) {
  std::vector<Workload> w =
      quick ? std::vector<Workload>{{64, 4000, 200000}, {1024, 4000, 100000}, {1 << 20, 100, 300}}
            : std::vector<Workload>{
                  {64, 20000, 1000000}, {1024, 20000, 500000}, {1 << 20, 500, 2000}};
  const int d = count_divisor();
  for (auto& x : w) {
    x.rtt_iters = std::max(10, x.rtt_iters / d);
    x.stream_count = std::max(10, x.stream_count / d);
  }
  return w;
}

int reps(bool quick) {
  return quick ? 3 : 5;
}

struct Figures {
  std::vector<double> p50, p99, msgs, gbs;
  void add_rtt(std::vector<double> us) {
    p50.push_back(percentile(us, 50));
    p99.push_back(percentile(std::move(us), 99));
  }
  void add_stream(std::size_t count, std::size_t bytes, double secs) {
    msgs.push_back(static_cast<double>(count) / secs);
    gbs.push_back(static_cast<double>(count * bytes) / secs / 1e9);
  }
  void report(Report& r, const std::string& prefix, std::size_t bytes) const {
    const auto sfx = "." + std::to_string(bytes);
    r.add(prefix + ".rtt_p50_us" + sfx, median(p50), "us");
    r.add(prefix + ".rtt_p99_us" + sfx, median(p99), "us");
    r.add(prefix + ".msgs_per_s" + sfx, median(msgs), "msg/s");
    r.add(prefix + ".gb_per_s" + sfx, median(gbs), "GB/s");
  }
};

// Ack byte over a pipe for the one-way baselines: the peer writes it when all arrived.
struct AckPipe {
  int fds[2] = {-1, -1};
  AckPipe() {
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
  }
  ~AckPipe() {
    for (int fd : fds) {
      if (fd >= 0) ::close(fd);
    }
  }
  void close_write() {
    ::close(fds[1]);
    fds[1] = -1;
  }
  void wait() const {
    char c;
    while (::read(fds[0], &c, 1) < 0 && errno == EINTR) {
    }
  }
};

void write_all(int fd, const void* p, std::size_t n) {
  const auto* c = static_cast<const char*>(p);
  while (n > 0) {
    const auto w = ::write(fd, c, n);
    if (w <= 0) {
      if (w < 0 && errno == EINTR) continue;
      throw std::runtime_error("write");
    }
    c += w;
    n -= static_cast<std::size_t>(w);
  }
}
bool read_all(int fd, void* p, std::size_t n) {
  auto* c = static_cast<char*>(p);
  while (n > 0) {
    const auto r = ::read(fd, c, n);
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      return false;
    }
    c += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

// ---- ferry channels ---------------------------------------------------------------------
// flags = 1 asks the peer to echo the frame; flags = 0 frames are consumed silently.

Figures measure_channel(ipc::Channel& ch, const Workload& w, int repeats) {
  Figures fig;
  Frame f;
  f.header.kind = MessageKind::data;
  f.payload.assign(w.bytes, 0x5a);
  Frame back;
  for (int rep = 0; rep < repeats; ++rep) {
    f.header.flags = 1;
    std::vector<double> us;
    us.reserve(static_cast<std::size_t>(w.rtt_iters));
    for (int i = -w.rtt_iters / 10; i < w.rtt_iters; ++i) {  // first 10% warm up
      const auto t0 = Clock::now();
      if (!ch.send(f) || !ch.recv(back)) throw std::runtime_error("channel rtt failed");
      if (i >= 0) us.push_back(seconds_since(t0) * 1e6);
    }
    fig.add_rtt(std::move(us));
    const auto t0 = Clock::now();
    f.header.flags = 0;
    for (int i = 0; i < w.stream_count - 1; ++i) {
      if (!ch.send(f)) throw std::runtime_error("channel stream failed");
    }
    f.header.flags = 1;
    if (!ch.send(f) || !ch.recv(back)) throw std::runtime_error("channel stream ack failed");
    fig.add_stream(static_cast<std::size_t>(w.stream_count), w.bytes, seconds_since(t0));
  }
  return fig;
}

void bench_ferry_transport(const Config& cfg, Report& report, const std::string& name,
                           const std::string& bind_endpoint) {
  ipc::ChannelPtr ch;
  Peer peer;
  if (name == "pipe") {
    auto pair = ipc::PipeChannel::make_pair();
    if (!pair) throw Exception(pair.error());
    auto& [mine, ends] = *pair;
    peer = spawn_peer(cfg, {"channel", "pipe:3,4"}, {{ends.read_fd, 3}, {ends.write_fd, 4}});
    ends.close();
    ch = std::move(mine);
  } else {
    auto opened = ipc::open_channel(bind_endpoint, ipc::Role::bind);
    if (!opened) {
      std::fprintf(stderr, "ferry-bench: %s skipped: %s\n", name.c_str(),
                   opened.error().message().c_str());
      return;
    }
    ch = std::move(*opened);
    peer = spawn_peer(cfg, {"channel", ch->endpoint()});
  }
  for (const auto& w : workloads(cfg.quick)) {
    measure_channel(*ch, w, reps(cfg.quick)).report(report, "channel." + name, w.bytes);
  }
  ch.reset();  // EOF / close ends the peer
  peer.wait();
}

// ---- raw pipe ----------------------------------------------------------------------------

void bench_raw_pipe(const Config& cfg, Report& report) {
  for (const auto& w : workloads(cfg.quick)) {
    Figures fig;
    for (int rep = 0; rep < reps(cfg.quick); ++rep) {
      int to_peer[2], from_peer[2];
      if (::pipe2(to_peer, O_CLOEXEC) != 0 || ::pipe2(from_peer, O_CLOEXEC) != 0) return;
      const int warm = w.rtt_iters / 10;
      auto peer = spawn_peer(cfg,
                             {"rawpipe", std::to_string(w.bytes),
                              std::to_string(warm + w.rtt_iters), std::to_string(w.stream_count)},
                             {{to_peer[0], 3}, {from_peer[1], 4}});
      ::close(to_peer[0]);
      ::close(from_peer[1]);
      std::vector<char> buf(w.bytes, 'x');
      std::vector<double> us;
      for (int i = -warm; i < w.rtt_iters; ++i) {
        const auto t0 = Clock::now();
        write_all(to_peer[1], buf.data(), buf.size());
        if (!read_all(from_peer[0], buf.data(), buf.size())) throw std::runtime_error("raw pipe");
        if (i >= 0) us.push_back(seconds_since(t0) * 1e6);
      }
      fig.add_rtt(std::move(us));
      const auto t0 = Clock::now();
      for (int i = 0; i < w.stream_count; ++i)
        write_all(to_peer[1], buf.data(), buf.size());
      char ack;
      read_all(from_peer[0], &ack, 1);
      fig.add_stream(static_cast<std::size_t>(w.stream_count), w.bytes, seconds_since(t0));
      ::close(to_peer[1]);
      ::close(from_peer[0]);
      peer.wait();
    }
    fig.report(report, "baseline.raw-pipe", w.bytes);
  }
}

// ---- raw libzmq: REQ/REP for the round trip, PUSH/PULL for streaming ----------------------

void bench_raw_zmq(const Config& cfg, Report& report, const std::string& name,
                   const std::string& ep_rtt, const std::string& ep_stream) {
  zmq::context_t ctx;
  for (const auto& w : workloads(cfg.quick)) {
    Figures fig;
    for (int rep = 0; rep < reps(cfg.quick); ++rep) {
      const int warm = w.rtt_iters / 10;
      zmq::socket_t req(ctx, zmq::socket_type::req);
      zmq::socket_t push(ctx, zmq::socket_type::push);
      req.set(zmq::sockopt::linger, 0);
      push.set(zmq::sockopt::linger, 0);
      req.bind(ep_rtt);
      push.bind(ep_stream);
      AckPipe ack;
      auto peer = spawn_peer(cfg,
                             {"rawzmq", req.get(zmq::sockopt::last_endpoint),
                              push.get(zmq::sockopt::last_endpoint), std::to_string(w.bytes),
                              std::to_string(warm + w.rtt_iters), std::to_string(w.stream_count)},
                             {{ack.fds[1], 4}});
      ack.close_write();
      zmq::message_t reply;
      std::vector<char> buf(w.bytes, 'x');
      std::vector<double> us;
      for (int i = -warm; i < w.rtt_iters; ++i) {
        const auto t0 = Clock::now();
        req.send(zmq::buffer(buf), zmq::send_flags::none);
        if (!req.recv(reply)) throw std::runtime_error("raw zmq rtt");
        if (i >= 0) us.push_back(seconds_since(t0) * 1e6);
      }
      fig.add_rtt(std::move(us));
      const auto t0 = Clock::now();
      for (int i = 0; i < w.stream_count; ++i)
        push.send(zmq::buffer(buf), zmq::send_flags::none);
      ack.wait();
      fig.add_stream(static_cast<std::size_t>(w.stream_count), w.bytes, seconds_since(t0));
      peer.wait();
    }
    fig.report(report, "baseline." + name, w.bytes);
  }
  // libzmq leaves a bound ipc:// path behind; the bench leaves nothing.
  for (const auto& ep : {ep_rtt, ep_stream}) {
    if (ep.rfind("ipc://", 0) == 0) ::unlink(ep.substr(6).c_str());
  }
}

}  // namespace

std::vector<double> raw_zmq_reqrep_us(const Config& cfg, const std::string& endpoint,
                                      std::size_t bytes, int iters) {
  zmq::context_t ctx;
  zmq::socket_t req(ctx, zmq::socket_type::req);
  zmq::socket_t push(ctx, zmq::socket_type::push);  // the peer connects one; nothing streams
  req.set(zmq::sockopt::linger, 0);
  push.set(zmq::sockopt::linger, 0);
  req.bind(endpoint);
  push.bind(endpoint);
  const int warm = iters / 10;
  AckPipe ack;
  auto peer = spawn_peer(
      cfg,
      {"rawzmq", req.get(zmq::sockopt::last_endpoint), push.get(zmq::sockopt::last_endpoint),
       std::to_string(bytes), std::to_string(warm + iters), "0"},
      {{ack.fds[1], 4}});
  ack.close_write();
  zmq::message_t reply;
  std::vector<char> buf(bytes, 'x');
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(iters));
  for (int i = -warm; i < iters; ++i) {
    const auto t0 = Clock::now();
    req.send(zmq::buffer(buf), zmq::send_flags::none);
    if (!req.recv(reply)) throw std::runtime_error("raw zmq rtt");
    if (i >= 0) us.push_back(seconds_since(t0) * 1e6);
  }
  ack.wait();
  peer.wait();
  return us;
}

namespace {

// ---- Boost.Interprocess message_queue ------------------------------------------------------

void bench_boost_mq(const Config& cfg, Report& report) {
  for (const auto& w : workloads(cfg.quick)) {
    Figures fig;
    for (int rep = 0; rep < reps(cfg.quick); ++rep) {
      const int warm = w.rtt_iters / 10;
      const std::string ping = ferry::shm_name("bench-mq-ping");
      const std::string pong = ferry::shm_name("bench-mq-pong");
      bip::message_queue::remove(ping.c_str());
      bip::message_queue::remove(pong.c_str());
      const std::size_t depth = w.bytes >= (1u << 20) ? 8 : 256;
      bip::message_queue q_ping(bip::create_only, ping.c_str(), depth, w.bytes);
      bip::message_queue q_pong(bip::create_only, pong.c_str(), depth, w.bytes);
      auto peer =
          spawn_peer(cfg, {"boostmq", ping, pong, std::to_string(w.bytes),
                           std::to_string(warm + w.rtt_iters), std::to_string(w.stream_count)});
      std::vector<char> buf(w.bytes, 'x');
      std::vector<double> us;
      std::size_t got = 0;
      unsigned prio = 0;
      for (int i = -warm; i < w.rtt_iters; ++i) {
        const auto t0 = Clock::now();
        q_ping.send(buf.data(), buf.size(), 0);
        q_pong.receive(buf.data(), buf.size(), got, prio);
        if (i >= 0) us.push_back(seconds_since(t0) * 1e6);
      }
      fig.add_rtt(std::move(us));
      const auto t0 = Clock::now();
      for (int i = 0; i < w.stream_count; ++i)
        q_ping.send(buf.data(), buf.size(), 0);
      q_pong.receive(buf.data(), buf.size(), got, prio);
      fig.add_stream(static_cast<std::size_t>(w.stream_count), w.bytes, seconds_since(t0));
      peer.wait();
      bip::message_queue::remove(ping.c_str());
      bip::message_queue::remove(pong.c_str());
    }
    fig.report(report, "baseline.boost-mq", w.bytes);
  }
}

// ---- Open MPI (bench/mpi_peer.cpp under mpirun) ---------------------------------------------

// Installed: beside ferry-bench. Build tree: the path CMake compiled in (only when it found
// MPI). "" when neither exists.
std::string find_mpi_peer(const Config& cfg) {
  std::vector<std::string> candidates{
      (std::filesystem::path(cfg.self).parent_path() / "ferry-bench-mpi-peer").string()};
#ifdef FERRY_BENCH_MPI_PEER_EXE
  candidates.emplace_back(FERRY_BENCH_MPI_PEER_EXE);
#endif
  for (const auto& c : candidates) {
    if (::access(c.c_str(), X_OK) == 0) return c;
  }
  return {};
}

void bench_mpi(const Config& cfg, Report& report) {
  const std::string mpirun = find_on_path("mpirun");
  if (mpirun.empty()) {
    std::fprintf(stderr,
                 "ferry-bench: mpirun is not on PATH: the Open MPI peer (peer.mpi.sm.*) is "
                 "skipped (Debian: openmpi-bin libopenmpi-dev, installed by ./run deps)\n");
    return;
  }
  const std::string peer = find_mpi_peer(cfg);
  if (peer.empty()) {
    std::fprintf(stderr,
                 "ferry-bench: ferry-bench-mpi-peer was not built (CMake found no MPI): the Open "
                 "MPI peer (peer.mpi.sm.*) is skipped\n");
    return;
  }
  // Two ranks on this host over the shared-memory BTL only (`vader`; Open MPI 5 calls it `sm`
  // and still takes the old name), through ob1 so that no other transport (UCX) stands in.
  // Not bound to cores: the bench shares the machine and ferry's processes are not bound.
  std::vector<std::string> args{"--allow-run-as-root",
                                "--oversubscribe",
                                "--bind-to",
                                "none",
                                "-np",
                                "2",
                                "--mca",
                                "pml",
                                "ob1",
                                "--mca",
                                "btl",
                                "self,vader",
                                peer,
                                "peer.mpi.sm",
                                std::to_string(reps(cfg.quick))};
  for (const auto& w : workloads(cfg.quick)) {
    args.push_back(std::to_string(w.bytes) + ":" + std::to_string(w.rtt_iters) + ":" +
                   std::to_string(w.stream_count));
  }
  const auto before = report.metrics().size();
  run_peer_figures(mpirun, args, std::chrono::seconds(cfg.quick ? 120 : 1200), report);
  if (report.metrics().size() == before) {
    std::fprintf(stderr, "ferry-bench: the Open MPI peer printed no figures (see above)\n");
  }
}

}  // namespace

void run_channels(const Config& cfg, Report& report) {
  const auto tag = std::to_string(::getpid());
  bench_ferry_transport(cfg, report, "pipe", "");
  bench_ferry_transport(cfg, report, "shm", "shm://bench-" + tag);
  bench_ferry_transport(cfg, report, "zmq-ipc", "ipc:///tmp/ferry-bench-" + tag + ".sock");
  bench_ferry_transport(cfg, report, "zmq-tcp", "tcp://127.0.0.1:*");
  bench_raw_pipe(cfg, report);
  bench_raw_zmq(cfg, report, "raw-zmq-ipc", "ipc:///tmp/ferry-bench-raw-" + tag + ".sock",
                "ipc:///tmp/ferry-bench-raw-" + tag + "-stream.sock");
  bench_raw_zmq(cfg, report, "raw-zmq-tcp", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*");
  bench_boost_mq(cfg, report);
  bench_mpi(cfg, report);
}

void print_channel_targets(const Report& r) {
  if (std::isnan(r.get("channel.shm.rtt_p50_us.64"))) return;
  const double nan = std::nan("");
  const auto ratio = [&](const std::string& a, const std::string& b) {
    return r.get(a) / r.get(b);
  };
  print_targets(
      "channel target (issue)",
      {
          {"zmq-ipc 64 B msgs/s >= 0.8x raw PUSH/PULL",
           ratio("channel.zmq-ipc.msgs_per_s.64", "baseline.raw-zmq-ipc.msgs_per_s.64"), 0.8, true,
           "x"},
          {"zmq-ipc 1 KiB msgs/s >= 0.8x raw PUSH/PULL",
           ratio("channel.zmq-ipc.msgs_per_s.1024", "baseline.raw-zmq-ipc.msgs_per_s.1024"), 0.8,
           true, "x"},
          {"zmq-ipc 64 B rtt p50 <= 1.0x raw REQ/REP",
           ratio("channel.zmq-ipc.rtt_p50_us.64", "baseline.raw-zmq-ipc.rtt_p50_us.64"), 1.0, false,
           "x"},
          {"zmq-tcp 64 B rtt p50 <= 1.0x raw REQ/REP",
           ratio("channel.zmq-tcp.rtt_p50_us.64", "baseline.raw-zmq-tcp.rtt_p50_us.64"), 1.0, false,
           "x"},
          {"pipe 1 KiB msgs/s >= 0.9x raw pipe",
           ratio("channel.pipe.msgs_per_s.1024", "baseline.raw-pipe.msgs_per_s.1024"), 0.9, true,
           "x"},
          {"shm 64 B rtt p50 <= 0.7x Open MPI",
           ratio("channel.shm.rtt_p50_us.64", "peer.mpi.sm.rtt_p50_us.64"), 0.7, false, "x"},
          {"  shm vs Open MPI, 1 KiB msgs/s",
           ratio("channel.shm.msgs_per_s.1024", "peer.mpi.sm.msgs_per_s.1024"), nan, true, "x"},
          {"  shm vs Open MPI, 1 MiB GB/s",
           ratio("channel.shm.gb_per_s.1048576", "peer.mpi.sm.gb_per_s.1048576"), nan, true, "x"},
      });
}

// Peers: `ferry-bench --bench-peer channel|rawpipe|rawzmq|boostmq ARGS...`
int channel_peer(const std::vector<std::string>& a) {
  const std::string& kind = a.at(0);
  if (kind == "channel") {
    auto ch = ipc::open_channel(a.at(1), ipc::Role::connect);
    if (!ch) {
      std::fprintf(stderr, "bench peer: %s\n", ch.error().message().c_str());
      return 1;
    }
    Frame f;
    for (;;) {
      auto st = (*ch)->recv(f);
      if (st.code() == Errc::channel_closed) return 0;
      if (!st) return 1;
      if (f.header.flags == 1 && !(*ch)->send(f)) return 1;
    }
  }
  const std::size_t bytes = std::stoul(a.at(kind == "rawpipe" ? 1 : 3));
  const long rtt = std::stol(a.at(kind == "rawpipe" ? 2 : 4));
  const long count = std::stol(a.at(kind == "rawpipe" ? 3 : 5));
  std::vector<char> buf(bytes);
  if (kind == "rawpipe") {
    for (long i = 0; i < rtt; ++i) {
      if (!read_all(3, buf.data(), bytes)) return 1;
      write_all(4, buf.data(), bytes);
    }
    for (long i = 0; i < count; ++i) {
      if (!read_all(3, buf.data(), bytes)) return 1;
    }
    write_all(4, "k", 1);
    return 0;
  }
  if (kind == "rawzmq") {
    zmq::context_t ctx;
    zmq::socket_t rep(ctx, zmq::socket_type::rep);
    zmq::socket_t pull(ctx, zmq::socket_type::pull);
    rep.set(zmq::sockopt::linger, 0);
    pull.set(zmq::sockopt::linger, 0);
    rep.connect(a.at(1));
    pull.connect(a.at(2));
    zmq::message_t m;
    for (long i = 0; i < rtt; ++i) {
      if (!rep.recv(m)) return 1;
      rep.send(m, zmq::send_flags::none);
    }
    for (long i = 0; i < count; ++i) {
      if (!pull.recv(m)) return 1;
    }
    write_all(4, "k", 1);
    return 0;
  }
  if (kind == "boostmq") {
    bip::message_queue ping(bip::open_only, a.at(1).c_str());
    bip::message_queue pong(bip::open_only, a.at(2).c_str());
    std::size_t got = 0;
    unsigned prio = 0;
    for (long i = 0; i < rtt; ++i) {
      ping.receive(buf.data(), bytes, got, prio);
      pong.send(buf.data(), got, 0);
    }
    for (long i = 0; i < count; ++i)
      ping.receive(buf.data(), bytes, got, prio);
    pong.send(buf.data(), 1, 0);
    return 0;
  }
  std::fprintf(stderr, "bench peer: unknown kind %s\n", kind.c_str());
  return 2;
}

}  // namespace ferry::bench
