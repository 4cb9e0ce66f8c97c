// The coordinator <-> worker protocol messages. Each travels as the payload of one frame
// whose kind names it (MessageKind::hello carries Hello, and so on). Task and result frames
// carry a small header followed by bytes that are already an encoding (TaskHeader,
// ResultHeader); their helpers below are the one place that lays them out.
//
// Threading/ownership: plain values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ferry/shared/codec.hpp"
#include "ferry/shared/frame.hpp"

namespace ferry::msg {

// worker -> coordinator, first frame on a connection. Its layout is the same in every
// protocol version (frame.hpp, crosses_versions): append nothing, reorder nothing.
struct Hello {
  std::uint16_t protocol_version = kProtocolVersion;
  std::int32_t pid = 0;
  std::string host;
  std::string name;
  std::uint32_t slots = 1;
  std::uint64_t registry_hash = 0;  // of the tasks it serves (informational since v3: Offer)
  template <class A>
  void serialize(A& ar) {
    ar(protocol_version, pid, host, name, slots, registry_hash);
  }
};

// One task a worker serves: its name, readable signature and signature hash (TaskEntry).
struct TaskOffer {
  std::string name;
  std::string signature;
  std::uint64_t signature_hash = 0;
  template <class A>
  void serialize(A& ar) {
    ar(name, signature, signature_hash);
  }
};

// worker -> coordinator, right after Hello (v3): the tasks it serves, in its own task order
// (the position is the worker's task number).
struct Offer {
  std::vector<TaskOffer> tasks;
  template <class A>
  void serialize(A& ar) {
    ar(tasks);
  }
};

// coordinator -> worker: accepted.
struct Welcome {
  std::uint32_t worker_id = 0;
  std::string session;
  std::uint32_t heartbeat_ms = 0;          // the coordinator pings this often (0: local, no pings)
  std::uint32_t heartbeat_timeout_ms = 0;  // silence for this long means the link is lost
  // Per-worker initializer, run once before the first task (kNoFunction: none); a pool task
  // number, like TaskHeader::function.
  std::uint32_t init_function = kNoFunction;
  Bytes init_args;
  // The pool's task numbers mapped to this worker's (kNoFunction: it does not serve that one).
  std::vector<std::uint32_t> task_map;
  // v4. A result whose value encodes to more than object_threshold bytes goes back as a
  // shared-memory object named object_prefix + a number (0: never; remote workers get 0). The
  // coordinator accepts no other names from this worker and removes what is left under the
  // prefix when the worker is gone.
  std::uint64_t object_threshold = 0;
  std::string object_prefix;
  static constexpr std::uint32_t kNoFunction = 0xffffffffu;
  template <class A>
  void serialize(A& ar) {
    ar(worker_id, session, heartbeat_ms, heartbeat_timeout_ms, init_function, init_args, task_map,
       object_threshold, object_prefix);
  }
};

// coordinator -> worker: refused, with the reason naming both sides' values. Same layout in
// every protocol version, like Hello.
struct Reject {
  std::string reason;
  template <class A>
  void serialize(A& ar) {
    ar(reason);
  }
};

// coordinator -> worker: run one task. The frame's request id is the task id.
//
// Payload (protocol v2): this header's cereal encoding, then the argument bytes themselves up
// to the end of the payload (the cereal encoding of the argument tuple, or for a batch of a
// vector of tuples). The arguments are already an encoding: wrapping them again would add a
// length prefix and a copy on both sides. Build with make_task_frame, read with decode_task.
struct TaskHeader {
  std::uint32_t attempt = 1;
  std::uint32_t function = 0;  // the pool's task number (the worker maps it: Welcome::task_map)
  bool batch = false;          // the arguments are a vector of argument tuples (a chunk of a map)
  // v5: the arguments are a tuple of task_detail::RefOr (some fed by an ObjectRef where the
  // task takes the value: TaskEntry::invoke_refs). Travels as the frame flag kFrameRefArgs.
  bool ref_args = false;
  template <class A>
  void serialize(A& ar) {
    ar(attempt, function, batch);
  }
};

// worker -> coordinator: the task's value. Payload: this header's cereal encoding, then the
// value's bytes up to the end of the payload (the cereal encoding of the return value, nothing
// for void, or a chunk's batch result). Build with make_result_frame (or start_result_frame
// and finish_frame, to encode the value in place), read with decode_result.
struct ResultHeader {
  std::uint32_t attempt = 1;
  template <class A>
  void serialize(A& ar) {
    ar(attempt);
  }
};

// The body of a task or result frame flagged kFrameObject: the argument or value bytes are
// in the shared-memory object /dev/shm/<name>, `size` bytes long (ipc::SharedObject). The
// receiver checks the name is one the sender may pass before opening anything.
struct ObjectHandle {
  std::string name;
  std::uint64_t size = 0;
  template <class A>
  void serialize(A& ar) {
    ar(name, size);
  }
};

// A decoded task: its header, and a view of the argument bytes inside the frame's payload
// (valid while the frame's buffer is), or (frame flag kFrameObject) the handle of the
// object holding them, with args empty.
struct TaskView {
  TaskHeader header;
  ByteView args;
  std::optional<ObjectHandle> object;
};

// A decoded result: its header, and a view of the value bytes inside the frame's payload, or
// the handle of the object holding them (as TaskView).
struct ResultView {
  ResultHeader header;
  ByteView value;
  std::optional<ObjectHandle> object;
};

Frame make_task_frame(const TaskHeader& h, ByteView args, std::uint64_t request_id);
// A task frame whose arguments are in a shared-memory object (flag kFrameObject).
Frame make_task_frame(const TaskHeader& h, const ObjectHandle& args, std::uint64_t request_id);
// BadKind unless a task frame; a header that does not decode is LengthExceedsRemaining or
// MalformedPayload. The arguments are not looked at (the task's own decoder bounds them).
Result<TaskView> decode_task(const FrameView& f);

Frame make_result_frame(const ResultHeader& h, ByteView value, std::uint64_t request_id);
// A result frame whose value is in a shared-memory object (flag kFrameObject).
Frame make_result_frame(const ResultHeader& h, const ObjectHandle& value, std::uint64_t request_id);
// A result frame holding only its header: append the value's bytes to payload, then call
// finish_frame (for a sender that encodes the value straight into the frame).
Frame start_result_frame(const ResultHeader& h, std::uint64_t request_id);
// As decode_task, for result frames.
Result<ResultView> decode_result(const FrameView& f);

// Sets the header's payload length from the payload (after appending to it).
void finish_frame(Frame& f) noexcept;

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

// coordinator -> worker: a ping; worker -> coordinator: the answer, with the worker's
// resource use (v4; zero in pings).
struct Heartbeat {
  std::uint64_t seq = 0;
  std::uint64_t cpu_ms = 0;     // the worker process's user + system CPU time
  std::uint64_t rss_bytes = 0;  // its resident set size
  template <class A>
  void serialize(A& ar) {
    ar(seq, cpu_ms, rss_bytes);
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

// remote worker -> coordinator (v5): the bytes [offset, offset + max_bytes) of the object
// `name` that an ObjectRef in a task's arguments names (`size`: its encoded size, as the ref
// says). The frame's request id pairs it with its ObjectData. Only an admitted worker is
// answered, and only about objects the coordinator's process put.
struct ObjectFetch {
  std::string name;
  std::uint64_t size = 0;
  std::uint64_t offset = 0;
  std::uint64_t max_bytes = 0;
  template <class A>
  void serialize(A& ar) {
    ar(name, size, offset, max_bytes);
  }
};

// coordinator -> remote worker (v5): one chunk of an object (request id: the ObjectFetch's),
// within the frame limit; or, with `error` set, why there is none (freed, unknown, size).
struct ObjectData {
  std::string error;
  std::uint64_t offset = 0;
  std::uint64_t total = 0;  // the object's encoded size
  Bytes bytes;
  template <class A>
  void serialize(A& ar) {
    ar(error, offset, total, bytes);
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
