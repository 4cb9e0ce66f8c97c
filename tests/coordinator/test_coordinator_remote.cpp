// Remote workers over TCP on loopback: joining, slots, frozen workers, reconnects, CURVE keys,
// the --insecure rule and hostile bytes on the port. (Multi-host cases with real network
// namespaces are in test_coordinator_netns.cpp.)
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <ranges>
#include <zmq.hpp>

#include "curve_keys.hpp"
#include "ferry/ferry.hpp"
#include "ferry/ipc/factory.hpp"
#include "ferry/shared/messages.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;
using ferry::builtin::square;

namespace {

using ft::Events;

ferry::PoolOptions remote_only(Events& ev) {
  ferry::PoolOptions o;
  o.workers = 0;
  o.listen = "tcp://127.0.0.1:0";
  o.heartbeat_interval = 200ms;
  o.heartbeat_timeout = 1000ms;
  o.on_event = ev.sink();
  return o;
}

ft::Child start_worker(const std::string& endpoint, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"--connect", endpoint};
  args.insert(args.end(), extra.begin(), extra.end());
  return ft::spawn(FERRY_WORKER_EXE, args);
}

long rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string key;
  long v = 0;
  while (in >> key) {
    if (key == "VmRSS:") {
      in >> v;
      return v;
    }
    in.ignore(1 << 10, '\n');
  }
  return v;
}

int free_port() {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

}  // namespace

// A remote worker that answers its first task with an undecodable result, then serves
// honestly (it stays connected until the pool tells it to stop).
FERRY_TEST_PEER(forging_worker) {
  auto ch = ferry::ipc::open_channel(args.at(0), ferry::ipc::Role::connect);
  if (!ch) return 3;
  ferry::msg::Hello h;
  h.pid = ::getpid();
  h.host = "forger";
  ferry::worker::register_builtin_tasks();
  ferry::TaskRegistry::instance().freeze();
  h.registry_hash = ferry::TaskRegistry::instance().hash();
  if (!(*ch)->send(ferry::make_frame(ferry::MessageKind::hello, h))) return 3;
  ferry::msg::Offer offer;
  for (const auto& e : ferry::TaskRegistry::instance().entries())
    offer.tasks.push_back({e.name, e.signature, e.signature_hash});
  if (!(*ch)->send(ferry::make_frame(ferry::MessageKind::offer, offer))) return 3;
  bool forged = false;
  for (;;) {
    ferry::Frame f;
    if (!(*ch)->recv_for(f, 20s)) return 4;
    if (f.header.kind == ferry::MessageKind::shutdown) return 0;
    if (f.header.kind == ferry::MessageKind::heartbeat) {
      (void)(*ch)->send(f);
      continue;
    }
    if (f.header.kind != ferry::MessageKind::task) continue;
    if (forged) continue;  // from now on it only listens: the retry must go elsewhere
    forged = true;
    ferry::Frame bad;
    bad.header.kind = ferry::MessageKind::result;
    bad.header.request_id = f.header.request_id;
    bad.payload = {0xff, 0xff, 0xff, 0xff, 0x01};
    bad.header.length = static_cast<std::uint32_t>(bad.payload.size());
    (void)(*ch)->send(bad);
  }
}

// Opens `count` connections to the endpoint and sends a `mib` MiB message on each, without a
// hello; prints "sent" once all are queued, then stays (bounded) until the test kills it.
FERRY_TEST_PEER(flooder) {
  const std::string ep = args.at(0);
  const int count = std::stoi(args.at(1));
  const std::size_t bytes = std::stoul(args.at(2)) << 20;
  static std::vector<char> blob(bytes, 'x');
  zmq::context_t ctx;
  std::vector<zmq::socket_t> socks;
  for (int i = 0; i < count; ++i) {
    socks.emplace_back(ctx, zmq::socket_type::dealer);
    socks.back().set(zmq::sockopt::linger, 0);
    socks.back().connect(ep);
    zmq::message_t m(blob.data(), blob.size(), nullptr, nullptr);  // no copy
    socks.back().send(m, zmq::send_flags::none);
  }
  std::printf("sent\n");
  std::fflush(stdout);
  socks.front().set(zmq::sockopt::rcvtimeo, 30000);
  zmq::message_t none;
  (void)socks.front().recv(none);  // nothing comes: this only keeps the connections open
  return 0;
}

// Sends one small garbage frame from each of `count` connections (no hello).
FERRY_TEST_PEER(garbage_sender) {
  zmq::context_t ctx;
  for (int i = 0; i < std::stoi(args.at(1)); ++i) {
    zmq::socket_t d(ctx, zmq::socket_type::dealer);
    d.set(zmq::sockopt::linger, 1000);
    d.connect(args.at(0));
    d.send(zmq::buffer(std::string("not a ferry frame")), zmq::send_flags::none);
  }
  return 0;
}

TEST_SUITE("coordinator.remote") {
  TEST_CASE("two remote workers with slots serve a map over tcp and exit when it shuts down") {
    ft::LeakCheck leaks;
    Events ev;
    {
      ferry::Pool pool(remote_only(ev));
      auto a = start_worker(pool.listen_endpoint(), {"--slots", "2", "--name", "alpha"});
      auto b = start_worker(pool.listen_endpoint(), {"--name", "beta"});
      REQUIRE(pool.wait_workers(2, 20s));
      CHECK(pool.size() == 3);
      auto squares = pool.map(square, std::views::iota(0, 2000), 50);
      bool ok = squares.size() == 2000;
      for (std::size_t i = 0; ok && i < squares.size(); ++i) {
        ok = squares[i] == static_cast<std::int64_t>(i * i);
      }
      CHECK(ok);
      auto st = pool.stats();
      REQUIRE(st.workers.size() == 2);
      CHECK(st.workers[0].tasks > 0);
      CHECK(st.workers[1].tasks > 0);
      CHECK(ev.has("joined"));
      CHECK(ev.has("alpha"));
      pool.shutdown();
      // Told to shut down, the workers exit 0.
      auto ea = a.wait_for(10s);
      auto eb = b.wait_for(10s);
      REQUIRE(ea.has_value());
      REQUIRE(eb.has_value());
      CHECK(ea->code == 0);
      CHECK(eb->code == 0);
    }
    leaks.verify();
  }

  TEST_CASE("a SIGSTOPped remote worker is declared lost within 2x the heartbeat timeout") {
    ft::LeakCheck leaks;
    Events ev;
    {
      ferry::Pool pool(remote_only(ev));
      auto frozen = start_worker(pool.listen_endpoint());
      REQUIRE(pool.wait_workers(1, 20s));
      auto f = pool.submit(ferry::builtin::sleep_ms, 300);
      // The task is running on the only worker; freeze it and bring a second one.
      frozen.kill(SIGSTOP);
      const auto t0 = std::chrono::steady_clock::now();
      auto healthy = start_worker(pool.listen_endpoint());
      CHECK(f.get() == 300);  // re-queued on the healthy worker
      const auto detected = std::chrono::steady_clock::now() - t0;
      CHECK(detected < 2 * 1000ms + 1000ms);  // 2x timeout, plus the re-run itself
      CHECK(ev.has("lost"));
      CHECK(pool.stats().retries == 1);
      frozen.kill(SIGKILL);
    }
    leaks.verify();
  }

  TEST_CASE("a worker reconnects to a restarted coordinator, and gives up after its timeout") {
    ft::LeakCheck leaks;
    {
      const std::string ep = "tcp://127.0.0.1:" + std::to_string(free_port());
      Events ev1;
      auto opts = remote_only(ev1);
      opts.listen = ep;
      std::optional<ferry::Pool> first(std::in_place, opts);
      auto w = start_worker(ep, {"--reconnect-timeout", "30"});
      REQUIRE(first->wait_workers(1, 20s));
      CHECK(first->apply(square, 3) == 9);
      // Lose the coordinator without a goodbye: the worker hears nothing and reconnects.
      first->shutdown(ferry::ShutdownMode::cancel);
      first.reset();
      Events ev2;
      opts.on_event = ev2.sink();
      ferry::Pool second(opts);
      REQUIRE(second.wait_workers(1, 20s));
      CHECK(second.apply(square, 4) == 16);
      second.shutdown();
      REQUIRE(w.wait_for(10s).has_value());
    }
    {
      // Nothing listens here: after --reconnect-timeout the worker exits 6 with a reason.
      auto r = ft::run(FERRY_WORKER_EXE,
                       {"--connect", "tcp://127.0.0.1:" + std::to_string(free_port()),
                        "--reconnect-timeout", "1"},
                       30s);
      CHECK(r.status.code == 6);
      CHECK(r.err.find("gave up") != std::string::npos);
    }
    leaks.verify();
  }

  TEST_CASE("CURVE: an authorized worker gets tasks and an unknown key gets none") {
    ft::LeakCheck leaks;
    // The stranger: a second worker pair, with the right coordinator key but not authorized.
    const ft::TestKeys keys("ferry-keys-");
    const auto& dir = keys.dir;
    const auto& stranger = keys.stranger;
    CHECK((std::filesystem::status(dir / "worker.secret").permissions() &
           std::filesystem::perms::group_all) == std::filesystem::perms::none);
    Events ev;
    {
      auto opts = remote_only(ev);
      opts.keys = dir.string();
      ferry::Pool pool(opts);
      auto bad = start_worker(pool.listen_endpoint(),
                              {"--keys", stranger.string(), "--reconnect-timeout", "2"});
      auto good = start_worker(pool.listen_endpoint(), {"--keys", dir.string()});
      REQUIRE(pool.wait_workers(1, 20s));
      CHECK(pool.map(square, std::vector<int>{1, 2, 3}, 1) == std::vector<std::int64_t>{1, 4, 9});
      auto bad_exit = bad.wait_for(30s);
      REQUIRE(bad_exit.has_value());
      CHECK(bad_exit->code == 6);
      CHECK(ev.has("is not in authorized_workers"));
      CHECK(pool.stats().workers.size() == 1);  // the stranger never registered
    }
    leaks.verify();
  }

  TEST_CASE("a non-loopback listen needs keys or --insecure") {
    Events ev;
    auto opts = remote_only(ev);
    opts.listen = "tcp://0.0.0.0:0";
    try {
      ferry::Pool pool(opts);
      FAIL("expected a refusal");
    } catch (const ferry::Exception& e) {
      CHECK(std::string(e.what()).find("--keys") != std::string::npos);
      CHECK(std::string(e.what()).find("--insecure") != std::string::npos);
    }
    opts.insecure = true;
    ferry::Pool pool(opts);
    CHECK(!pool.listen_endpoint().empty());
  }

  TEST_CASE("hostile bytes on the port never stall the pool") {
    ft::LeakCheck leaks;
    Events ev;
    {
      ferry::Pool pool(remote_only(ev));
      const std::string ep = pool.listen_endpoint();
      auto worker = start_worker(ep);
      REQUIRE(pool.wait_workers(1, 20s));
      // 1. Random bytes on a raw TCP connection (not even a ZMTP greeting).
      const auto port = static_cast<std::uint16_t>(std::stoi(ep.substr(ep.rfind(':') + 1)));
      int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(port);
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      REQUIRE(::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
      std::mt19937 rng(7);
      std::vector<char> junk(4096);
      for (auto& c : junk)
        c = static_cast<char>(rng());
      CHECK(::write(s, junk.data(), junk.size()) > 0);
      ::close(s);
      // 2. A real zmq peer sending garbage frames: bad magic, truncated, a huge length, and a
      // hello with another protocol version.
      {
        zmq::context_t ctx;
        zmq::socket_t d(ctx, zmq::socket_type::dealer);
        d.set(zmq::sockopt::linger, 500);
        d.connect(ep);
        d.send(zmq::buffer(std::string("not a frame at all")), zmq::send_flags::none);
        std::string huge(20, '\0');
        std::memcpy(huge.data(), "FRRY", 4);
        huge[4] = static_cast<char>(ferry::kProtocolVersion);  // only the length is wrong
        huge[6] = 4;
        huge[8] = '\xff';
        huge[9] = '\xff';
        huge[10] = '\xff';
        huge[11] = '\x7f';
        d.send(zmq::buffer(huge), zmq::send_flags::none);
        d.send(zmq::buffer(std::string("FRR")), zmq::send_flags::none);
      }
      {
        zmq::context_t ctx;
        zmq::socket_t d(ctx, zmq::socket_type::dealer);
        d.set(zmq::sockopt::linger, 500);
        d.connect(ep);
        ferry::msg::Hello h;
        h.protocol_version = 99;
        auto f = ferry::make_frame(ferry::MessageKind::hello, h);
        ferry::Bytes wire(20 + f.payload.size());
        ferry::encode_header(f.header, wire.data());
        std::memcpy(wire.data() + 20, f.payload.data(), f.payload.size());
        d.send(zmq::buffer(wire.data(), wire.size()), zmq::send_flags::none);
      }
      // The pool still works, with its one real worker.
      CHECK(pool.map(square, std::views::iota(0, 100), 10).back() == 99 * 99);
      CHECK(pool.stats().workers.size() <= 2);
    }
    leaks.verify();
  }

  TEST_CASE("an undecodable result from a worker that was given the task is re-run elsewhere") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool({.workers = 0,
                        .listen = "tcp://127.0.0.1:0",
                        .heartbeat_interval = 200ms,
                        .heartbeat_timeout = 5000ms,
                        .on_event = [](std::string_view) {}});
      auto forger = ft::spawn_peer("forging_worker", {pool.listen_endpoint()});
      REQUIRE(pool.wait_workers(1, 20s));
      auto f = pool.submit(square, 9);
      // The forged answer must not fail it: it waits for another worker, which now joins.
      CHECK_FALSE(f.wait_for(300ms));
      auto honest = ft::spawn(FERRY_WORKER_EXE, {"--connect", pool.listen_endpoint()});
      CHECK(f.get() == 81);
      CHECK(pool.stats().retries == 1);
      pool.shutdown();
      ft::expect_exit(forger, 0);
      ft::expect_exit(honest, 0);
    }
    leaks.verify();
  }

  TEST_CASE("peers that never said hello cannot make the coordinator hold their big frames") {
    ft::LeakCheck leaks;
    Events ev;
    {
      ferry::Pool pool(remote_only(ev));
      const std::string ep = pool.listen_endpoint();
      auto worker = start_worker(ep);
      REQUIRE(pool.wait_workers(1, 20s));
      const long before = rss_kib();
      // 30 connections x 59 MiB each (1.8 GB in all), none of them a worker.
      auto flood = ft::spawn_reporting_peer("flooder", {ep, "30", "59"});
      CHECK(flood.line(60s) == "sent");
      // The pool still serves its worker, and what the flood left here stays small.
      CHECK(pool.map(square, std::views::iota(0, 200), 10).back() == 199 * 199);
      const long grown_mib = (rss_kib() - before) / 1024;
      MESSAGE("coordinator RSS grew by " << grown_mib << " MiB during the flood");
#if defined(__SANITIZE_ADDRESS__)
      CHECK(grown_mib < 256 + 256);  // ASan keeps up to 256 MiB of freed memory in quarantine
#else
      CHECK(grown_mib < 256);
#endif
      flood.out.close_r();
      flood.child.kill(SIGKILL);
      (void)flood.child.wait_for(10s);
      // Garbage from 20 connections of one address is logged once, with the address.
      auto garbage = ft::spawn_peer("garbage_sender", {ep, "20"});
      ft::expect_exit(garbage, 0);
      CHECK(pool.map(square, std::views::iota(0, 50), 10).back() == 49 * 49);
      int said = 0;
      {
        std::lock_guard lk(ev.m);
        for (auto& l : ev.lines)
          said += l.find("dropping a peer at 127.0.0.1") != std::string::npos ? 1 : 0;
      }
      CHECK(said <= 1);
    }
    leaks.verify();
  }

  TEST_CASE("a program that calls ferry::init serves as a remote worker with --ferry-worker") {
    ft::LeakCheck leaks;
    Events ev;
    {
      ferry::Pool pool(remote_only(ev));
      // This test binary is such a program: its own tasks, no ferry-worker involved.
      auto w = ft::spawn(ft::self_exe(), {"--ferry-worker", "--connect", pool.listen_endpoint(),
                                          "--slots", "2", "--name", "self"});
      REQUIRE(pool.wait_workers(1, 20s));
      CHECK(pool.map(square, std::views::iota(0, 100), 10).back() == 99 * 99);
      const auto st = pool.stats();
      REQUIRE(st.workers.size() == 1);
      CHECK(st.workers[0].remote);
      CHECK(st.workers[0].name == "self");
      pool.shutdown();
      ft::expect_exit(w, 0);
      // A usage error is ferry-worker's: exit 2, naming what is missing.
      auto bad = ft::run(ft::self_exe(), {"--ferry-worker", "--slots", "2"}, 20s);
      CHECK(bad.status.code == 2);
      CHECK(bad.err.find("--connect") != std::string::npos);
    }
    leaks.verify();
  }
}
