#include "ferry/shared/messages.hpp"

#include <string>
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

template <class H>
Frame frame_with_body(MessageKind kind, const H& head, ByteView body, std::uint64_t request_id) {
  Frame f;
  f.header.kind = kind;
  f.header.request_id = request_id;
  // One allocation: a header is a few bytes, the body may be megabytes.
  f.payload.reserve(16 + body.size());
  encode_into(f.payload, head);
  f.payload.insert(f.payload.end(), body.begin(), body.end());
  finish_frame(f);
  return f;
}

// Decodes H from the front of the payload with the bounded archive; the rest is the body.
template <class H>
Result<std::pair<H, ByteView>> split_body(const FrameView& f, MessageKind expected) {
  if (f.header.kind != expected) {
    return Error{Errc::bad_kind, "expected " + std::string(kind_name(expected)) + ", got " +
                                     std::string(kind_name(f.header.kind))};
  }
  ByteView rest = f.payload;
  H head{};
  if (auto st = decode_prefix(rest, head); !st) {
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
  return frame_with_body(MessageKind::task, h, args, request_id);
}

Result<TaskView> decode_task(const FrameView& f) {
  auto r = split_body<TaskHeader>(f, MessageKind::task);
  if (!r) return std::move(r).error();
  return TaskView{r->first, r->second};
}

Frame make_result_frame(const ResultHeader& h, ByteView value, std::uint64_t request_id) {
  return frame_with_body(MessageKind::result, h, value, request_id);
}

Frame start_result_frame(const ResultHeader& h, std::uint64_t request_id) {
  return frame_with_body(MessageKind::result, h, ByteView{}, request_id);
}

Result<ResultView> decode_result(const FrameView& f) {
  auto r = split_body<ResultHeader>(f, MessageKind::result);
  if (!r) return std::move(r).error();
  return ResultView{r->first, r->second};
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
  }
  return Error{Errc::bad_kind, "unknown message kind"};
}

}  // namespace ferry::msg
