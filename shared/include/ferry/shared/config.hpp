// Limits and defaults shared by every layer.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ferry {

// v2: task and result payloads are a small header followed by the raw argument or value bytes
// (v1 wrapped those bytes in a second, length-prefixed encoding).
// v3: a worker follows its Hello with an Offer (the tasks it serves, with signature hashes);
// the Welcome maps the pool's task numbers to the worker's.
// v4: a worker's answer to a heartbeat carries its CPU seconds and resident bytes; a task's
// arguments or a result's value may travel as a shared-memory object (frame flag
// kFrameObject: the body is an msg::ObjectHandle), and the Welcome says whether and how a
// worker may make them (object_threshold, object_prefix); a chunk's failed item carries its
// stack trace (ItemError::stack).
// v5: a Batch frame carries several whole frames (frame_batch.hpp): tasks from a pool to a
// remote worker, results back, one zmq message for many; a remote worker fetches an
// ObjectRef's bytes from the coordinator in chunks (ObjectFetch, answered by ObjectData); a
// task frame's flag kFrameRefArgs marks arguments where ObjectRefs feed T / const T&.
inline constexpr std::uint16_t kProtocolVersion = 5;
// Arguments and results above this many encoded bytes travel between processes on one host
// as shared-memory objects (PoolOptions::object_threshold).
inline constexpr std::size_t kDefaultObjectThreshold = std::size_t{1} << 20;  // 1 MiB
// A frame whose declared payload is larger than this is refused before anything is read.
inline constexpr std::size_t kDefaultMaxFrame = std::size_t{64} << 20;  // 64 MiB

}  // namespace ferry
