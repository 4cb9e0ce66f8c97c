// Encoding values and protocol messages to frames, and bounded decoding back.
//
// Threading: pure functions. Ownership: encode_* return owned buffers; decode_* copy out.
#pragma once

#include <cereal/types/map.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/unordered_map.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/vector.hpp>
#include <exception>
#include <span>
#include <string>

#include "ferry/shared/archive.hpp"
#include "ferry/shared/frame.hpp"

namespace ferry {

// Appends the cereal encoding of values to out.
template <class... Ts>
void encode_into(Bytes& out, const Ts&... values) {
  BufferOutputArchive ar(out);
  ar(values...);
}

template <class T>
Bytes encode_value(const T& value) {
  Bytes out;
  encode_into(out, value);
  return out;
}

// Decodes `out` from the front of `in`, advancing `in` past what was read. Bounded: see
// archive.hpp. Errors: LengthExceedsRemaining, MalformedPayload (with cereal's reason).
template <class T>
Status decode_prefix(ByteView& in, T& out) {
  try {
    BoundedInputArchive ar(in);
    ar(out);
    in = in.subspan(in.size() - ar.remaining());
    return {};
  } catch (const BoundsExceeded& e) {
    return Error{Errc::length_exceeds_remaining, e.what()};
  } catch (const std::bad_alloc&) {
    return Error{Errc::malformed_payload, "allocation failed while decoding"};
  } catch (const std::exception& e) {
    return Error{Errc::malformed_payload, e.what()};
  }
}

// Decodes exactly one T from all of `in`; leftover bytes are TrailingBytes.
template <class T>
Result<T> decode_value(ByteView in) {
  T out{};
  if (auto st = decode_prefix(in, out); !st) return std::move(st).error();
  if (!in.empty()) {
    return Error{Errc::trailing_bytes, std::to_string(in.size()) + " bytes left after the value"};
  }
  return out;
}

// The encoding of a std::vector<T> whose elements' encodings are given: a vector is its size
// then its elements, each as encode_value writes it. Lets a caller check items one at a time
// and send those that passed as one chunk without decoding them again.
inline Bytes encode_sequence(std::span<const Bytes> encoded_items) {
  std::size_t total = 0;
  for (const auto& item : encoded_items)
    total += item.size();
  Bytes out;
  out.reserve(total + sizeof(cereal::size_type));
  encode_into(out, cereal::make_size_tag(static_cast<cereal::size_type>(encoded_items.size())));
  for (const auto& item : encoded_items)
    out.insert(out.end(), item.begin(), item.end());
  return out;
}

// Builds a frame of the given kind whose payload is the encoding of msg.
template <class T>
Frame make_frame(MessageKind kind, const T& msg, std::uint64_t request_id = 0) {
  Frame f;
  f.header.kind = kind;
  f.header.request_id = request_id;
  encode_into(f.payload, msg);
  f.header.length = static_cast<std::uint32_t>(f.payload.size());
  return f;
}

}  // namespace ferry
