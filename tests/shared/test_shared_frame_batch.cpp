// Batch frames (protocol v5): several whole frames in one payload, packed within a limit and
// unpacked with every inner frame checked like any frame off the wire.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "ferry/shared/codec.hpp"
#include "ferry/shared/frame_batch.hpp"
#include "ferry/shared/messages.hpp"

using namespace ferry;

namespace {

Frame result_frame(std::uint64_t id, std::size_t bytes) {
  return msg::make_result_frame(msg::ResultHeader{1}, Bytes(bytes, static_cast<std::uint8_t>(id)),
                                id);
}

}  // namespace

TEST_SUITE("shared.frame_batch") {
  TEST_CASE("frames packed into one Batch come back in order, unchanged") {
    std::vector<Frame> in;
    for (std::uint64_t i = 1; i <= 50; ++i)
      in.push_back(result_frame(i, i * 3));
    in.push_back(make_frame(MessageKind::heartbeat, msg::Heartbeat{7, 1, 2}));
    const auto packed = pack_frames(in);
    REQUIRE(packed.size() == 1);
    CHECK(packed[0].header.kind == MessageKind::batch);
    CHECK(msg::validate_payload(FrameView{packed[0].header, packed[0].payload}));
    std::vector<Frame> out;
    REQUIRE(unpack_batch(packed[0], out));
    REQUIRE(out.size() == in.size());
    for (std::size_t i = 0; i < in.size(); ++i) {
      CHECK(out[i].header.kind == in[i].header.kind);
      CHECK(out[i].header.request_id == in[i].header.request_id);
      CHECK(out[i].header.length == in[i].payload.size());
      CHECK(out[i].payload == in[i].payload);
    }
  }

  TEST_CASE("a lone frame is not wrapped, and the limit splits a run into several batches") {
    const std::vector<Frame> one{result_frame(1, 10)};
    const auto p1 = pack_frames(one);
    REQUIRE(p1.size() == 1);
    CHECK(p1[0].header.kind == MessageKind::result);
    CHECK(p1[0].payload == one[0].payload);

    // Ten frames of 100 payload bytes (120 batched) under a 500-byte limit: 4 + 4 + 2.
    std::vector<Frame> ten;
    for (std::uint64_t i = 1; i <= 10; ++i) {
      Frame f;
      f.header.kind = MessageKind::data;
      f.header.request_id = i;
      f.payload.assign(100, 0xab);
      ten.push_back(std::move(f));
    }
    CHECK(batch_span(ten, 500) == 4);
    const auto p = pack_frames(ten, 500);
    REQUIRE(p.size() == 3);
    std::vector<Frame> back;
    for (const Frame& b : p) {
      CHECK(b.payload.size() <= 500);
      REQUIRE(unpack_batch(b, back, 500));
    }
    REQUIRE(back.size() == 10);
    for (std::uint64_t i = 0; i < 10; ++i)
      CHECK(back[i].header.request_id == i + 1);
    // A frame larger than the limit goes alone, as itself.
    std::vector<Frame> big{ten[0], result_frame(99, 2000), ten[1]};
    const auto pb = pack_frames(big, 500);
    REQUIRE(pb.size() == 3);
    CHECK(pb[1].header.kind == MessageKind::result);
  }

  TEST_CASE("malformed batches are errors naming why, and leave nothing behind") {
    std::vector<Frame> two{result_frame(1, 8), result_frame(2, 8)};
    const Frame good = make_batch(two);
    std::vector<Frame> out{result_frame(42, 1)};  // what was there stays
    auto expect = [&](const Frame& b, Errc code) {
      auto st = unpack_batch(b, out);
      REQUIRE_FALSE(st);
      CHECK(st.code() == code);
      CHECK(out.size() == 1);
      CHECK_FALSE(msg::validate_payload(FrameView{b.header, b.payload}));
    };
    SUBCASE("empty") {
      Frame b;
      b.header.kind = MessageKind::batch;
      expect(b, Errc::malformed_payload);
    }
    SUBCASE("truncated inside a frame") {
      Frame b = good;
      b.payload.resize(b.payload.size() - 3);
      expect(b, Errc::truncated);
    }
    SUBCASE("truncated inside a header") {
      Frame b = good;
      b.payload.resize(batched_size(two[0]) + 5);
      expect(b, Errc::truncated);
    }
    SUBCASE("bad magic") {
      Frame b = good;
      b.payload[batched_size(two[0])] ^= 0xff;
      expect(b, Errc::bad_magic);
    }
    SUBCASE("inner length over the limit") {
      Frame b = good;
      const std::uint32_t huge = 0x7fffffff;
      std::memcpy(b.payload.data() + 8, &huge, 4);
      expect(b, Errc::frame_too_large);
    }
    SUBCASE("a batch inside a batch") {
      const std::vector<Frame> nested{good, result_frame(3, 1)};
      expect(make_batch(nested), Errc::malformed_payload);
    }
    SUBCASE("a hello inside a batch") {
      const std::vector<Frame> hello{make_frame(MessageKind::hello, msg::Hello{}),
                                     result_frame(3, 1)};
      expect(make_batch(hello), Errc::malformed_payload);
    }
    SUBCASE("an inner frame of another protocol version") {
      Frame b = good;
      const std::uint16_t v = kProtocolVersion + 1;
      std::memcpy(b.payload.data() + 4, &v, 2);
      expect(b, Errc::bad_version);
    }
  }
}
