#include "ferry/shared/messages.hpp"

#include <cstring>
#include <string>
#include <type_traits>
#include <utility>

namespace ferry::msg {

namespace {

template <class M>
Status check(const FrameView& f) {
  auto r = decode_value<M>(f.payload);
  if (!r) return std::move(r).error();
  return {};
}

template <class T>
Status status_of(Result<T> r) {
  if (!r) return std::move(r).error();
  return {};
}

// The task and result headers are written and read field by field, not through a cereal
// archive: setting an archive up costs about 45 ns, more than all else a header needs, and
// every task crosses four headers (task and result, each encoded and decoded). The bytes are
// exactly cereal's binary encoding of the headers' serialize() (fixed-size fields, raw, in
// order; a bool as one byte, 0 or 1), and the checks, codes and messages are those of the
// bounded archive (decode_prefix); test_shared_frame pins both.
template <class T>
void put(Bytes& out, T v) {
  static_assert(std::is_arithmetic_v<T>);
  const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof v);
}

template <class T>
Status take(ByteView& in, T& v) {
  static_assert(std::is_arithmetic_v<T>);
  if (in.size() < sizeof v) {
    return Error{Errc::length_exceeds_remaining, "needs " + std::to_string(sizeof v) + " bytes, " +
                                                     std::to_string(in.size()) + " remain"};
  }
  if constexpr (std::is_same_v<T, bool>) {
    // Any byte but 0 or 1 in a bool would be undefined behaviour: it is malformed input.
    if (in[0] > 1) {
      return Error{Errc::malformed_payload, "byte " + std::to_string(in[0]) + " is not a bool"};
    }
    v = in[0] != 0;
  } else {
    std::memcpy(&v, in.data(), sizeof v);
  }
  in = in.subspan(sizeof v);
  return {};
}

void put_header(Bytes& out, const TaskHeader& h) {
  put(out, h.attempt);
  put(out, h.function);
  put(out, h.batch);
}
void put_header(Bytes& out, const ResultHeader& h) {
  put(out, h.attempt);
}
Status take_header(ByteView& in, TaskHeader& h) {
  if (auto st = take(in, h.attempt); !st) return st;
  if (auto st = take(in, h.function); !st) return st;
  return take(in, h.batch);
}
Status take_header(ByteView& in, ResultHeader& h) {
  return take(in, h.attempt);
}

template <class H>
Frame frame_with_body(MessageKind kind, const H& head, ByteView body, std::uint64_t request_id) {
  Frame f;
  f.header.kind = kind;
  f.header.request_id = request_id;
  // One allocation: a header is a few bytes, the body may be megabytes.
  f.payload.reserve(16 + body.size());
  put_header(f.payload, head);
  f.payload.insert(f.payload.end(), body.begin(), body.end());
  finish_frame(f);
  return f;
}

// Reads H from the front of the payload; the rest is the body.
template <class H>
Result<std::pair<H, ByteView>> split_body(const FrameView& f, MessageKind expected) {
  if (f.header.kind != expected) {
    return Error{Errc::bad_kind, "expected " + std::string(kind_name(expected)) + ", got " +
                                     std::string(kind_name(f.header.kind))};
  }
  ByteView rest = f.payload;
  H head{};
  if (auto st = take_header(rest, head); !st) {
    auto e = std::move(st).error();
    e.detail = std::string(kind_name(expected)) + " header: " + e.detail;
    return e;
  }
  return std::pair<H, ByteView>{head, rest};
}

}  // namespace

void finish_frame(Frame& f) noexcept {
  f.header.length = static_cast<std::uint32_t>(f.payload.size());
}

Frame make_task_frame(const TaskHeader& h, ByteView args, std::uint64_t request_id) {
  Frame f = frame_with_body(MessageKind::task, h, args, request_id);
  if (h.ref_args) f.header.flags |= kFrameRefArgs;
  return f;
}

Frame make_task_frame(const TaskHeader& h, const ObjectHandle& args, std::uint64_t request_id) {
  Frame f = frame_with_body(MessageKind::task, h, ByteView{}, request_id);
  encode_into(f.payload, args);
  f.header.flags |= kFrameObject;
  if (h.ref_args) f.header.flags |= kFrameRefArgs;
  finish_frame(f);
  return f;
}

namespace {
// The body of a kFrameObject frame: exactly one ObjectHandle.
Result<std::optional<ObjectHandle>> object_of(const FrameView& f, ByteView body, const char* what) {
  if ((f.header.flags & kFrameObject) == 0) return std::optional<ObjectHandle>{};
  auto h = decode_value<ObjectHandle>(body);
  if (!h) {
    auto e = std::move(h).error();
    e.detail = std::string(what) + " object handle: " + e.detail;
    return e;
  }
  return std::optional<ObjectHandle>(std::move(*h));
}
}  // namespace

Result<TaskView> decode_task(const FrameView& f) {
  auto r = split_body<TaskHeader>(f, MessageKind::task);
  if (!r) return std::move(r).error();
  r->first.ref_args = (f.header.flags & kFrameRefArgs) != 0;
  auto o = object_of(f, r->second, "task");
  if (!o) return std::move(o).error();
  if (*o) return TaskView{r->first, ByteView{}, std::move(*o)};
  return TaskView{r->first, r->second, std::nullopt};
}

Frame make_result_frame(const ResultHeader& h, ByteView value, std::uint64_t request_id) {
  return frame_with_body(MessageKind::result, h, value, request_id);
}

Frame start_result_frame(const ResultHeader& h, std::uint64_t request_id) {
  return frame_with_body(MessageKind::result, h, ByteView{}, request_id);
}

Frame make_result_frame(const ResultHeader& h, const ObjectHandle& value,
                        std::uint64_t request_id) {
  Frame f = frame_with_body(MessageKind::result, h, ByteView{}, request_id);
  encode_into(f.payload, value);
  f.header.flags |= kFrameObject;
  finish_frame(f);
  return f;
}

Result<ResultView> decode_result(const FrameView& f) {
  auto r = split_body<ResultHeader>(f, MessageKind::result);
  if (!r) return std::move(r).error();
  auto o = object_of(f, r->second, "result");
  if (!o) return std::move(o).error();
  if (*o) return ResultView{r->first, ByteView{}, std::move(*o)};
  return ResultView{r->first, r->second, std::nullopt};
}

Status validate_payload(const FrameView& f) {
  switch (f.header.kind) {
    case MessageKind::hello:
      return check<Hello>(f);
    case MessageKind::welcome:
      return check<Welcome>(f);
    case MessageKind::reject:
      return check<Reject>(f);
    case MessageKind::task:
      return status_of(decode_task(f));
    case MessageKind::result:
      return status_of(decode_result(f));
    case MessageKind::error:
      return check<TaskError>(f);
    case MessageKind::heartbeat:
      return check<Heartbeat>(f);
    case MessageKind::cancel:
      return check<Cancel>(f);
    case MessageKind::shutdown:
      return check<Shutdown>(f);
    case MessageKind::log:
      return check<Log>(f);
    case MessageKind::data:
      return {};  // user payloads are typed by their channel
    case MessageKind::offer:
      return check<Offer>(f);
    case MessageKind::batch: {
      // The frames inside are checked as unpack_batch checks them, without copying any.
      if (f.payload.empty()) return Error{Errc::malformed_payload, "an empty Batch"};
      for (std::size_t at = 0; at < f.payload.size();) {
        auto h = decode_header(f.payload.subspan(at), f.payload.size());
        if (!h) return std::move(h).error();
        if (h->kind == MessageKind::batch || crosses_versions(static_cast<std::uint8_t>(h->kind)))
          return Error{Errc::malformed_payload, "a Batch may not carry this kind of frame"};
        if (h->length > f.payload.size() - at - kHeaderSize)
          return Error{Errc::truncated, "a frame in the Batch runs past its end"};
        at += kHeaderSize + h->length;
      }
      return {};
    }
    case MessageKind::object_fetch:
      return check<ObjectFetch>(f);
    case MessageKind::object_data:
      return check<ObjectData>(f);
  }
  return Error{Errc::bad_kind, "unknown message kind"};
}

}  // namespace ferry::msg
