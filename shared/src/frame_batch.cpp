#include "ferry/shared/frame_batch.hpp"

#include <algorithm>
#include <cstring>
#include <string>

namespace ferry {
Frame make_batch(std::span<const Frame> group) {
  Frame b;
  b.header.kind = MessageKind::batch;
  std::size_t total = 0;
  for (const Frame& f : group)
    total += batched_size(f);
  b.payload.resize(total);
  std::uint8_t* p = b.payload.data();
  for (const Frame& f : group) {
    FrameHeader h = f.header;
    h.length = static_cast<std::uint32_t>(f.payload.size());
    encode_header(h, p);
    if (!f.payload.empty()) std::memcpy(p + kHeaderSize, f.payload.data(), f.payload.size());
    p += batched_size(f);
  }
  b.header.length = static_cast<std::uint32_t>(total);
  return b;
}

std::size_t batch_span(std::span<const Frame> frames, std::size_t max_payload) noexcept {
  std::size_t n = 0, bytes = 0;
  while (n < frames.size() && bytes + batched_size(frames[n]) <= max_payload) {
    bytes += batched_size(frames[n]);
    ++n;
  }
  return std::max<std::size_t>(n, 1);
}

std::vector<Frame> pack_frames(std::span<const Frame> frames, std::size_t max_payload) {
  std::vector<Frame> out;
  while (!frames.empty()) {
    const std::size_t n = batch_span(frames, max_payload);
    if (n == 1) {
      out.push_back(frames.front());  // alone: as itself
    } else {
      out.push_back(make_batch(frames.first(n)));
    }
    frames = frames.subspan(n);
  }
  return out;
}

Status unpack_batch(const Frame& batch, std::vector<Frame>& out, std::size_t max_payload) {
  if (batch.header.kind != MessageKind::batch) {
    return Error{Errc::malformed_payload, "not a Batch frame"};
  }
  const ByteView all(batch.payload);
  if (all.empty()) return Error{Errc::malformed_payload, "an empty Batch"};
  const std::size_t first = out.size();
  auto fail = [&](Error e) {
    out.resize(first);
    return Status(std::move(e));
  };
  std::size_t at = 0;
  while (at < all.size()) {
    auto h = decode_header(all.subspan(at), max_payload);
    if (!h) return fail(Error{h.error().code, "frame in a Batch: " + h.error().detail});
    if (h->kind == MessageKind::batch || crosses_versions(static_cast<std::uint8_t>(h->kind))) {
      return fail(Error{Errc::malformed_payload, std::string("a Batch may not carry a ") +
                                                     std::string(kind_name(h->kind)) + " frame"});
    }
    const std::size_t have = all.size() - at - kHeaderSize;
    if (h->length > have) {
      return fail(Error{Errc::truncated, "frame in a Batch declares " + std::to_string(h->length) +
                                             " payload bytes, " + std::to_string(have) + " left"});
    }
    Frame& f = out.emplace_back();
    f.header = *h;
    const auto body = all.subspan(at + kHeaderSize, h->length);
    f.payload.assign(body.begin(), body.end());
    at += kHeaderSize + h->length;
  }
  return {};
}

}  // namespace ferry
