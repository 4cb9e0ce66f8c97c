// Limits and defaults shared by every layer.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ferry {

inline constexpr std::uint16_t kProtocolVersion = 1;
// A frame whose declared payload is larger than this is refused before anything is read.
inline constexpr std::size_t kDefaultMaxFrame = std::size_t{64} << 20;  // 64 MiB

}  // namespace ferry
