// The coordinator <-> worker protocol messages. Each travels as the payload of one frame
// whose kind names it (MessageKind::hello carries Hello, and so on).
//
// Threading/ownership: plain values.
#pragma once

#include <cstdint>
#include <string>

#include "ferry/shared/codec.hpp"
#include "ferry/shared/frame.hpp"

namespace ferry::msg {

// worker -> coordinator, first frame on a connection.
struct Hello {
  std::uint16_t protocol_version = kProtocolVersion;
  std::int32_t pid = 0;
  std::string host;
  std::string name;
  std::uint32_t slots = 1;
  std::uint64_t registry_hash = 0;  // hash of the sorted task names the worker can run
  template <class A>
  void serialize(A& ar) {
    ar(protocol_version, pid, host, name, slots, registry_hash);
  }
};

// coordinator -> worker: accepted.
struct Welcome {
  std::uint32_t worker_id = 0;
  std::string session;
  std::uint32_t heartbeat_ms = 0;          // the coordinator pings this often (0: local, no pings)
  std::uint32_t heartbeat_timeout_ms = 0;  // silence for this long means the link is lost
  // Per-worker initializer, run once before the first task (kNoFunction: none).
  std::uint32_t init_function = kNoFunction;
  Bytes init_args;
  static constexpr std::uint32_t kNoFunction = 0xffffffffu;
  template <class A>
  void serialize(A& ar) {
    ar(worker_id, session, heartbeat_ms, heartbeat_timeout_ms, init_function, init_args);
  }
};

// coordinator -> worker: refused, with the reason naming both sides' values.
struct Reject {
  std::string reason;
  template <class A>
  void serialize(A& ar) {
    ar(reason);
  }
};

// coordinator -> worker: run one task. The frame's request id is the task id.
struct Task {
  std::uint32_t attempt = 1;
  std::uint32_t function = 0;  // index into the sorted registry (same on both sides: hash-checked)
  bool batch = false;          // args is a vector of argument tuples (a chunk of a map)
  Bytes args;                  // cereal encoding of the argument tuple
  template <class A>
  void serialize(A& ar) {
    ar(attempt, function, batch, args);
  }
};

// worker -> coordinator: the task's value.
struct TaskResult {
  std::uint32_t attempt = 1;
  Bytes value;  // cereal encoding of the return value
  template <class A>
  void serialize(A& ar) {
    ar(attempt, value);
  }
};

// worker -> coordinator: the task threw (or could not be decoded / encoded).
struct TaskError {
  std::uint32_t attempt = 1;
  std::string type;  // exception type name
  std::string what;  // exception message
  std::int32_t pid = 0;
  std::string host;
  std::string stack;  // stack trace at the throw site, best effort
  template <class A>
  void serialize(A& ar) {
    ar(attempt, type, what, pid, host, stack);
  }
};

struct Heartbeat {
  std::uint64_t seq = 0;
  template <class A>
  void serialize(A& ar) {
    ar(seq);
  }
};

// coordinator -> worker: stop task <request id> if still queued.
struct Cancel {
  template <class A>
  void serialize(A&) {}
};

struct Shutdown {
  bool graceful = true;
  template <class A>
  void serialize(A& ar) {
    ar(graceful);
  }
};

// worker -> coordinator: one line of the worker's stdout (stream 1) or stderr (stream 2).
struct Log {
  std::uint8_t stream = 1;
  std::string line;
  template <class A>
  void serialize(A& ar) {
    ar(stream, line);
  }
};

// Decodes frame payload as the message its kind names; Errc::bad_kind if the kind differs.
template <class M>
Result<M> decode(const FrameView& f, MessageKind expected) {
  if (f.header.kind != expected) {
    return Error{Errc::bad_kind, "expected " + std::string(kind_name(expected)) + ", got " +
                                     std::string(kind_name(f.header.kind))};
  }
  return decode_value<M>(f.payload);
}

// Checks a payload decodes as the message its kind names (used by the fuzzer and by
// receivers that route on kind before decoding).
Status validate_payload(const FrameView& f);

}  // namespace ferry::msg
