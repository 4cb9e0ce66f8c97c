// Pipe transport: length-prefixed frames (the 20-byte frame header carries the length) over
// a pair of pipes (or one socket) between a parent and a child.
//
// - Writes: one writev per frame (header + payload), send_batch() gathers many frames into
//   one writev. Once any byte of a frame is written the frame is completed even past the
//   deadline (a half-written frame would corrupt the stream); a try_send that can write
//   nothing returns QueueFull.
// - A reader that died is Errc::channel_closed, never a SIGPIPE death, and signal
//   dispositions and masks are left alone: the channel keeps a reader of its own on the
//   outgoing pipe (re-opened through /proc/self/fd), so the kernel never raises SIGPIPE, and
//   it learns of the peer's death from hang-up on the incoming pipe. (Without /proc it falls
//   back to blocking SIGPIPE in the writing thread around each write; sockets use
//   MSG_NOSIGNAL.) Frames written into the pipe just before the peer died are lost with it.
// - Receives block in one read(2); try and timed forms poll(2) first.
// - Reads go through a 64 KiB buffer, so a burst of small frames costs one read(2).
// - EINTR is retried everywhere.
//
// Threading: one sender thread and one receiver thread at a time. Ownership: the channel owns
// its two descriptors and closes them in its destructor.
#pragma once

#include <sys/uio.h>
#include <atomic>

#include <span>
#include <utility>

#include "ferry/ipc/channel.hpp"

namespace ferry::ipc {

// Descriptors the other process should use, e.g. after dup2 into its fd table.
struct PipeEnds {
  int read_fd = -1;
  int write_fd = -1;  // may equal read_fd (a socket)
  // Closes this process's copies (each descriptor once).
  void close() noexcept;
};

class PipeChannel final : public Channel {
 public:
  // Takes ownership of both descriptors.
  PipeChannel(int read_fd, int write_fd, ChannelOptions opt = {});
  ~PipeChannel() override;

  // A connected pair of pipes: this process's channel, and the ends for the peer
  // (close-on-exec set: the spawner dup2s them into the child and closes its copies).
  static Result<std::pair<std::unique_ptr<PipeChannel>, PipeEnds>> make_pair(
      ChannelOptions opt = {});

  Status send_until(const Frame& f, Deadline d) override;
  Status recv_until(Frame& out, Deadline d) override;
  std::string endpoint() const override;
  int wait_fd() const noexcept override { return read_fd_; }

  // Sends all frames with as few writev calls as possible (same semantics as send_until).
  Status send_batch(std::span<const Frame> frames, Deadline d) override;
  // True when a frame is already buffered (recv would not need a syscall).
  bool has_buffered_frame() const noexcept;

 private:
  Status write_all(::iovec* iov, int iovcnt, Deadline d);
  Status wait_writable(Deadline d);
  Status wait_readable(Deadline d);
  ssize_t read_some(void* into, std::size_t n, Deadline d, Status& st);
  Status fill(Deadline d);  // reads at least one more byte into the buffer, or fails

  int read_fd_;
  int write_fd_;
  bool socket_;            // one socket for both directions (per-call send flags)
  int keepalive_fd_ = -1;  // our own reader of the outgoing pipe: no SIGPIPE, ever
  ChannelOptions opt_;
  Bytes buf_;              // receive buffer
  std::size_t begin_ = 0;  // unread data is buf_[begin_, end_)
  std::size_t end_ = 0;
  std::atomic<bool> closed_{false};  // set by either side (a sender and a receiver thread)
};

}  // namespace ferry::ipc
