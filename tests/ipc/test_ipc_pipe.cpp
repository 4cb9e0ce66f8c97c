#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "ferry/ipc/factory.hpp"
#include "ferry/ipc/pipe_channel.hpp"
#include "ferry/ipc/typed.hpp"
#include "testing.hpp"

using namespace ferry;
using namespace std::chrono_literals;
using ipc::ChannelOptions;
using ipc::Deadline;
using ipc::PipeChannel;

namespace {

Frame data_frame(std::uint64_t id, std::size_t size = 8) {
  Frame f;
  f.header.kind = MessageKind::data;
  f.header.request_id = id;
  f.payload.assign(size, static_cast<std::uint8_t>(id));
  return f;
}

ipc::ChannelPtr open_inherited() {
  auto ch = ipc::open_channel("pipe:3,4", ipc::Role::connect);
  if (!ch) std::exit(90);
  return std::move(*ch);
}

// A peer started with our pipe ends at fds 3 (read) and 4 (write).
struct PeerPipe {
  std::unique_ptr<PipeChannel> ch;
  testing::Child child;
};

PeerPipe start_peer(const char* name, std::vector<std::string> args = {}, ChannelOptions opt = {}) {
  auto pair = PipeChannel::make_pair(opt);
  REQUIRE(pair);
  auto& [mine, ends] = *pair;
  testing::SpawnOptions so;
  so.fds = {std::pair{ends.read_fd, 3}, std::pair{ends.write_fd, 4}};
  PeerPipe p{std::move(mine), testing::spawn_peer(name, args, so)};
  ends.close();
  return p;
}

}  // namespace

FERRY_TEST_PEER(pipe_echo) {
  auto ch = open_inherited();
  Frame f;
  for (;;) {
    auto st = ch->recv(f);
    if (st.code() == Errc::channel_closed) return 0;
    if (!st) return 1;
    if (!ch->send(f)) return 2;
  }
}

FERRY_TEST_PEER(pipe_stream) {
  auto ch = open_inherited();
  const auto n = std::stoull(args.at(0));
  for (std::uint64_t i = 0; i < n; ++i) {
    if (!ch->send(data_frame(i))) return 1;
  }
  return 0;
}

FERRY_TEST_PEER(pipe_stream_forever) {
  auto ch = open_inherited();
  for (std::uint64_t i = 0;; ++i) {
    if (!ch->send(data_frame(i, 1024))) return 1;
  }
}

FERRY_TEST_PEER(pipe_read_one_and_exit) {
  auto ch = open_inherited();
  Frame f;
  return ch->recv(f) ? 0 : 1;
}

FERRY_TEST_PEER(pipe_send_last_and_exit) {
  auto ch = open_inherited();
  return ch->send(data_frame(77, 100)) ? 0 : 1;
}

FERRY_TEST_PEER(pipe_typed_echo) {
  auto ch = Channel<std::vector<std::string>>::open("pipe:3,4", ipc::Role::connect);
  if (!ch) return 1;
  auto v = ch->recv();
  if (!v) return 2;
  v->push_back("back");
  return ch->send(*v) ? 0 : 3;
}

// args[0]: a typed Pipe's child end, inherited at the numbers it names.
FERRY_TEST_PEER(pipe_typed_child_end) {
  auto ch = Channel<std::vector<std::string>>::open(args.at(0), ipc::Role::connect);
  if (!ch) return 1;
  auto v = ch->recv();
  if (!v) return 2;
  v->push_back("back");
  return ch->send(*v) ? 0 : 3;
}

TEST_SUITE("ipc.pipe") {
  TEST_CASE("a frame makes a round trip through a child process") {
    testing::LeakCheck leaks;
    {
      auto p = start_peer("pipe_echo");
      REQUIRE(p.ch->send(data_frame(5, 300)));
      Frame back;
      REQUIRE(p.ch->recv_for(back, 10s));
      CHECK(back.header.request_id == 5);
      CHECK(back.payload == data_frame(5, 300).payload);
      p.ch.reset();  // EOF makes the echo peer exit
      auto st = p.child.wait_for(10s);
      REQUIRE(st);
      CHECK(st->code == 0);
    }
    leaks.verify();
  }

  TEST_CASE("100000 frames arrive in order") {
    testing::LeakCheck leaks;
    {
      auto p = start_peer("pipe_stream", {"100000"});
      Frame f;
      std::uint64_t expect = 0;
      while (expect < 100000) {
        REQUIRE(p.ch->recv_for(f, 10s));
        REQUIRE(f.header.request_id == expect);
        ++expect;
      }
      CHECK(p.ch->recv_for(f, 10s).code() == Errc::channel_closed);
      REQUIRE(p.child.wait_for(10s));
    }
    leaks.verify();
  }

  TEST_CASE("0-byte and maximum-size frames pass, one byte over is FrameTooLarge") {
    testing::LeakCheck leaks;
    {
      ChannelOptions opt;
      opt.max_frame = 4u << 20;
      auto p = start_peer("pipe_echo", {}, opt);
      Frame back;
      REQUIRE(p.ch->send(data_frame(1, 0)));
      REQUIRE(p.ch->recv_for(back, 10s));
      CHECK(back.payload.empty());
      // The echo peer uses the default (64 MiB) maximum, so it accepts this.
      REQUIRE(p.ch->send(data_frame(2, opt.max_frame)));
      REQUIRE(p.ch->recv_for(back, 20s));
      CHECK(back.payload.size() == opt.max_frame);
      CHECK(p.ch->send(data_frame(3, opt.max_frame + 1)).code() == Errc::frame_too_large);
    }
    leaks.verify();
  }

  TEST_CASE("a frame at the 64 MiB default maximum goes through") {
    testing::LeakCheck leaks;
    {
      auto p = start_peer("pipe_echo");
      REQUIRE(p.ch->send(data_frame(9, kDefaultMaxFrame)));
      Frame back;
      REQUIRE(p.ch->recv_for(back, 30s));
      CHECK(back.payload.size() == kDefaultMaxFrame);
    }
    leaks.verify();
  }

  TEST_CASE("a peer that declares an oversized frame is refused with FrameTooLarge") {
    testing::LeakCheck leaks;
    {
      auto pair = PipeChannel::make_pair();
      REQUIRE(pair);
      auto& [mine, ends] = *pair;
      ChannelOptions small;
      small.max_frame = 1024;
      PipeChannel other(ends.read_fd, ends.write_fd, small);
      REQUIRE(mine->send(data_frame(1, 2048)));
      Frame f;
      auto st = other.recv_for(f, 5s);
      CHECK(st.code() == Errc::frame_too_large);
      CHECK(f.payload.size() < 2048);  // nothing was reserved for the refused payload
    }
    leaks.verify();
  }

  TEST_CASE("a peer SIGKILLed mid-stream gives ChannelClosed within 1 s") {
    testing::LeakCheck leaks;
    {
      auto p = start_peer("pipe_stream_forever");
      Frame f;
      REQUIRE(p.ch->recv_for(f, 10s));  // it is streaming
      p.child.kill(SIGKILL);
      const auto t0 = std::chrono::steady_clock::now();
      Status st;
      while ((st = p.ch->recv_for(f, 5s))) {
      }
      const auto dt = std::chrono::steady_clock::now() - t0;
      CHECK(st.code() == Errc::channel_closed);
      CHECK(dt < 1s);
      REQUIRE(p.child.wait_for(10s));
    }
    leaks.verify();
  }

  TEST_CASE("writing to a dead reader is ChannelClosed, not a SIGPIPE death") {
    testing::LeakCheck leaks;
    {
      struct sigaction before {};
      ::sigaction(SIGPIPE, nullptr, &before);
      auto p = start_peer("pipe_read_one_and_exit");
      REQUIRE(p.ch->send(data_frame(1)));
      REQUIRE(p.child.wait_for(10s));
      Status st;
      // Frames that fit in the pipe are accepted (and lost with the peer); the first send
      // that has to wait notices the hang-up.
      for (int i = 0; i < 2000 && st; ++i)
        st = p.ch->send(data_frame(2, 4096));
      CHECK(st.code() == Errc::channel_closed);
      struct sigaction after {};
      ::sigaction(SIGPIPE, nullptr, &after);
      CHECK(reinterpret_cast<void*>(after.sa_handler) ==
            reinterpret_cast<void*>(before.sa_handler));
      sigset_t pending;
      sigpending(&pending);
      CHECK(sigismember(&pending, SIGPIPE) == 0);  // and no SIGPIPE left pending
    }
    leaks.verify();
  }

  TEST_CASE("over plain pipes a dead reader is ChannelClosed without a SIGPIPE death") {
    testing::LeakCheck leaks;
    {
      int a[2], b[2];
      REQUIRE(::pipe2(a, O_CLOEXEC) == 0);
      REQUIRE(::pipe2(b, O_CLOEXEC) == 0);
      PipeChannel ch(b[0], a[1]);  // reads b, writes a
      ::close(a[0]);               // the peer is gone: its reader of a ...
      ::close(b[1]);               // ... and its writer of b
      Status st;
      for (int i = 0; i < 2000 && st; ++i)
        st = ch.send(data_frame(1, 4096));
      CHECK(st.code() == Errc::channel_closed);
      sigset_t pending;
      sigpending(&pending);
      CHECK(sigismember(&pending, SIGPIPE) == 0);
      Frame f;
      CHECK(ch.recv_for(f, 5s).code() == Errc::channel_closed);  // writer of b gone: EOF
    }
    leaks.verify();
  }

  TEST_CASE("a peer's last frame before it exits is delivered") {
    testing::LeakCheck leaks;
    {
      auto p = start_peer("pipe_send_last_and_exit");
      REQUIRE(p.child.wait_for(10s));
      Frame f;
      REQUIRE(p.ch->recv_for(f, 5s));
      CHECK(f.header.request_id == 77);
      CHECK(p.ch->recv_for(f, 5s).code() == Errc::channel_closed);
    }
    leaks.verify();
  }

  TEST_CASE("timed recv honours its timeout and try recv does not wait") {
    testing::LeakCheck leaks;
    {
      auto pair = PipeChannel::make_pair();
      REQUIRE(pair);
      auto& [mine, ends] = *pair;
      PipeChannel other(ends.read_fd, ends.write_fd);
      Frame f;
      CHECK(mine->try_recv(f).code() == Errc::would_block);
      const auto t0 = std::chrono::steady_clock::now();
      CHECK(mine->recv_for(f, 200ms).code() == Errc::timeout);
      const auto dt = std::chrono::steady_clock::now() - t0;
      CHECK(dt >= 200ms);
      CHECK(dt < 2s);
    }
    leaks.verify();
  }

  TEST_CASE("a full pipe makes try_send QueueFull and timed send Timeout") {
    testing::LeakCheck leaks;
    {
      auto pair = PipeChannel::make_pair();
      REQUIRE(pair);
      auto& [mine, ends] = *pair;
      PipeChannel other(ends.read_fd, ends.write_fd);
      Status st;
      int sent = 0;
      while ((st = mine->try_send(data_frame(1, 1000))))
        ++sent;
      CHECK(sent > 0);
      CHECK(st.code() == Errc::queue_full);
      const auto t0 = std::chrono::steady_clock::now();
      CHECK(mine->send_for(data_frame(1, 1000), 100ms).code() == Errc::timeout);
      CHECK(std::chrono::steady_clock::now() - t0 >= 100ms);
      // The frame that filled the pipe was completed, so the stream is still whole.
      Frame f;
      int got = 0;
      while (other.try_recv(f))
        ++got;
      CHECK(got == sent);
    }
    leaks.verify();
  }

  TEST_CASE("a signal interrupting a blocked recv is retried (EINTR)") {
    testing::LeakCheck leaks;
    {
      struct sigaction sa {};
      static std::atomic<int> hits{0};
      sa.sa_handler = [](int) { hits.fetch_add(1); };
      sa.sa_flags = 0;  // no SA_RESTART: poll/read return EINTR
      struct sigaction old {};
      ::sigaction(SIGUSR1, &sa, &old);
      auto pair = PipeChannel::make_pair();
      REQUIRE(pair);
      auto& [mine, ends] = *pair;
      PipeChannel other(ends.read_fd, ends.write_fd);
      const pthread_t receiver = pthread_self();
      std::atomic<bool> done{false};
      std::thread t([&] {
        while (hits.load() < 20 && !done.load()) {
          pthread_kill(receiver, SIGUSR1);
          std::this_thread::yield();
        }
        (void)other.send(data_frame(4));
      });
      Frame f;
      auto st = mine->recv_for(f, 20s);
      done = true;
      t.join();
      ::sigaction(SIGUSR1, &old, nullptr);
      CHECK(st);
      CHECK(f.header.request_id == 4);
      CHECK(hits.load() > 0);
    }
    leaks.verify();
  }

  TEST_CASE("send_batch delivers every frame in order") {
    testing::LeakCheck leaks;
    {
      auto pair = PipeChannel::make_pair();
      REQUIRE(pair);
      auto& [mine, ends] = *pair;
      PipeChannel other(ends.read_fd, ends.write_fd);
      std::vector<Frame> batch;
      for (std::uint64_t i = 0; i < 2000; ++i)
        batch.push_back(data_frame(i, i % 7));
      std::thread reader([&] {
        Frame f;
        for (std::uint64_t i = 0; i < 2000; ++i) {
          REQUIRE(other.recv_for(f, 10s));
          REQUIRE(f.header.request_id == i);
          REQUIRE(f.payload.size() == i % 7);
        }
      });
      CHECK(mine->send_batch(batch, Deadline::never()));
      reader.join();
    }
    leaks.verify();
  }

  TEST_CASE("a typed Channel carries structured values to a child and back") {
    testing::LeakCheck leaks;
    {
      auto pair = PipeChannel::make_pair();
      REQUIRE(pair);
      auto& [mine, ends] = *pair;
      testing::SpawnOptions so;
      so.fds = {std::pair{ends.read_fd, 3}, std::pair{ends.write_fd, 4}};
      auto child = testing::spawn_peer("pipe_typed_echo", {}, so);
      ends.close();
      Channel<std::vector<std::string>> ch(std::move(mine));
      REQUIRE(ch.send({"a", "bc"}));
      auto back = ch.recv_for(10s);
      REQUIRE(back);
      CHECK(*back == std::vector<std::string>{"a", "bc", "back"});
      auto st = child.wait_for(10s);
      REQUIRE(st);
      CHECK(st->code == 0);
    }
    leaks.verify();
  }

  TEST_CASE("a typed Pipe's child end survives a spawner that maps its own channel to 3 and 4") {
    testing::LeakCheck leaks;
    {
      auto pipe = Pipe<std::vector<std::string>>::create();
      REQUIRE(pipe);
      int r = -1, w = -1;
      REQUIRE(std::sscanf(pipe->child_end.c_str(), "pipe:%d,%d", &r, &w) == 2);
      CHECK(r >= Pipe<int>::kChildFdFloor);
      CHECK(w >= Pipe<int>::kChildFdFloor);
      // What a Pool's pipe transport does for each worker: its own channel at 3 and 4.
      auto own = PipeChannel::make_pair();
      REQUIRE(own);
      testing::SpawnOptions so;
      so.fds = {std::pair{own->second.read_fd, 3}, std::pair{own->second.write_fd, 4}};
      auto child = testing::spawn_peer("pipe_typed_child_end", {pipe->child_end}, so);
      own->second.close();
      pipe->close_child_end();
      REQUIRE(pipe->parent.send({"a"}));
      auto back = pipe->parent.recv_for(10s);
      REQUIRE(back);
      CHECK(*back == std::vector<std::string>{"a", "back"});
      auto st = child.wait_for(10s);
      REQUIRE(st);
      CHECK(st->code == 0);
    }
    leaks.verify();
  }

  TEST_CASE("a channel handle serializes as its endpoint") {
    auto pair = PipeChannel::make_pair();
    REQUIRE(pair);
    auto& [mine, ends] = *pair;
    const std::string ep = mine->endpoint();
    Channel<int> ch(std::move(mine));
    auto bytes = encode_value(ch);
    auto back = decode_value<Channel<int>>(bytes);
    REQUIRE(back);
    CHECK(back->endpoint() == ep);
    ends.close();
  }

  TEST_CASE("the factory refuses malformed and unknown endpoints with a reason") {
    CHECK(ipc::open_channel("pipe:x", ipc::Role::connect).code() == Errc::invalid_argument);
    CHECK(ipc::open_channel("smoke://a", ipc::Role::connect).code() == Errc::invalid_argument);
    CHECK(ipc::open_channel("pipe:", ipc::Role::connect).code() == Errc::invalid_argument);
  }
}
