// The wire frame: a fixed 20-byte little-endian header followed by a payload.
//
//   offset size field
//        0    4 magic "FRRY"
//        4    2 protocol version
//        6    1 kind (MessageKind)
//        7    1 flags
//        8    4 payload length (bytes after the header)
//       12    8 request id (task id for Task/Result/Error/Cancel, else 0)
//
// Threading: pure functions over caller-owned buffers. Ownership: Frame owns its payload.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "ferry/shared/config.hpp"
#include "ferry/shared/error.hpp"

namespace ferry {

static_assert(std::endian::native == std::endian::little,
              "ferry's wire format is little-endian; big-endian hosts need byte swapping");

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;

inline constexpr std::uint32_t kFrameMagic = 0x59525246;  // "FRRY" read as little-endian
inline constexpr std::size_t kHeaderSize = 20;

enum class MessageKind : std::uint8_t {
  hello = 1,
  welcome,
  reject,
  task,
  result,
  error,
  heartbeat,
  cancel,
  shutdown,
  log,
  data,          // a user payload on a typed channel
  offer,         // worker -> coordinator after Hello: the tasks it serves (v3)
  batch,         // several whole frames in one payload, between a pool and a remote worker (v5)
  object_fetch,  // remote worker -> coordinator: a chunk of an ObjectRef's bytes, please (v5)
  object_data,   // coordinator -> remote worker: that chunk, or why not (v5)
  last_ = object_data,
};
std::string_view kind_name(MessageKind k) noexcept;
constexpr bool is_known_kind(std::uint8_t k) noexcept {
  return k >= 1 && k <= static_cast<std::uint8_t>(MessageKind::last_);
}

// Hello and Reject frames pass the header's version check whatever version they carry: the
// handshake compares versions itself and answers with a Reject that names both, which a worker
// of another version can still read. Their payloads (Hello, Reject) therefore keep one layout
// in every protocol version.
constexpr bool crosses_versions(std::uint8_t kind) noexcept {
  return kind == static_cast<std::uint8_t>(MessageKind::hello) ||
         kind == static_cast<std::uint8_t>(MessageKind::reject);
}

// FrameHeader::flags bits. kFrameObject: the body of a task or result frame (after its
// TaskHeader or ResultHeader) is an msg::ObjectHandle naming a shared-memory object that
// holds the argument or value bytes, instead of the bytes themselves.
inline constexpr std::uint8_t kFrameObject = 0x01;
// kFrameRefArgs (v5): a task frame's arguments are a tuple of task_detail::RefOr
// (msg::TaskHeader::ref_args): some fed by an ObjectRef where the task takes the value.
inline constexpr std::uint8_t kFrameRefArgs = 0x02;

struct FrameHeader {
  std::uint16_t version = kProtocolVersion;
  MessageKind kind = MessageKind::data;
  std::uint8_t flags = 0;
  std::uint32_t length = 0;
  std::uint64_t request_id = 0;
};

using HeaderBytes = std::array<std::uint8_t, kHeaderSize>;

// Writes the header (with magic) into 20 bytes.
void encode_header(const FrameHeader& h, std::uint8_t* out) noexcept;
HeaderBytes encode_header(const FrameHeader& h) noexcept;

// Validates and parses a header. Checks, in order: enough bytes (Truncated), magic (BadMagic),
// version (BadVersion, except for crosses_versions kinds: the header keeps the version they
// carry), kind (BadKind), length <= max_payload (FrameTooLarge). Nothing is allocated; a
// transport calls this before it reads or reserves room for the payload.
Result<FrameHeader> decode_header(ByteView bytes, std::size_t max_payload = kDefaultMaxFrame);

// A frame whose payload has been received in full.
struct Frame {
  FrameHeader header;
  Bytes payload;

  MessageKind kind() const noexcept { return header.kind; }
  std::uint64_t request_id() const noexcept { return header.request_id; }
};

// A whole frame (header + payload) in one contiguous buffer, as a view.
struct FrameView {
  FrameHeader header;
  ByteView payload;
};

// Parses a complete frame from one buffer: header checks as decode_header, then the buffer
// must hold exactly header.length payload bytes (Truncated if fewer, TrailingBytes if more).
Result<FrameView> decode_frame(ByteView bytes, std::size_t max_payload = kDefaultMaxFrame);
// A view into a temporary would dangle: keep the buffer alive and pass it as an lvalue.
Result<FrameView> decode_frame(Bytes&& bytes, std::size_t max_payload = kDefaultMaxFrame) = delete;

// Serialises a whole frame (header + payload) into one buffer.
Bytes encode_frame(const FrameHeader& h, ByteView payload);

}  // namespace ferry
