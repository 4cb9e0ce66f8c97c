// A worker's reader thread: the handshake, then every frame the worker sends.
#include <signal.h>
#include <unistd.h>

#include "ferry/shared/session.hpp"
#include "pool_core.hpp"

namespace ferry::detail {

std::optional<msg::Welcome> PoolCore::admit(WorkerLink& link, const msg::Hello& hello) {
  std::string reason;
  if (hello.protocol_version != kProtocolVersion) {
    reason = "protocol version mismatch: worker speaks " + std::to_string(hello.protocol_version) +
             ", coordinator " + std::to_string(kProtocolVersion);
  } else if (hello.registry_hash != registry_hash_) {
    char buf[200];
    std::snprintf(buf, sizeof buf,
                  "task registry mismatch: worker %016llx, coordinator %016llx (%zu tasks); "
                  "build both from the same task set",
                  static_cast<unsigned long long>(hello.registry_hash),
                  static_cast<unsigned long long>(registry_hash_),
                  TaskRegistry::instance().entries().size());
    reason = buf;
  }
  if (!reason.empty()) {
    {
      std::lock_guard lk(link.send_mu);
      (void)send_to(link, make_frame(MessageKind::reject, msg::Reject{reason}),
                    Deadline::after(std::chrono::milliseconds(500)));
    }
    event("rejected worker (pid " + std::to_string(hello.pid) +
          (hello.host.empty() ? "" : " on " + hello.host) + "): " + reason);
    std::lock_guard lk(mu_);
    link.kill_reason = "rejected: " + reason;
    if (!link.remote) {
      ++startup_failures_;
      broken_reason_ = reason;
      if (startup_failures_ >= 3) broken_ = true;
    }
    return std::nullopt;
  }
  msg::Welcome w;
  w.worker_id = link.id;
  w.session = SessionId::current().str();
  w.init_function = init_function_;
  if (opt_.initializer) w.init_args = opt_.initializer->args;
  if (link.remote) {
    w.heartbeat_ms = static_cast<std::uint32_t>(opt_.heartbeat_interval.count());
    w.heartbeat_timeout_ms = static_cast<std::uint32_t>(opt_.heartbeat_timeout.count());
  }
  return w;
}

void PoolCore::on_hello(WorkerLink& link, const msg::Hello& hello) {
  // The worker is connected: the socket's name is no longer needed, and an unlinked name
  // cannot be left behind if this process is killed.
  if (!link.socket_path.empty()) ::unlink(link.socket_path.c_str());
  auto w = admit(link, hello);
  if (!w) return;
  {
    std::lock_guard lk(link.send_mu);
    if (!send_to(link, make_frame(MessageKind::welcome, *w), Deadline::never())) return;
  }
  std::vector<SendJob> jobs;
  {
    std::lock_guard lk(mu_);
    if (link.state != WorkerLink::State::starting) return;
    link.state = WorkerLink::State::ready;
    state_cv_.notify_all();
    pump_locked(jobs);
  }
  flush(jobs);
}

void PoolCore::reader_loop(WorkerLink& link) {
  // Up to this many frames that have already arrived are handled together (on_frames).
  constexpr std::size_t kBatch = 64;
  std::vector<Frame> fs(kBatch);
  bool greeted = false;
  // True when the reader should go on after a failed receive.
  auto keep_going = [&](const Status& st) {
    const auto c = st.code();
    if (c == Errc::timeout || c == Errc::would_block) return !link.stop.load();
    if (c != Errc::channel_closed) {
      // The stream can no longer be trusted: stop the worker; its exit is handled as a death.
      std::lock_guard lk(mu_);
      if (link.kill_reason.empty()) {
        link.kill_reason = "sent a malformed frame: " + st.error().message();
      }
      (void)link.proc->kill(SIGKILL);
    }
    return false;
  };
  for (;;) {
    Frame& f = fs[0];
    auto st = link.ch->recv_for(f, std::chrono::milliseconds(100));
    if (!st) {
      if (keep_going(st)) continue;
      return;
    }
    if (!greeted) {
      if (f.header.kind != MessageKind::hello) continue;
      greeted = true;
      auto h = decode_value<msg::Hello>(f.payload);
      if (!h) {
        std::lock_guard lk(mu_);
        link.kill_reason = "bad hello: " + h.error().message();
        (void)link.proc->kill(SIGKILL);
        return;
      }
      on_hello(link, *h);
      continue;
    }
    std::size_t n = 1;
    Status more;
    while (n < fs.size() && (more = link.ch->try_recv(fs[n]))) {
      ++n;
    }
    on_frames(link, std::span<Frame>(fs.data(), n));
    if (!more && more.code() != Errc::would_block && !keep_going(more)) return;
  }
}

}  // namespace ferry::detail
