// Pipe transport: length-prefixed frames (the 20-byte frame header carries the length) over
// a pair of pipes between a parent and a child.
//
// - Writes: one writev per frame (header + payload), send_batch() gathers many frames into
//   one writev. Once any byte of a frame is written the frame is completed even past the
//   deadline (a half-written frame would corrupt the stream); a try_send that can write
//   nothing returns QueueFull.
// - A reader that died is Errc::channel_closed, never a SIGPIPE death: SIGPIPE is blocked in
//   the writing thread for the duration of the write and a SIGPIPE it raised is consumed; the
//   process's signal dispositions are never changed.
// - Reads go through a 64 KiB buffer, so a burst of small frames costs one read(2).
// - EINTR is retried everywhere.
//
// Threading: one sender thread and one receiver thread at a time. Ownership: the channel owns
// its two descriptors and closes them in its destructor.
#pragma once

#include <sys/uio.h>

#include <span>
#include <utility>

#include "ferry/ipc/channel.hpp"

namespace ferry::ipc {

// Descriptors the other process should use, e.g. after dup2 into its fd table.
struct PipeEnds {
  int read_fd = -1;
  int write_fd = -1;
};

class PipeChannel final : public Channel {
 public:
  // Takes ownership of both descriptors.
  PipeChannel(int read_fd, int write_fd, ChannelOptions opt = {});
  ~PipeChannel() override;

  // A connected pair: this process's channel, and the ends for the peer (close-on-exec set;
  // the spawner dup2s them into the child and closes its copies after spawning).
  static Result<std::pair<std::unique_ptr<PipeChannel>, PipeEnds>> make_pair(
      ChannelOptions opt = {});

  Status send_until(const Frame& f, Deadline d) override;
  Status recv_until(Frame& out, Deadline d) override;
  std::string endpoint() const override;
  int wait_fd() const noexcept override { return read_fd_; }

  // Sends all frames with as few writev calls as possible (same semantics as send_until).
  Status send_batch(std::span<const Frame> frames, Deadline d);
  // True when a frame is already buffered (recv would not need a syscall).
  bool has_buffered_frame() const noexcept;

 private:
  Status write_all(::iovec* iov, int iovcnt, std::size_t total, Deadline d);
  Status fill(Deadline d);  // reads at least one more byte into the buffer, or fails

  int read_fd_;
  int write_fd_;
  ChannelOptions opt_;
  Bytes buf_;              // receive buffer
  std::size_t begin_ = 0;  // unread data is buf_[begin_, end_)
  std::size_t end_ = 0;
  bool closed_ = false;
};

}  // namespace ferry::ipc
