#include <doctest/doctest.h>

#include <algorithm>
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

    const Bytes args{1, 2, 3};
    const Bytes tv_wire = wire_of(msg::make_task_frame(msg::TaskHeader{2, 7, false}, args, 99));
    auto tv = decode_frame(tv_wire);
    REQUIRE(tv);
    CHECK(tv->header.request_id == 99);
    auto tb = msg::decode_task(*tv);
    REQUIRE(tb);
    CHECK(tb->header.attempt == 2);
    CHECK(tb->header.function == 7);
    CHECK(Bytes(tb->args.begin(), tb->args.end()) == args);

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
          f = make_frame(kind, msg::Welcome{3,
                                            "s",
                                            500,
                                            2500,
                                            msg::Welcome::kNoFunction,
                                            {},
                                            {0, 1},
                                            1 << 20,
                                            "ferry.s.res1-w3-"});
          break;
        case MessageKind::reject:
          f = make_frame(kind, msg::Reject{"no"});
          break;
        case MessageKind::result:
          f = msg::make_result_frame(msg::ResultHeader{1}, Bytes{9}, 0);
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

  TEST_CASE("a task payload is its header followed by the argument bytes, encoded once") {
    const Bytes args = encode_value(std::tuple<std::string, std::int64_t>{"seven", 7});
    const Frame f = msg::make_task_frame(msg::TaskHeader{3, 11, true}, args, 42);
    CHECK(f.header.kind == MessageKind::task);
    CHECK(f.header.request_id == 42);
    CHECK(f.header.length == f.payload.size());
    // attempt (4) + function (4) + batch (1), then the arguments with no second envelope.
    REQUIRE(f.payload.size() == 9 + args.size());
    CHECK(std::equal(args.begin(), args.end(), f.payload.begin() + 9));

    const Bytes wire = wire_of(f);
    auto v = decode_frame(wire);
    REQUIRE(v);
    auto t = msg::decode_task(*v);
    REQUIRE(t);
    CHECK(t->header.attempt == 3);
    CHECK(t->header.function == 11);
    CHECK(t->header.batch);
    // The view is exactly the argument bytes, inside the received buffer (not a copy).
    CHECK(t->args.size() == args.size());
    CHECK(t->args.data() == wire.data() + kHeaderSize + 9);
    CHECK(std::equal(args.begin(), args.end(), t->args.begin(), t->args.end()));
    auto decoded = decode_value<std::tuple<std::string, std::int64_t>>(t->args);
    REQUIRE(decoded);
    CHECK(std::get<0>(*decoded) == "seven");
    CHECK(std::get<1>(*decoded) == 7);

    // No arguments at all (a task without parameters encodes an empty tuple as nothing).
    const Frame empty = msg::make_task_frame(msg::TaskHeader{}, ByteView{}, 1);
    auto ev = msg::decode_task(FrameView{empty.header, empty.payload});
    REQUIRE(ev);
    CHECK(ev->args.empty());
  }

  TEST_CASE("a task or result held in a shared-memory object carries its handle, flagged") {
    const msg::ObjectHandle h{"ferry.1-2.arg-3", std::uint64_t{1} << 32};
    const Frame t = msg::make_task_frame(msg::TaskHeader{2, 5, false}, h, 8);
    CHECK((t.header.flags & kFrameObject) != 0);
    const Bytes wire = wire_of(t);
    auto v = decode_frame(wire);
    REQUIRE(v);
    auto tv = msg::decode_task(*v);
    REQUIRE(tv);
    CHECK(tv->header.function == 5);
    CHECK(tv->args.empty());
    REQUIRE(tv->object);
    CHECK(tv->object->name == h.name);
    CHECK(tv->object->size == h.size);

    const Frame r = msg::make_result_frame(msg::ResultHeader{3}, h, 9);
    auto rv = msg::decode_result(FrameView{r.header, r.payload});
    REQUIRE(rv);
    CHECK(rv->header.attempt == 3);
    REQUIRE(rv->object);
    CHECK(rv->object->name == h.name);

    // Unflagged, the same body is the bytes themselves; flagged garbage is a named error.
    Frame plain = msg::make_task_frame(msg::TaskHeader{}, ByteView{}, 1);
    plain.header.flags = kFrameObject;
    plain.payload.push_back(0xff);
    msg::finish_frame(plain);
    auto bad = msg::decode_task(FrameView{plain.header, plain.payload});
    REQUIRE_FALSE(bad);
    CHECK(bad.error().detail.find("object handle") != std::string::npos);
  }

  TEST_CASE("a result payload is its header followed by the value bytes") {
    const Bytes value = encode_value(std::vector<std::int64_t>{1, 2, 3});
    const Frame f = msg::make_result_frame(msg::ResultHeader{2}, value, 77);
    CHECK(f.header.kind == MessageKind::result);
    CHECK(f.header.length == f.payload.size());
    REQUIRE(f.payload.size() == 4 + value.size());
    const Bytes wire = wire_of(f);
    auto v = decode_frame(wire);
    REQUIRE(v);
    auto r = msg::decode_result(*v);
    REQUIRE(r);
    CHECK(r->header.attempt == 2);
    CHECK(r->value.data() == wire.data() + kHeaderSize + 4);
    CHECK(std::equal(value.begin(), value.end(), r->value.begin(), r->value.end()));

    // Built in place (the worker encodes the value straight into the frame): same bytes.
    Frame g = msg::start_result_frame(msg::ResultHeader{2}, 77);
    encode_into(g.payload, std::vector<std::int64_t>{1, 2, 3});
    msg::finish_frame(g);
    CHECK(g.header.length == g.payload.size());
    CHECK(wire_of(g) == wire);
  }

  TEST_CASE("a task or result header cut short is a named error, and the kind is checked") {
    const Bytes args{9, 9, 9};
    const Frame t = msg::make_task_frame(msg::TaskHeader{1, 2, false}, args, 5);
    for (std::size_t n = 0; n < 9; ++n) {
      CAPTURE(n);
      auto r = msg::decode_task(FrameView{t.header, ByteView(t.payload.data(), n)});
      REQUIRE_FALSE(r);
      CHECK(r.code() == Errc::length_exceeds_remaining);
      CHECK(r.error().message().find("Task header") != std::string::npos);
    }
    // A batch flag that is not a bool is malformed, not undefined behaviour.
    Bytes bad = t.payload;
    bad[8] = 7;
    CHECK(msg::decode_task(FrameView{t.header, bad}).code() == Errc::malformed_payload);

    const Frame r = msg::make_result_frame(msg::ResultHeader{1}, args, 5);
    for (std::size_t n = 0; n < 4; ++n) {
      CAPTURE(n);
      auto d = msg::decode_result(FrameView{r.header, ByteView(r.payload.data(), n)});
      CHECK(d.code() == Errc::length_exceeds_remaining);
      CHECK(msg::validate_payload(FrameView{r.header, ByteView(r.payload.data(), n)}).code() ==
            Errc::length_exceeds_remaining);
    }
    CHECK(msg::decode_result(FrameView{t.header, t.payload}).code() == Errc::bad_kind);
    CHECK(msg::decode_task(FrameView{r.header, r.payload}).code() == Errc::bad_kind);
    CHECK(msg::validate_payload(FrameView{t.header, t.payload}));
    CHECK(msg::validate_payload(FrameView{r.header, r.payload}));
  }

  TEST_CASE(
      "task and result headers are cereal's encoding, read with the bounded archive's checks") {
    // messages.cpp lays the headers out by hand (an archive costs more to set up than the
    // header costs to read): the bytes, the values and the errors must stay cereal's.
    for (const msg::TaskHeader h : {msg::TaskHeader{1, 0, false}, msg::TaskHeader{7, 12345, true},
                                    msg::TaskHeader{0xffffffffu, 0xdeadbeefu, false}}) {
      const Frame f = msg::make_task_frame(h, ByteView{}, 1);
      CHECK(f.payload == encode_value(h));
      auto ours = msg::decode_task(FrameView{f.header, f.payload});
      REQUIRE(ours);
      CHECK(ours->header.attempt == h.attempt);
      CHECK(ours->header.function == h.function);
      CHECK(ours->header.batch == h.batch);
    }
    for (const std::uint32_t a : {0u, 2u, 0x80000001u}) {
      const Frame f = msg::make_result_frame(msg::ResultHeader{a}, ByteView{}, 1);
      CHECK(f.payload == encode_value(msg::ResultHeader{a}));
      auto ours = msg::decode_result(FrameView{f.header, f.payload});
      REQUIRE(ours);
      CHECK(ours->header.attempt == a);
    }
    const Frame t = msg::make_task_frame(msg::TaskHeader{3, 4, true}, ByteView{}, 1);
    Bytes cut_bool = t.payload;
    cut_bool[8] = 2;
    std::vector<Bytes> broken{cut_bool};
    for (std::size_t n = 0; n < t.payload.size(); ++n)
      broken.emplace_back(t.payload.begin(), t.payload.begin() + static_cast<std::ptrdiff_t>(n));
    for (const Bytes& b : broken) {
      CAPTURE(b.size());
      ByteView in = b;
      msg::TaskHeader h;
      const Status archive = decode_prefix(in, h);
      const auto ours = msg::decode_task(FrameView{t.header, b});
      REQUIRE_FALSE(archive);
      REQUIRE_FALSE(ours);
      CHECK(ours.code() == archive.code());
      CHECK(ours.error().detail == "Task header: " + archive.error().detail);
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

  TEST_CASE("hello and reject frames of another version pass the header check") {
    // The handshake answers a worker of another version by name; only those two kinds cross.
    for (auto kind : {MessageKind::hello, MessageKind::reject}) {
      CAPTURE(kind_name(kind));
      Frame f = kind == MessageKind::hello ? make_frame(kind, msg::Hello{1, 5, "h", "n", 1, 2})
                                           : make_frame(kind, msg::Reject{"too old"});
      f.header.version = 1;
      const Bytes wire = wire_of(f);
      auto v = decode_frame(wire);
      REQUIRE(v);
      CHECK(v->header.version == 1);
      CHECK(msg::validate_payload(*v));
    }
    for (auto kind : {MessageKind::welcome, MessageKind::task, MessageKind::result,
                      MessageKind::error, MessageKind::data}) {
      CAPTURE(kind_name(kind));
      FrameHeader h;
      h.kind = kind;
      h.version = 1;
      CHECK(decode_header(encode_header(h)).code() == Errc::bad_version);
    }
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

    // The same claim inside a whole Error frame (as it would arrive on a channel).
    Bytes error_payload;
    encode_into(error_payload, std::uint32_t{1});
    error_payload.insert(error_payload.end(), payload.begin(), payload.end());
    FrameHeader h;
    h.kind = MessageKind::error;
    const Bytes error_wire = encode_frame(h, error_payload);
    auto v = decode_frame(error_wire);
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
