// Local and remote workers behind WorkerEndpoint; a local worker's reader thread.
#include "worker_endpoint.hpp"

#include <signal.h>
#include <unistd.h>

#include "membership.hpp"
#include "pool_core.hpp"

namespace ferry::detail {

LocalWorker::LocalWorker(WorkerIdentity who, std::unique_ptr<coordinator::Process> proc,
                         ipc::ChannelPtr ch, std::size_t credit, int out, int err,
                         std::string socket_path)
    : WorkerEndpoint(std::move(who)),
      out_fd(out),
      err_fd(err),
      proc_(std::move(proc)),
      ch_(std::move(ch)),
      credit_(credit),
      socket_path_(std::move(socket_path)) {}

LocalWorker::~LocalWorker() {
  stop_ = true;
  release_reader();
  if (reader_.joinable()) {
    if (reader_.get_id() == std::this_thread::get_id()) {
      reader_.detach();
    } else {
      reader_.join();
    }
  }
  for (int fd : {out_fd, err_fd}) {
    if (fd >= 0) ::close(fd);
  }
  // A worker that never connected leaves its socket's name behind otherwise.
  if (!socket_path_.empty()) ::unlink(socket_path_.c_str());
}

Status LocalWorker::send(std::span<const Frame> frames, ipc::Deadline d) {
  if (frames.size() == 1) return ch_->send_until(frames.front(), d);
  return ch_->send_batch(frames, d);
}

void LocalWorker::kill(EndCause) noexcept {
  // Its end is seen by the supervisor (pidfd) and reported with the scheduler's recorded cause.
  (void)proc_->kill(SIGKILL);
}

void LocalWorker::start_reader(PoolCore& core) {
  reader_ = std::thread([this, &core] {
    go_.wait(false);
    try {
      reader_loop(core);
    } catch (const std::exception& e) {
      // Out of memory, most likely: this worker cannot be served; it is replaced.
      if (stop_.load()) return;
      try {
        core.bad_stream(id(), std::string("its reader failed: ") + e.what());
      } catch (...) {
        // Not even the message fits: the worker is killed, and its end (seen by the
        // supervisor) moves its tasks, as for any worker that dies.
        (void)proc_->kill(SIGKILL);
      }
    }
  });
}

void LocalWorker::release_reader() noexcept {
  go_ = true;
  go_.notify_one();
}

void LocalWorker::stop_reader() {
  stop_ = true;
  release_reader();
  if (reader_.joinable()) reader_.join();
}

void LocalWorker::refuse(PoolCore& core, const msg::Hello& hello, const std::string& reason) {
  {
    std::lock_guard lk(send_mu);
    const Frame r = make_frame(MessageKind::reject, msg::Reject{reason});
    (void)ch_->send_for(r, std::chrono::milliseconds(500));
  }
  core.event(EventLevel::warn,
             "rejected worker (pid " + std::to_string(hello.pid) + "): " + reason);
  core.worker_refused(id(), reason);
}

bool LocalWorker::on_handshake_frame(PoolCore& core, const Frame& f, Handshake& hs) {
  if (!hs.hello) {
    if (f.header.kind != MessageKind::hello) return true;
    auto h = decode_value<msg::Hello>(f.payload);
    if (!h) {
      core.bad_stream(id(), "bad hello: " + h.error().message());
      return false;
    }
    // Connected: the socket's name is no longer needed, and an unlinked name cannot be left
    // behind if this process is killed.
    if (!socket_path_.empty()) ::unlink(socket_path_.c_str());
    hs.hello = std::move(*h);
    if (auto why = version_mismatch(*hs.hello)) {
      refuse(core, *hs.hello, *why);
      hs.greeted = true;  // it exits by itself; the supervisor reports its end
    }
    return true;
  }
  if (f.header.kind != MessageKind::offer) return true;
  hs.greeted = true;
  auto offer = decode_value<msg::Offer>(f.payload);
  if (!offer) {
    core.bad_stream(id(), "bad offer: " + offer.error().message());
    return false;
  }
  auto a = admit(core.admission(), *hs.hello, *offer, id(), false);
  if (!a.welcome) {
    refuse(core, *hs.hello, a.reason);
    return true;
  }
  {
    // Before it is joined (and can be given tasks), so the welcome comes first.
    std::lock_guard lk(send_mu);
    if (!ch_->send(make_frame(MessageKind::welcome, *a.welcome))) return true;
  }
  core.worker_joined(shared_from_this(), a);
  return true;
}

void LocalWorker::reader_loop(PoolCore& core) {
  // Up to this many frames that have already arrived are handled together (on_frames).
  constexpr std::size_t kBatch = 64;
  std::vector<Frame> fs(kBatch);
  Handshake hs;
  // After a failed receive: true to go on. Once the process exited (stop_), what it sent is
  // still read until a short quiet spell, so results sent just before dying are not lost.
  auto keep_going = [&](const Status& st) {
    const auto c = st.code();
    if (c == Errc::timeout || c == Errc::would_block) return !stop_.load();
    if (stop_.load()) return false;
    if (c != Errc::channel_closed) {
      core.bad_stream(id(), st.error().message());
    } else {
      // Closed while the process lives on (a worker exits when its channel closes; one that
      // does not can no longer be served): stopped, so its tasks move.
      core.channel_lost(id());
    }
    return false;
  };
  for (;;) {
    const auto wait = stop_.load() ? std::chrono::milliseconds(20) : std::chrono::milliseconds(100);
    auto st = ch_->recv_for(fs[0], wait);
    if (!st) {
      if (keep_going(st)) continue;
      return;
    }
    if (!hs.greeted) {
      if (!on_handshake_frame(core, fs[0], hs)) return;
      continue;
    }
    std::size_t n = 1;
    Status more;
    while (n < fs.size() && (more = ch_->try_recv(fs[n])))
      ++n;
    core.on_frames(id(), std::span<Frame>(fs.data(), n));
    if (!more && more.code() != Errc::would_block && !keep_going(more)) return;
  }
}

Status RemoteWorker::send(std::span<const Frame> frames, ipc::Deadline d) {
  return membership_.send(peer_, frames, d);
}

void RemoteWorker::kill(EndCause why) noexcept {
  membership_.evict(id(), peer_, why);
}

}  // namespace ferry::detail
