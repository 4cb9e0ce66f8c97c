#include "ferry/shared/frame.hpp"

#include <cstring>
#include <string>

namespace ferry {

std::string_view kind_name(MessageKind k) noexcept {
  switch (k) {
    case MessageKind::hello:
      return "Hello";
    case MessageKind::welcome:
      return "Welcome";
    case MessageKind::reject:
      return "Reject";
    case MessageKind::task:
      return "Task";
    case MessageKind::result:
      return "Result";
    case MessageKind::error:
      return "Error";
    case MessageKind::heartbeat:
      return "Heartbeat";
    case MessageKind::cancel:
      return "Cancel";
    case MessageKind::shutdown:
      return "Shutdown";
    case MessageKind::log:
      return "Log";
    case MessageKind::data:
      return "Data";
    case MessageKind::offer:
      return "Offer";
    case MessageKind::batch:
      return "Batch";
    case MessageKind::object_fetch:
      return "ObjectFetch";
    case MessageKind::object_data:
      return "ObjectData";
  }
  return "Unknown";
}

namespace {
template <class T>
void put(std::uint8_t* out, std::size_t off, T v) noexcept {
  std::memcpy(out + off, &v, sizeof v);
}
template <class T>
T get(const std::uint8_t* in, std::size_t off) noexcept {
  T v;
  std::memcpy(&v, in + off, sizeof v);
  return v;
}
}  // namespace

void encode_header(const FrameHeader& h, std::uint8_t* out) noexcept {
  put(out, 0, kFrameMagic);
  put(out, 4, h.version);
  put(out, 6, static_cast<std::uint8_t>(h.kind));
  put(out, 7, h.flags);
  put(out, 8, h.length);
  put(out, 12, h.request_id);
}

HeaderBytes encode_header(const FrameHeader& h) noexcept {
  HeaderBytes b;
  encode_header(h, b.data());
  return b;
}

Result<FrameHeader> decode_header(ByteView bytes, std::size_t max_payload) {
  if (bytes.size() < kHeaderSize) {
    return Error{Errc::truncated, "header needs " + std::to_string(kHeaderSize) + " bytes, got " +
                                      std::to_string(bytes.size())};
  }
  const std::uint8_t* p = bytes.data();
  if (get<std::uint32_t>(p, 0) != kFrameMagic) {
    return Error{Errc::bad_magic, "not a ferry frame"};
  }
  FrameHeader h;
  h.version = get<std::uint16_t>(p, 4);
  const auto kind = get<std::uint8_t>(p, 6);
  if (h.version != kProtocolVersion && !crosses_versions(kind)) {
    return Error{Errc::bad_version, "peer speaks protocol v" + std::to_string(h.version) +
                                        ", this build speaks v" + std::to_string(kProtocolVersion)};
  }
  if (!is_known_kind(kind)) {
    return Error{Errc::bad_kind, "unknown message kind " + std::to_string(kind)};
  }
  h.kind = static_cast<MessageKind>(kind);
  h.flags = get<std::uint8_t>(p, 7);
  h.length = get<std::uint32_t>(p, 8);
  h.request_id = get<std::uint64_t>(p, 12);
  if (h.length > max_payload) {
    return Error{Errc::frame_too_large, "frame declares " + std::to_string(h.length) +
                                            " payload bytes, maximum is " +
                                            std::to_string(max_payload)};
  }
  return h;
}

Result<FrameView> decode_frame(ByteView bytes, std::size_t max_payload) {
  auto h = decode_header(bytes, max_payload);
  if (!h) return std::move(h).error();
  const std::size_t have = bytes.size() - kHeaderSize;
  if (have < h->length) {
    return Error{Errc::truncated, "frame declares " + std::to_string(h->length) +
                                      " payload bytes, " + std::to_string(have) + " arrived"};
  }
  if (have > h->length) {
    return Error{Errc::trailing_bytes,
                 std::to_string(have - h->length) + " bytes after the declared payload"};
  }
  return FrameView{*h, bytes.subspan(kHeaderSize, h->length)};
}

Bytes encode_frame(const FrameHeader& h, ByteView payload) {
  Bytes out(kHeaderSize + payload.size());
  FrameHeader hh = h;
  hh.length = static_cast<std::uint32_t>(payload.size());
  encode_header(hh, out.data());
  if (!payload.empty()) std::memcpy(out.data() + kHeaderSize, payload.data(), payload.size());
  return out;
}

}  // namespace ferry
