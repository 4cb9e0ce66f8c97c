// ShmChannel between real processes: the test binary re-executes itself as the peer.
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ferry/ipc/shm_channel.hpp"
#include "ferry/ipc/shm_queue.hpp"
#include "ferry/ipc/sync_lock.hpp"
#include "ferry/shared/session.hpp"
#include "testing.hpp"

using namespace ferry;
using namespace ferry::ipc;
using namespace std::chrono_literals;

namespace {

std::uint8_t pattern(std::uint64_t i, std::size_t j) {
  return static_cast<std::uint8_t>((i * 131 + j * 7) & 0xff);
}

Frame make(std::uint64_t id, std::size_t size, MessageKind kind = MessageKind::data) {
  Frame f;
  f.header.kind = kind;
  f.header.request_id = id;
  f.payload.resize(size);
  for (std::size_t j = 0; j < size; ++j)
    f.payload[j] = pattern(id, j);
  return f;
}

bool matches(std::uint64_t id, ByteView p, std::size_t size) {
  if (p.size() != size) return false;
  for (std::size_t j = 0; j < size; ++j) {
    if (p[j] != pattern(id, j)) return false;
  }
  return true;
}

ShmOptions with_ring(std::size_t ring, std::size_t max_frame = kDefaultMaxFrame) {
  ShmOptions o;
  o.ring_bytes = ring;
  o.max_frame = max_frame;
  return o;
}

std::unique_ptr<ShmChannel> create(const std::string& name, const ShmOptions& o = {}) {
  auto r = ShmChannel::create(name, o);
  REQUIRE_MESSAGE(r.has_value(), r.error().message());
  return std::move(*r);
}

int fail(const char* what, const Status& st = {}) {
  std::fprintf(stderr, "peer: %s: %s\n", what, st ? "ok" : st.error().message().c_str());
  return 2;
}

std::unique_ptr<ShmChannel> peer_open(const std::string& ep, const ShmOptions& o = {}) {
  auto r = ShmChannel::open(ep, o);
  if (!r) {
    std::fprintf(stderr, "peer: open %s: %s\n", ep.c_str(), r.error().message().c_str());
    std::exit(3);
  }
  return std::move(*r);
}

using testing::expect_exit;

double cpu_seconds_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(in, stat);
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::string field;
  for (int i = 3; i < 14; ++i)
    rest >> field;
  unsigned long long ut = 0, st = 0;
  rest >> ut >> st;
  return static_cast<double>(ut + st) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

double thread_cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_THREAD, &ru);
  auto tv = [](timeval t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return tv(ru.ru_utime) + tv(ru.ru_stime);
}

bool segment_exists(const std::string& full) {
  return ::access(("/dev/shm/" + full).c_str(), F_OK) == 0;
}

// Names in /dev/shm that start with "ferry.".
std::vector<std::string> ferry_segments() {
  std::vector<std::string> out;
  if (DIR* d = ::opendir("/dev/shm")) {
    while (const dirent* e = ::readdir(d)) {
      if (std::string_view(e->d_name).starts_with("ferry.")) out.emplace_back(e->d_name);
    }
    ::closedir(d);
  }
  return out;
}

// Writes a file into /dev/shm until it holds `bytes` or the file system is full.
bool fill_dev_shm(const char* path, std::size_t bytes) {
  const int fd = ::open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  std::vector<char> block(64 * 1024, 'x');
  std::size_t done = 0;
  while (done < bytes) {
    const auto n = ::write(fd, block.data(), std::min(block.size(), bytes - done));
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return true;
}

// The NoSpace a full /dev/shm must give: it says so and names the segment.
int expect_no_space(const char* what, const Error& e, const std::string& segment) {
  const auto m = e.message();
  std::fprintf(stderr, "peer: %s: %s\n", what, m.c_str());
  if (e.code != Errc::no_space) return fail(what, e);
  if (m.find("/dev/shm is full") == std::string::npos) return fail("message without the cause");
  if (m.find("/dev/shm/" + segment) == std::string::npos) return fail("message without the name");
  if (m.find(" bytes") == std::string::npos) return fail("message without the size");
  return 0;
}

}  // namespace

// --- peers -----------------------------------------------------------------------------------

// Echoes every frame back until a shutdown frame or the channel closes.
FERRY_TEST_PEER(shm_echo) {
  auto ch = peer_open(args.at(0));
  Frame f;
  for (;;) {
    auto st = ch->recv(f);
    if (st.code() == Errc::channel_closed) return 0;
    if (!st) return fail("recv", st);
    if (f.kind() == MessageKind::shutdown) return 0;
    if (auto s2 = ch->send(f); !s2) return fail("send", s2);
  }
}

// Checks `count` frames arrive in order with the expected contents, reports, then streams
// `count` frames back.
FERRY_TEST_PEER(shm_order) {
  auto ch = peer_open(args.at(0));
  const std::uint64_t count = std::stoull(args.at(1));
  Frame f;
  std::uint64_t good = 0;
  for (std::uint64_t i = 0; i < count; ++i) {
    if (auto st = ch->recv(f); !st) return fail("recv", st);
    if (f.request_id() == i && matches(i, f.payload, i % 200)) ++good;
  }
  if (auto st = ch->send(make(good, 0, MessageKind::result)); !st) return fail("send", st);
  for (std::uint64_t i = 0; i < count; ++i) {
    if (auto st = ch->send(make(i, i % 200)); !st) return fail("send", st);
  }
  auto st = ch->recv(f);  // shutdown
  return st && f.kind() == MessageKind::shutdown ? 0 : fail("shutdown", st);
}

// Sends frames until the channel fails.
FERRY_TEST_PEER(shm_stream) {
  auto ch = peer_open(args.at(0));
  for (std::uint64_t i = 0;; ++i) {
    if (auto st = ch->send(make(i, 64)); !st) return 0;
  }
}

// Says "ready", then blocks in a receive until shutdown.
FERRY_TEST_PEER(shm_idle) {
  auto ch = peer_open(args.at(0));
  if (auto st = ch->send(make(0, 0, MessageKind::heartbeat)); !st) return fail("send", st);
  Frame f;
  auto st = ch->recv(f);
  return st && f.kind() == MessageKind::shutdown ? 0 : fail("recv", st);
}

// Says "ready", then never reads (until killed).
FERRY_TEST_PEER(shm_hold) {
  auto ch = peer_open(args.at(0));
  if (auto st = ch->send(make(0, 0, MessageKind::heartbeat)); !st) return fail("send", st);
  for (;;)
    ::pause();
}

// Opens with a small max frame and expects FrameTooLarge, then ChannelClosed.
FERRY_TEST_PEER(shm_small_max) {
  auto ch = peer_open(args.at(0), with_ring(1 << 20, std::stoull(args.at(1))));
  Frame f;
  auto st = ch->recv(f);
  if (st.code() != Errc::frame_too_large) return fail("expected FrameTooLarge", st);
  auto st2 = ch->recv(f);
  if (st2.code() != Errc::channel_closed) return fail("expected ChannelClosed", st2);
  return 0;
}

// Zero-copy echo: views each frame in place, answers through a loan.
FERRY_TEST_PEER(shm_view_echo) {
  auto ch = peer_open(args.at(0));
  for (;;) {
    auto v = ch->recv_view();
    if (!v) return fail("recv_view", std::move(v).error());
    if (v->header.kind == MessageKind::shutdown) return 0;
    if (!ch->in_segment(v->payload.data()) && !v->payload.empty()) return fail("view was copied");
    if (!matches(v->header.request_id, v->payload, v->payload.size())) return fail("content");
    auto loan = ch->loan(v->payload.size());
    if (!loan) return fail("loan", std::move(loan).error());
    std::memcpy(loan->data(), v->payload.data(), v->payload.size());
    const auto id = v->header.request_id;
    const auto n = v->payload.size();
    ch->release();
    if (auto st = ch->publish(n, MessageKind::data, id); !st) return fail("publish", st);
  }
}

// Sends `n` frames, then closes in order and exits.
FERRY_TEST_PEER(shm_send_close) {
  auto ch = peer_open(args.at(0));
  const std::uint64_t n = std::stoull(args.at(1));
  for (std::uint64_t i = 0; i < n; ++i) {
    if (auto st = ch->send(make(i, 100)); !st) return fail("send", st);
  }
  ch->close();
  return 0;
}

// Creates the channel, reports on stdout when it exists and when the peer attached, then
// receives until killed.
FERRY_TEST_PEER(shm_creator) {
  auto r = ShmChannel::create(args.at(0));
  if (!r) return fail("create", std::move(r).error());
  auto& ch = *r;
  std::printf("ready\n");
  std::fflush(stdout);
  if (auto st = ch->wait_for_peer(Deadline::after(60s)); !st) return fail("wait_for_peer", st);
  std::printf("attached\n");
  std::fflush(stdout);
  Frame f;
  for (;;) {
    if (auto st = ch->recv(f); !st) return 0;
  }
}

// Prepares a channel (first step only), reports "prepared", then waits to be killed.
FERRY_TEST_PEER(shm_preparer) {
  auto p = ShmChannel::prepare(args.at(0));
  if (!p) return fail("prepare", p.error());
  std::printf("prepared\n");
  std::fflush(stdout);
  for (;;)
    ::pause();
}

// In a mount namespace of its own (the test's /dev/shm is untouched), mounts a 4 MiB tmpfs on
// /dev/shm and fills most of it; then segments that do not fit must fail at creation with
// NoSpace and leave nothing behind, where they used to be made and raise SIGBUS on first use.
// Exits 77 when the namespace or the mount cannot be made (no CAP_SYS_ADMIN).
FERRY_TEST_PEER(shm_full) {
  if (::unshare(CLONE_NEWNS) != 0) return 77;
  // Private from here down, so the small tmpfs never shows outside this process.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return 77;
  if (::mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=1777") != 0) {
    return 77;
  }
  const char* filler = "/dev/shm/filler";
  if (!fill_dev_shm(filler, 3 << 20)) return fail("filler");

  // A channel with 1 MiB rings needs a little over 2 MiB: about 1 MiB is free.
  auto ch = ShmChannel::create("full", with_ring(1 << 20));
  if (ch) return fail("a channel larger than the free space was created");
  if (int rc = expect_no_space("channel", ch.error(), shm_name("full")); rc != 0) return rc;
  ShmQueueOptions qo;
  qo.capacity = 32;
  qo.slot_bytes = 64 << 10;
  auto q = ShmQueue::create("fullq", qo);
  if (q) return fail("a queue larger than the free space was created");
  if (int rc = expect_no_space("queue", q.error(), shm_name("fullq")); rc != 0) return rc;
  // In two steps (as a pool makes its workers' channels): prepare() reserves only the header's
  // page, so it succeeds; finish() must then be NoSpace naming the segment, and remove it.
  auto pending = ShmChannel::prepare("fullp", with_ring(1 << 20));
  if (!pending) return fail("prepare", pending.error());
  auto late = pending->finish();
  if (late) return fail("a prepared channel larger than the free space was finished");
  if (int rc = expect_no_space("finish", late.error(), shm_name("fullp")); rc != 0) return rc;
  if (segment_exists(shm_name("fullp"))) return fail("an unfinished channel was left");

  // Full to the last page: even a lock's small segment is refused.
  if (!fill_dev_shm("/dev/shm/filler2", std::size_t{8} << 20)) return fail("filler2");
  auto lock = Lock::create("fulllock");
  if (lock) return fail("a lock was created in a full /dev/shm");
  if (lock.code() != Errc::no_space) return fail("lock", lock.error());
  if (!ferry_segments().empty()) return fail("a half-made segment was left in /dev/shm");

  // With room again, the same channel is made and works.
  ::unlink("/dev/shm/filler2");
  ::unlink(filler);
  auto ok = ShmChannel::create("full", with_ring(1 << 20));
  if (!ok) return fail("create after freeing space", ok.error());
  auto other = ShmChannel::open((*ok)->endpoint());
  if (!other) return fail("open", other.error());
  if (auto st = (*ok)->send(make(7, 100000)); !st) return fail("send", st);
  Frame f;
  if (auto st = (*other)->recv_for(f, 10s); !st) return fail("recv", st);
  if (!matches(7, f.payload, 100000)) return fail("content");
  return 0;
}

// --- tests -----------------------------------------------------------------------------------

TEST_SUITE("ipc.shm") {
  TEST_CASE("frames round-trip through a peer process, including empty ones") {
    testing::LeakCheck leaks;
    {
      auto ch = create("rt");
      CHECK(ch->endpoint() == "shm://" + shm_name("rt"));
      auto peer = testing::spawn_peer("shm_echo", {ch->endpoint()});
      for (std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{64}, std::size_t{4096},
                               std::size_t{100000}}) {
        REQUIRE(ch->send(make(size, size)));
        Frame back;
        REQUIRE(ch->recv_for(back, 30s));
        CHECK(back.request_id() == size);
        CHECK(back.kind() == MessageKind::data);
        CHECK(matches(size, back.payload, size));
      }
      REQUIRE(ch->send(make(0, 0, MessageKind::shutdown)));
      expect_exit(peer);
    }
    leaks.verify();
  }

  TEST_CASE("100000 frames arrive in order in both directions") {
    testing::LeakCheck leaks;
    {
      constexpr std::uint64_t kCount = 100000;
      auto ch = create("order", with_ring(64 << 10));
      auto peer = testing::spawn_peer("shm_order", {ch->endpoint(), std::to_string(kCount)});
      for (std::uint64_t i = 0; i < kCount; ++i)
        REQUIRE(ch->send(make(i, i % 200)));
      Frame f;
      REQUIRE(ch->recv_for(f, 60s));
      CHECK(f.kind() == MessageKind::result);
      CHECK(f.request_id() == kCount);  // the peer counted every frame as in order and intact
      std::uint64_t good = 0;
      for (std::uint64_t i = 0; i < kCount; ++i) {
        REQUIRE(ch->recv_for(f, 60s));
        if (f.request_id() == i && matches(i, f.payload, i % 200)) ++good;
      }
      CHECK(good == kCount);
      REQUIRE(ch->send(make(0, 0, MessageKind::shutdown)));
      expect_exit(peer);
    }
    leaks.verify();
  }

  TEST_CASE("a 64 MiB frame crosses a 256 KiB ring both ways, and an empty frame too") {
    testing::LeakCheck leaks;
    {
      auto ch = create("big", with_ring(256 << 10));
      auto peer = testing::spawn_peer("shm_echo", {ch->endpoint()});
      const Frame big = make(42, kDefaultMaxFrame);
      REQUIRE(ch->send_for(big, 60s));
      Frame back;
      REQUIRE(ch->recv_for(back, 60s));
      CHECK(back.request_id() == 42);
      CHECK(back.payload.size() == kDefaultMaxFrame);
      CHECK(back.payload == big.payload);
      REQUIRE(ch->send(make(7, 0)));
      REQUIRE(ch->recv_for(back, 60s));
      CHECK(back.request_id() == 7);
      CHECK(back.payload.empty());
      REQUIRE(ch->send(make(0, 0, MessageKind::shutdown)));
      expect_exit(peer);
    }
    leaks.verify();
  }

  TEST_CASE("a frame over the maximum is refused with FrameTooLarge by sender and receiver") {
    testing::LeakCheck leaks;
    constexpr std::size_t kMax = 1 << 20;
    SUBCASE("the sender refuses it and sends nothing") {
      auto ch = create("toolarge-s", with_ring(1 << 20, kMax));
      auto peer = testing::spawn_peer("shm_echo", {ch->endpoint()});
      auto st = ch->send(make(1, kMax + 1));
      CHECK(st.code() == Errc::frame_too_large);
      CHECK(ch->send(make(2, kMax)));  // exactly the maximum is fine
      Frame back;
      REQUIRE(ch->recv_for(back, 30s));
      CHECK(back.request_id() == 2);  // nothing of the refused frame arrived
      CHECK(back.payload.size() == kMax);
      REQUIRE(ch->send(make(0, 0, MessageKind::shutdown)));
      expect_exit(peer);
    }
    SUBCASE("a receiver with a smaller maximum rejects it and closes the channel") {
      auto ch = create("toolarge-r", with_ring(1 << 20));
      auto peer = testing::spawn_peer("shm_small_max", {ch->endpoint(), std::to_string(kMax)});
      auto st = ch->send_for(make(1, 2 * kMax), 30s);
      // Either it all fitted before the peer closed, or the peer's close cut it short.
      CHECK((st.has_value() || st.code() == Errc::channel_closed));
      expect_exit(peer);
      Frame f;
      CHECK(ch->recv_for(f, 10s).code() == Errc::channel_closed);
    }
    leaks.verify();
  }

  TEST_CASE("a SIGKILLed sending peer is reported as ChannelClosed within 1 s") {
    testing::LeakCheck leaks;
    {
      auto ch = create("kill-rx", with_ring(64 << 10));
      auto peer = testing::spawn_peer("shm_stream", {ch->endpoint()});
      Frame f;
      for (int i = 0; i < 1000; ++i)
        REQUIRE(ch->recv_for(f, 30s));
      const auto t0 = std::chrono::steady_clock::now();
      peer.kill(SIGKILL);
      Status st;
      while ((st = ch->recv_for(f, 10s))) {
      }
      const auto elapsed = std::chrono::steady_clock::now() - t0;
      CHECK(st.code() == Errc::channel_closed);
      CHECK(elapsed < 1s);
      auto ex = peer.wait_for(30s);
      REQUIRE(ex);
      CHECK(ex->signal == SIGKILL);
    }
    leaks.verify();
  }

  TEST_CASE("a sender blocked on a full ring gets ChannelClosed within 1 s of its peer's SIGKILL") {
    testing::LeakCheck leaks;
    {
      auto ch = create("kill-tx", with_ring(64 << 10));
      auto peer = testing::spawn_peer("shm_hold", {ch->endpoint()});
      Frame ready;
      REQUIRE(ch->recv_for(ready, 30s));
      const Frame f = make(1, 1000);
      int sent = 0;
      Status st;
      while ((st = ch->try_send(f)))
        ++sent;
      CHECK(st.code() == Errc::queue_full);  // the peer never reads
      CHECK(sent > 0);
      CHECK(ch->send_for(f, 100ms).code() == Errc::timeout);
      const auto t0 = std::chrono::steady_clock::now();
      peer.kill(SIGKILL);
      st = ch->send_for(f, 10s);
      const auto elapsed = std::chrono::steady_clock::now() - t0;
      CHECK(st.code() == Errc::channel_closed);
      CHECK(elapsed < 1s);
      REQUIRE(peer.wait_for(30s));
    }
    leaks.verify();
  }

  TEST_CASE("timed and try receives honour their deadlines") {
    testing::LeakCheck leaks;
    {
      auto ch = create("timed");
      auto peer = testing::spawn_peer("shm_idle", {ch->endpoint()});
      Frame f;
      REQUIRE(ch->recv_for(f, 30s));  // ready
      CHECK(ch->try_recv(f).code() == Errc::would_block);
      const auto t0 = std::chrono::steady_clock::now();
      CHECK(ch->recv_for(f, 200ms).code() == Errc::timeout);
      const auto elapsed = std::chrono::steady_clock::now() - t0;
      CHECK(elapsed >= 200ms);
      CHECK(elapsed < 5s);
      REQUIRE(ch->send(make(0, 0, MessageKind::shutdown)));
      expect_exit(peer);
    }
    leaks.verify();
  }

  TEST_CASE("an idle blocked receiver uses almost no CPU") {
    testing::LeakCheck leaks;
    {
      auto ch = create("idle");
      auto peer = testing::spawn_peer("shm_idle", {ch->endpoint()});
      Frame f;
      REQUIRE(ch->recv_for(f, 30s));  // the peer is about to block in recv()
      const double peer0 = cpu_seconds_of(peer.pid());
      const double self0 = thread_cpu_seconds();
      const auto t0 = std::chrono::steady_clock::now();
      CHECK(ch->recv_for(f, 600ms).code() == Errc::timeout);  // we wait too, on a timed recv
      const double wall =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double peer_cpu = cpu_seconds_of(peer.pid()) - peer0;
      const double self_cpu = thread_cpu_seconds() - self0;
      MESSAGE("idle CPU over " << wall << " s: peer " << peer_cpu << " s, self " << self_cpu
                               << " s");
      CHECK(peer_cpu / wall < 0.05);
      CHECK(self_cpu / wall < 0.05);
      REQUIRE(ch->send(make(0, 0, MessageKind::shutdown)));
      expect_exit(peer);
    }
    leaks.verify();
  }

  TEST_CASE("loaned buffers are published and viewed in place in both directions") {
    testing::LeakCheck leaks;
    {
      auto ch = create("loan", with_ring(1 << 20));
      auto peer = testing::spawn_peer("shm_view_echo", {ch->endpoint()});
      CHECK(ch->max_loan() >= (400u << 10));
      CHECK(ch->loan(ch->max_loan() + 1).code() == Errc::invalid_argument);
      for (std::uint64_t i = 0; i < 200; ++i) {
        const std::size_t size = (i * 37'813) % (300 << 10);
        auto loan = ch->loan(size, Deadline::after(30s));
        REQUIRE(loan);
        REQUIRE(loan->size() == size);
        CHECK((size == 0 || ch->in_segment(loan->data())));
        for (std::size_t j = 0; j < size; ++j)
          (*loan)[j] = pattern(i, j);
        REQUIRE(ch->publish(size, MessageKind::data, i));
        auto v = ch->recv_view_for(30s);
        REQUIRE(v);
        CHECK(v->header.request_id == i);
        CHECK((size == 0 || ch->in_segment(v->payload.data())));
        CHECK(matches(i, v->payload, size));
        Frame other;
        CHECK(ch->try_recv(other).code() == Errc::invalid_argument);  // view still held
        ch->release();
      }
      REQUIRE(ch->send(make(0, 0, MessageKind::shutdown)));
      expect_exit(peer);
    }
    leaks.verify();
  }

  TEST_CASE("an orderly close delivers what was sent, then ChannelClosed") {
    testing::LeakCheck leaks;
    {
      auto ch = create("close");
      auto peer = testing::spawn_peer("shm_send_close", {ch->endpoint(), "500"});
      expect_exit(peer);  // the peer is gone before we read anything
      Frame f;
      for (std::uint64_t i = 0; i < 500; ++i) {
        REQUIRE(ch->recv_for(f, 30s));
        CHECK(f.request_id() == i);
      }
      CHECK(ch->recv_for(f, 10s).code() == Errc::channel_closed);
      CHECK(ch->send(make(1, 1)).code() == Errc::channel_closed);
    }
    leaks.verify();
  }

  TEST_CASE("the creator unlinks the name once the peer attached, and a second opener is refused") {
    testing::LeakCheck leaks;
    {
      auto ch = create("unlink");
      const auto full = shm_name("unlink");
      CHECK(ch->segment_name() == full);
      CHECK(segment_exists(full));
      auto peer = testing::spawn_peer("shm_echo", {ch->endpoint()});
      REQUIRE(ch->wait_for_peer(Deadline::after(30s)));
      CHECK_FALSE(segment_exists(full));
      // Still fully usable after the unlink.
      REQUIRE(ch->send(make(5, 10)));
      Frame back;
      REQUIRE(ch->recv_for(back, 30s));
      CHECK(back.request_id() == 5);
      CHECK(ShmChannel::open(ch->endpoint()).code() == Errc::not_found);
      REQUIRE(ch->send(make(0, 0, MessageKind::shutdown)));
      expect_exit(peer);
    }
    SUBCASE("a second opener while the name still exists") {
      ShmOptions keep;
      keep.unlink_when_attached = false;
      auto ch = create("second", keep);
      auto a = ShmChannel::open(ch->endpoint());
      REQUIRE(a);
      CHECK(ShmChannel::open(ch->endpoint()).code() == Errc::already_exists);
      CHECK(ShmChannel::create("second").code() == Errc::already_exists);
    }
    CHECK(ShmChannel::open("shm://ferry.no-such-segment").code() == Errc::not_found);
    CHECK(ShmChannel::create("bad/name").code() == Errc::invalid_argument);
    leaks.verify();
  }

  TEST_CASE("a full /dev/shm is NoSpace at creation, naming the segment, with nothing left") {
    testing::LeakCheck leaks;
    {
      auto peer = testing::spawn_peer("shm_full");
      auto ex = peer.wait_for(60s);
      REQUIRE(ex);
      if (ex->code == 77) {
        MESSAGE("skipped: cannot mount a private tmpfs on /dev/shm here (needs CAP_SYS_ADMIN)");
      } else {
        CHECK(ex->signal == 0);  // no SIGBUS
        CHECK(ex->code == 0);
      }
    }
    leaks.verify();
  }

  TEST_CASE("a channel larger than all of /dev/shm is NoSpace at creation") {
    testing::LeakCheck leaks;
    struct statvfs vfs {};
    REQUIRE(::statvfs("/dev/shm", &vfs) == 0);
    const auto total = static_cast<std::uint64_t>(vfs.f_blocks) * vfs.f_frsize;
    // Larger than the whole file system, not just its free space: tmpfs refuses that at once,
    // without filling /dev/shm for the moment other tests might need it.
    std::size_t ring = 4096;
    while (ring <= (std::size_t{1} << 30) && 2 * static_cast<std::uint64_t>(ring) <= total)
      ring *= 2;
    if (ring > (std::size_t{1} << 30)) {
      MESSAGE("skipped: /dev/shm holds " << (total >> 20)
                                         << " MiB, more than the largest channel (2 GiB)");
    } else {
      auto ch = ShmChannel::create("huge", with_ring(ring));
      REQUIRE_FALSE(ch);
      CHECK(ch.code() == Errc::no_space);
      CHECK(ch.error().message().find("/dev/shm/" + shm_name("huge")) != std::string::npos);
      CHECK_FALSE(segment_exists(shm_name("huge")));
    }
    leaks.verify();
  }

  TEST_CASE(
      "an opener waits for a channel still being made, until its creator finishes, gives up or "
      "dies") {
    testing::LeakCheck leaks;
    {
      // 64 MiB rings take finish() tens of ms to reserve, so the opening thread most likely
      // comes while the channel is still being made; either order must work.
      auto pending = ShmChannel::prepare("making", with_ring(64 << 20));
      REQUIRE(pending);
      Result<std::unique_ptr<ShmChannel>> opened = Errc::would_block;
      std::thread opener([&, ep = pending->endpoint()] { opened = ShmChannel::open(ep); });
      auto ch = pending->finish();
      opener.join();
      REQUIRE_MESSAGE(ch, ch.error().message());
      REQUIRE_MESSAGE(opened, opened.error().message());
      REQUIRE((*ch)->send(make(3, 1000)));
      Frame f;
      REQUIRE((*opened)->recv_for(f, 10s));
      CHECK(matches(3, f.payload, 1000));
    }
    {
      auto pending = ShmChannel::prepare("givenup");
      REQUIRE(pending);
      Result<std::unique_ptr<ShmChannel>> opened = Errc::would_block;
      std::thread opener([&, ep = pending->endpoint()] { opened = ShmChannel::open(ep); });
      { [[maybe_unused]] auto dropped = std::move(*pending); }
      opener.join();
      REQUIRE_FALSE(opened);
      // Given up while it waited, or gone before it looked.
      CHECK((opened.code() == Errc::channel_closed || opened.code() == Errc::not_found));
      CHECK_FALSE(segment_exists(shm_name("givenup")));
    }
    {
      auto peer = testing::spawn_reporting_peer("shm_preparer", {"orphan"});
      REQUIRE(peer.line(30s) == "prepared");
      peer.child.kill(SIGKILL);
      REQUIRE(peer.child.wait_for(30s));
      const auto t0 = std::chrono::steady_clock::now();
      auto r = ShmChannel::open("orphan");
      CHECK(std::chrono::steady_clock::now() - t0 < 1s);
      REQUIRE_FALSE(r);
      CHECK(r.code() == Errc::channel_closed);
      CHECK(r.error().message().find("died before making it") != std::string::npos);
      // A killed creator leaves its name, as before an attach; the session sweep would take it.
      ::shm_unlink(("/" + shm_name("orphan")).c_str());
    }
    leaks.verify();
  }

  TEST_CASE("a SIGKILLed creator leaves nothing in /dev/shm once the peer attached") {
    testing::LeakCheck leaks;
    {
      auto peer = testing::spawn_reporting_peer("shm_creator", {"victim"});
      REQUIRE(peer.line(30s) == "ready");
      auto ch = ShmChannel::open("victim");
      REQUIRE(ch);
      REQUIRE(peer.line(30s) == "attached");
      CHECK_FALSE(segment_exists(shm_name("victim")));
      const auto t0 = std::chrono::steady_clock::now();
      peer.child.kill(SIGKILL);
      Frame f;
      CHECK((*ch)->recv_for(f, 10s).code() == Errc::channel_closed);
      CHECK(std::chrono::steady_clock::now() - t0 < 1s);
      REQUIRE(peer.child.wait_for(30s));
    }
    leaks.verify();
  }
}
