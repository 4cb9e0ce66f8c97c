#include "ferry/shared/messages.hpp"

namespace ferry::msg {

namespace {
template <class M>
Status check(const FrameView& f) {
  auto r = decode_value<M>(f.payload);
  if (!r) return std::move(r).error();
  return {};
}
}  // namespace

Status validate_payload(const FrameView& f) {
  switch (f.header.kind) {
    case MessageKind::hello:
      return check<Hello>(f);
    case MessageKind::welcome:
      return check<Welcome>(f);
    case MessageKind::reject:
      return check<Reject>(f);
    case MessageKind::task:
      return check<Task>(f);
    case MessageKind::result:
      return check<TaskResult>(f);
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
  }
  return Error{Errc::bad_kind, "unknown message kind"};
}

}  // namespace ferry::msg
