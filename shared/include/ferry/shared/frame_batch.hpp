// Several whole frames carried as the payload of one Batch frame (protocol v5), so a link
// whose transport costs per message (zmq between a pool and a remote worker) sends many tasks
// or results as one message.
//
//   Batch payload = frame 1 (20-byte header + payload) | frame 2 | ... , at least one frame.
//
// Every inner frame is checked as decode_header checks any frame (magic, version, kind,
// length), and may not itself be a Batch, a Hello or a Reject (the handshake is never
// batched). The Batch frame obeys the frame limit like any other, so packing never lets honest
// traffic exceed it and unpacking allocates only what arrived.
//
// Threading: pure functions over caller-owned values. Ownership: the results own their bytes.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "ferry/shared/config.hpp"
#include "ferry/shared/error.hpp"
#include "ferry/shared/frame.hpp"

namespace ferry {

// Bytes a frame takes inside a Batch payload.
inline std::size_t batched_size(const Frame& f) noexcept {
  return kHeaderSize + f.payload.size();
}

// How many of the leading frames one Batch of at most max_payload bytes holds (at least 1:
// a frame that fits with no other is sent as itself).
std::size_t batch_span(std::span<const Frame> frames,
                       std::size_t max_payload = kDefaultMaxFrame) noexcept;
// One Batch frame holding `group` (two or more frames), encoded in one pass.
Frame make_batch(std::span<const Frame> group);

// Packs `frames`, in order, into as few frames as the limit allows: consecutive frames go
// into one Batch while its payload stays within max_payload; a group of one goes as the frame
// itself (no Batch around a lone frame). Frames already over max_payload go alone too (the
// transport then refuses them, as it would have).
std::vector<Frame> pack_frames(std::span<const Frame> frames,
                               std::size_t max_payload = kDefaultMaxFrame);

// Appends the frames inside `batch` (a Batch frame) to `out`, in order. Errors (nothing is
// appended then): Truncated, BadMagic, BadVersion, BadKind, FrameTooLarge as
// for any frame; MalformedPayload for an empty batch or an inner Batch, Hello or Reject.
Status unpack_batch(const Frame& batch, std::vector<Frame>& out,
                    std::size_t max_payload = kDefaultMaxFrame);

}  // namespace ferry
