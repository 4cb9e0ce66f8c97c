// cereal archives for ferry's wire format.
//
// BufferOutputArchive appends to a Bytes buffer (no iostreams on the hot path).
// BoundedInputArchive reads from a byte view and refuses, before allocating, any size tag
// (container or string length) larger than the bytes that remain: a 9-byte payload cannot
// make it reserve 2^40 elements. Reading past the end is a LengthExceedsRemaining error.
// Containers of empty types (0 bytes per element on the wire) are therefore refused when
// they claim more elements than bytes remain; ferry's own messages never contain them.
//
// Threading: an archive is used by one thread. Ownership: the output archive appends to a
// buffer the caller owns; the input archive borrows its view for its lifetime.
#pragma once

#include <algorithm>
#include <cereal/cereal.hpp>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "ferry/shared/frame.hpp"

namespace ferry {

// Thrown inside the input archive when a length claims more than remains; decode() turns it
// into Errc::length_exceeds_remaining.
struct BoundsExceeded : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class BufferOutputArchive
    : public cereal::OutputArchive<BufferOutputArchive, cereal::AllowEmptyClassElision> {
 public:
  explicit BufferOutputArchive(Bytes& out)
      : cereal::OutputArchive<BufferOutputArchive, cereal::AllowEmptyClassElision>(this),
        out_(out) {}

  void saveBinary(const void* data, std::size_t size) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    // Room first, so the insert below never reallocates. GCC 12 misreads the reallocating
    // branch of vector's range insert when it sees the vector still empty (a value encoded
    // into a fresh Bytes, all inlined into the caller) and reported a bogus, hundreds of
    // lines long -Wstringop-overflow in users' optimised builds (tests/headers/user_codec.cpp);
    // with the room reserved just above, it drops that branch. Doubling keeps appends
    // amortized O(1).
    if (out_.capacity() - out_.size() < size) {
      out_.reserve(std::max(out_.size() + size, 2 * out_.capacity()));
    }
    out_.insert(out_.end(), p, p + size);
  }

 private:
  Bytes& out_;
};

class BoundedInputArchive
    : public cereal::InputArchive<BoundedInputArchive, cereal::AllowEmptyClassElision> {
 public:
  explicit BoundedInputArchive(ByteView in)
      : cereal::InputArchive<BoundedInputArchive, cereal::AllowEmptyClassElision>(this),
        pos_(in.data()),
        end_(in.data() + in.size()) {}

  void loadBinary(void* data, std::size_t size) {
    if (size > remaining()) {
      throw BoundsExceeded("needs " + std::to_string(size) + " bytes, " +
                           std::to_string(remaining()) + " remain");
    }
    if (size != 0) std::memcpy(data, pos_, size);
    pos_ += size;
  }
  std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - pos_); }

 private:
  const std::uint8_t* pos_;
  const std::uint8_t* end_;
};

template <class T>
inline std::enable_if_t<std::is_arithmetic_v<T>> CEREAL_SAVE_FUNCTION_NAME(BufferOutputArchive& ar,
                                                                           const T& t) {
  ar.saveBinary(std::addressof(t), sizeof(t));
}
template <class T>
inline std::enable_if_t<std::is_arithmetic_v<T>> CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar,
                                                                           T& t) {
  if constexpr (std::is_same_v<T, bool>) {
    // Any byte but 0 or 1 in a bool would be undefined behaviour: it is malformed input.
    std::uint8_t b = 0;
    ar.loadBinary(&b, 1);
    if (b > 1) throw cereal::Exception("byte " + std::to_string(b) + " is not a bool");
    t = b != 0;
  } else {
    ar.loadBinary(std::addressof(t), sizeof(t));
  }
}
template <class Archive, class T>
inline CEREAL_ARCHIVE_RESTRICT(BoundedInputArchive, BufferOutputArchive)
    CEREAL_SERIALIZE_FUNCTION_NAME(Archive& ar, cereal::NameValuePair<T>& t) {
  ar(t.value);
}
template <class T>
inline void CEREAL_SAVE_FUNCTION_NAME(BufferOutputArchive& ar, const cereal::SizeTag<T>& t) {
  ar(t.size);
}
template <class T>
inline void CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, cereal::SizeTag<T>& t) {
  ar(t.size);
  // Every element occupies at least one byte on the wire: refuse before the caller resizes.
  if (static_cast<std::uint64_t>(t.size) > ar.remaining()) {
    throw BoundsExceeded("length " + std::to_string(static_cast<std::uint64_t>(t.size)) +
                         " claims more than the " + std::to_string(ar.remaining()) +
                         " bytes that remain");
  }
}
template <class T>
inline void CEREAL_SAVE_FUNCTION_NAME(BufferOutputArchive& ar, const cereal::BinaryData<T>& bd) {
  ar.saveBinary(bd.data, static_cast<std::size_t>(bd.size));
}
template <class T>
inline void CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, cereal::BinaryData<T>& bd) {
  ar.loadBinary(bd.data, static_cast<std::size_t>(bd.size));
}

}  // namespace ferry

CEREAL_REGISTER_ARCHIVE(ferry::BufferOutputArchive)
CEREAL_REGISTER_ARCHIVE(ferry::BoundedInputArchive)
CEREAL_SETUP_ARCHIVE_TRAITS(ferry::BoundedInputArchive, ferry::BufferOutputArchive)
