// Limits and defaults shared by every layer.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ferry {

// v2: task and result payloads are a small header followed by the raw argument or value bytes
// (v1 wrapped those bytes in a second, length-prefixed encoding).
// v3: a worker follows its Hello with an Offer (the tasks it serves, with signature hashes);
// the Welcome maps the pool's task numbers to the worker's.
// v4: a chunk's failed item (ItemError) carries the stack trace of its throw site.
inline constexpr std::uint16_t kProtocolVersion = 4;
// A frame whose declared payload is larger than this is refused before anything is read.
inline constexpr std::size_t kDefaultMaxFrame = std::size_t{64} << 20;  // 64 MiB

}  // namespace ferry
