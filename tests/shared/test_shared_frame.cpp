#include <doctest/doctest.h>

#include <chrono>
#include <cstring>
#include <map>
#include <random>

#include "ferry/shared/messages.hpp"

using namespace ferry;

namespace {
Bytes wire_of(const Frame& f) {
  return encode_frame(f.header, f.payload);
}
}  // namespace

TEST_SUITE("shared.frame") {
  TEST_CASE("every protocol message survives an encode/decode round trip") {
    msg::Hello h{kProtocolVersion, 42, "host-a", "w1", 3, 0xdeadbeefULL};
    const Bytes hv_wire = wire_of(make_frame(MessageKind::hello, h));
    auto hv = decode_frame(hv_wire);
    REQUIRE(hv);
    auto hb = msg::decode<msg::Hello>(*hv, MessageKind::hello);
    REQUIRE(hb);
    CHECK(hb->pid == 42);
    CHECK(hb->host == "host-a");
    CHECK(hb->name == "w1");
    CHECK(hb->slots == 3);
    CHECK(hb->registry_hash == 0xdeadbeefULL);

    msg::Task t{2, 7, false, Bytes{1, 2, 3}};
    const Bytes tv_wire = wire_of(make_frame(MessageKind::task, t, 99));
    auto tv = decode_frame(tv_wire);
    REQUIRE(tv);
    CHECK(tv->header.request_id == 99);
    auto tb = msg::decode<msg::Task>(*tv, MessageKind::task);
    REQUIRE(tb);
    CHECK(tb->attempt == 2);
    CHECK(tb->function == 7);
    CHECK(tb->args == Bytes{1, 2, 3});

    msg::TaskError e{1, "std::runtime_error", "boom 5", 7, "h", "#0 f"};
    const Bytes ev_wire = wire_of(make_frame(MessageKind::error, e, 5));
    auto ev = decode_frame(ev_wire);
    REQUIRE(ev);
    auto eb = msg::decode<msg::TaskError>(*ev, MessageKind::error);
    REQUIRE(eb);
    CHECK(eb->what == "boom 5");
    CHECK(eb->stack == "#0 f");

    for (auto kind :
         {MessageKind::welcome, MessageKind::reject, MessageKind::result, MessageKind::heartbeat,
          MessageKind::cancel, MessageKind::shutdown, MessageKind::log}) {
      Frame f;
      f.header.kind = kind;
      switch (kind) {
        case MessageKind::welcome:
          f = make_frame(kind, msg::Welcome{3, "s", 500, 2500, msg::Welcome::kNoFunction, {}});
          break;
        case MessageKind::reject:
          f = make_frame(kind, msg::Reject{"no"});
          break;
        case MessageKind::result:
          f = make_frame(kind, msg::TaskResult{1, Bytes{9}});
          break;
        case MessageKind::heartbeat:
          f = make_frame(kind, msg::Heartbeat{12});
          break;
        case MessageKind::cancel:
          f = make_frame(kind, msg::Cancel{});
          break;
        case MessageKind::shutdown:
          f = make_frame(kind, msg::Shutdown{false});
          break;
        default:
          f = make_frame(kind, msg::Log{2, "line"});
          break;
      }
      const Bytes v_wire = wire_of(f);
      auto v = decode_frame(v_wire);
      REQUIRE(v);
      CHECK(msg::validate_payload(*v));
    }
  }

  TEST_CASE("a decoded message of the wrong kind is BadKind") {
    const Bytes v_wire = wire_of(make_frame(MessageKind::heartbeat, msg::Heartbeat{1}));
    auto v = decode_frame(v_wire);
    REQUIRE(v);
    auto r = msg::decode<msg::Hello>(*v, MessageKind::hello);
    CHECK(r.code() == Errc::bad_kind);
  }

  TEST_CASE("a header shorter than 20 bytes is Truncated") {
    const Bytes wire = wire_of(make_frame(MessageKind::heartbeat, msg::Heartbeat{1}));
    for (std::size_t n = 0; n < kHeaderSize; ++n) {
      CHECK(decode_header(ByteView(wire.data(), n)).code() == Errc::truncated);
    }
  }

  TEST_CASE("a payload shorter than declared is Truncated, longer is TrailingBytes") {
    Bytes wire = wire_of(make_frame(MessageKind::log, msg::Log{1, "hello world"}));
    CHECK(decode_frame(ByteView(wire.data(), wire.size() - 1)).code() == Errc::truncated);
    wire.push_back(0);
    CHECK(decode_frame(wire).code() == Errc::trailing_bytes);
  }

  TEST_CASE("wrong magic is BadMagic") {
    Bytes wire = wire_of(make_frame(MessageKind::heartbeat, msg::Heartbeat{1}));
    wire[0] ^= 0xff;
    auto r = decode_frame(wire);
    CHECK(r.code() == Errc::bad_magic);
    CHECK(errc_name(r.code()) == "BadMagic");
  }

  TEST_CASE("another protocol version is BadVersion and the message names both versions") {
    Frame f = make_frame(MessageKind::heartbeat, msg::Heartbeat{1});
    f.header.version = kProtocolVersion + 1;
    const Bytes r_wire = wire_of(f);
    auto r = decode_frame(r_wire);
    REQUIRE(r.code() == Errc::bad_version);
    CHECK(r.error().detail.find("v" + std::to_string(kProtocolVersion + 1)) != std::string::npos);
    CHECK(r.error().detail.find("v" + std::to_string(kProtocolVersion)) != std::string::npos);
  }

  TEST_CASE("an unknown kind is BadKind") {
    Bytes wire = wire_of(make_frame(MessageKind::heartbeat, msg::Heartbeat{1}));
    wire[6] = 0xee;
    CHECK(decode_frame(wire).code() == Errc::bad_kind);
    wire[6] = 0;
    CHECK(decode_frame(wire).code() == Errc::bad_kind);
  }

  TEST_CASE("a declared length above the maximum is FrameTooLarge before any payload is read") {
    FrameHeader h;
    h.kind = MessageKind::data;
    h.length = 0xffffffffu;
    const auto hb = encode_header(h);
    // Only the header exists: the length check must not need the payload.
    CHECK(decode_header(hb).code() == Errc::frame_too_large);
    CHECK(decode_header(hb, 0xffffffffu));
    h.length = 1024;
    CHECK(decode_header(encode_header(h), 1023).code() == Errc::frame_too_large);
    CHECK(decode_header(encode_header(h), 1024));
  }

  TEST_CASE("the default maximum frame is 64 MiB") {
    FrameHeader h;
    h.length = 64u << 20;
    CHECK(decode_header(encode_header(h)));
    h.length = (64u << 20) + 1;
    CHECK(decode_header(encode_header(h)).code() == Errc::frame_too_large);
  }

  TEST_CASE("a 9-byte payload claiming a 2^40-element vector fails fast without allocating") {
    Bytes payload(9, 0);
    const std::uint64_t huge = std::uint64_t{1} << 40;
    std::memcpy(payload.data(), &huge, sizeof huge);
    const auto t0 = std::chrono::steady_clock::now();
    auto r = decode_value<std::vector<std::uint64_t>>(payload);
    auto r2 = decode_value<std::vector<std::string>>(payload);
    auto r3 = decode_value<std::string>(payload);
    auto r4 = decode_value<std::map<std::string, int>>(payload);
    const auto dt = std::chrono::steady_clock::now() - t0;
    CHECK(r.code() == Errc::length_exceeds_remaining);
    CHECK(r2.code() == Errc::length_exceeds_remaining);
    CHECK(r3.code() == Errc::length_exceeds_remaining);
    CHECK(r4.code() == Errc::length_exceeds_remaining);
    CHECK(dt < std::chrono::milliseconds(100));

    // The same claim inside a whole Task frame (as it would arrive on a channel).
    Bytes task_payload;
    encode_into(task_payload, std::uint32_t{1}, std::uint32_t{0});
    task_payload.insert(task_payload.end(), payload.begin(), payload.end());
    FrameHeader h;
    h.kind = MessageKind::task;
    const Bytes task_wire = encode_frame(h, task_payload);
    auto v = decode_frame(task_wire);
    REQUIRE(v);
    CHECK(msg::validate_payload(*v).code() == Errc::length_exceeds_remaining);
  }

  TEST_CASE("garbage payloads are errors, never crashes") {
    std::mt19937_64 rng(12345);
    int failures = 0;
    for (int i = 0; i < 2000; ++i) {
      Bytes p(static_cast<std::size_t>(rng() % 64));
      for (auto& b : p)
        b = static_cast<std::uint8_t>(rng());
      for (auto kind : {MessageKind::hello, MessageKind::task, MessageKind::error, MessageKind::log,
                        MessageKind::welcome}) {
        FrameHeader h;
        h.kind = kind;
        const Bytes wire = encode_frame(h, p);
        auto v = decode_frame(wire);
        REQUIRE(v);
        const auto st = msg::validate_payload(*v);
        if (!st) {
          ++failures;
          CHECK((st.code() == Errc::length_exceeds_remaining || st.code() == Errc::trailing_bytes ||
                 st.code() == Errc::malformed_payload));
        }
      }
    }
    CHECK(failures > 0);
  }

  TEST_CASE("error values carry their name and reason") {
    Error e{Errc::channel_closed, "peer exited"};
    CHECK(e.message() == "ChannelClosed: peer exited");
    Result<int> r{Errc::timeout};
    CHECK_THROWS_AS((void)r.value(), Exception);
    Result<int> ok{5};
    CHECK(ok.value() == 5);
  }
}
