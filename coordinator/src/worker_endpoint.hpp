// One worker as the pool sees it, local or remote, behind one interface (internal).
//
//   WorkerEndpoint  id, identity (pid, host, name, slots), send (in order, batched), kill
//   LocalWorker     a spawned process + its own channel (pipe, shm or zmq) + a reader thread +
//                   its stdout/stderr pipes; owned by the Supervisor, which reaps it
//   RemoteWorker    a peer of the listen router; owned by Membership
//
// Ownership: endpoints are shared (std::shared_ptr): the pool's table, the supervisor or
// membership, and any send in progress each hold one, so a worker that dies while frames are
// being sent to it is never freed under the sender.
// Threading: send() is serialised by send_mu. The pool never waits for send_mu under its own
// lock: it appends to the outbox under its lock (so frames reach each worker in the order the
// scheduler chose), and whichever thread finds no send in progress sends what is queued
// (PoolCore::flush). kill() may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>

#include "ferry/coordinator/detail/task_state.hpp"
#include "ferry/coordinator/process.hpp"
#include "ferry/ipc/channel.hpp"
#include "ferry/ipc/shm_object.hpp"
#include "ferry/ipc/zmq_router.hpp"
#include "ferry/shared/messages.hpp"
#include "scheduler.hpp"

namespace ferry::detail {

class PoolCore;
class Membership;

struct WorkerIdentity {
  WorkerId id = 0;
  std::int32_t pid = 0;
  std::string host, name;  // remote: as the worker reported them
  unsigned slots = 1;
  bool remote = false;
};

class WorkerEndpoint : public std::enable_shared_from_this<WorkerEndpoint> {
 public:
  explicit WorkerEndpoint(WorkerIdentity who) : who_(std::move(who)) {}
  virtual ~WorkerEndpoint() = default;
  WorkerEndpoint(const WorkerEndpoint&) = delete;
  WorkerEndpoint& operator=(const WorkerEndpoint&) = delete;

  const WorkerIdentity& who() const noexcept { return who_; }
  WorkerId id() const noexcept { return who_.id; }
  // Sends frames in order. Caller holds send_mu. A failure means the worker is gone; its end
  // is reported by whoever watches it (supervisor, membership), so callers may ignore it.
  virtual Status send(std::span<const Frame> frames, ipc::Deadline d) = 0;
  // Makes the worker go (local: SIGKILL; remote: told to restart, then reported gone).
  virtual void kill(EndCause why) noexcept = 0;
  // Transport buffer the pool keeps queued bytes within (half of it).
  virtual std::size_t credit_bytes() const noexcept = 0;

  std::mutex send_mu;

  // What the pool queued for this worker and not yet sent (PoolCore::flush). A task's frame is
  // built by the sending thread, not under the pool's lock.
  struct Outgoing {
    std::shared_ptr<const TaskState> task;            // null: `frame` is ready
    std::shared_ptr<const ipc::SharedObject> object;  // the task's arguments, if in an object
    std::uint32_t attempt = 0;
    Frame frame;
  };
  struct Outbox {
    std::mutex mu;                 // after the pool's lock; nothing is taken under it
    std::vector<Outgoing> queued;  // mu
    bool sending = false;          // mu: a thread is sending; it takes what is queued too
    std::vector<Outgoing> taken;   // the sending thread's (kept for their capacity)
    std::vector<Frame> frames;     // the sending thread's
  } outbox;

 protected:
  WorkerIdentity who_;
};
using EndpointPtr = std::shared_ptr<WorkerEndpoint>;

class LocalWorker final : public WorkerEndpoint {
 public:
  LocalWorker(WorkerIdentity who, std::unique_ptr<coordinator::Process> proc, ipc::ChannelPtr ch,
              std::size_t credit, int out_fd, int err_fd, std::string socket_path);
  ~LocalWorker() override;

  Status send(std::span<const Frame> frames, ipc::Deadline d) override;
  void kill(EndCause why) noexcept override;
  std::size_t credit_bytes() const noexcept override { return credit_; }

  // Makes the reader thread (hello, then every frame, handed to core); it waits for
  // release_reader(), so a worker the pool cannot serve is never announced. Throws
  // std::system_error if no thread can be made.
  void start_reader(PoolCore& core);
  void release_reader() noexcept;
  // After the process exited: the reader drains what the worker sent before dying, then stops.
  void stop_reader();
  coordinator::Process& process() noexcept { return *proc_; }
  int out_fd = -1, err_fd = -1;  // read ends of the worker's stdout/stderr (-1 once closed)
  std::string out_buf, err_buf;  // partial lines
  TimePoint spawned_at{};
  const std::string& socket_path() const noexcept { return socket_path_; }
  void set_pid(std::int32_t pid) noexcept { who_.pid = pid; }

 private:
  // Where the handshake (Hello, then Offer) stands; tasks flow once it is done.
  struct Handshake {
    std::optional<msg::Hello> hello;
    bool greeted = false;  // its Offer was answered (or its Hello refused)
  };
  void reader_loop(PoolCore& core);
  // One frame of the handshake; false when the stream is bad and reading ends.
  bool on_handshake_frame(PoolCore& core, const Frame& f, Handshake& hs);
  void refuse(PoolCore& core, const msg::Hello& hello, const std::string& reason);

  std::unique_ptr<coordinator::Process> proc_;
  ipc::ChannelPtr ch_;
  std::size_t credit_ = 0;
  std::string socket_path_;  // zmq ipc socket file, unlinked once the worker connected
  std::thread reader_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> go_{false};
};

class RemoteWorker final : public WorkerEndpoint {
 public:
  RemoteWorker(WorkerIdentity who, ipc::PeerId peer, Membership& m)
      : WorkerEndpoint(std::move(who)), peer_(std::move(peer)), membership_(m) {}
  Status send(std::span<const Frame> frames, ipc::Deadline d) override;
  void kill(EndCause why) noexcept override;
  std::size_t credit_bytes() const noexcept override { return std::size_t{64} << 20; }
  const ipc::PeerId& peer() const noexcept { return peer_; }

 private:
  ipc::PeerId peer_;
  Membership& membership_;
};

}  // namespace ferry::detail
