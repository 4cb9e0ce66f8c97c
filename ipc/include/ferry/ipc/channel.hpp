// The byte-frame channel every transport implements (pipe, shm ring, ZeroMQ).
//
// A Channel is one end of a point-to-point, ordered, reliable stream of frames.
// Every send/recv comes in try / blocking / timed forms, all funnelled into send_until /
// recv_until with a Deadline. Outcomes are values, never exceptions:
//   ok; WouldBlock (try recv, nothing there); QueueFull (try send, no room);
//   Timeout (timed form expired); ChannelClosed (peer closed or died; final);
//   FrameTooLarge / BadMagic / ... (the peer sent something that is not a valid frame;
//   the channel is then closed, since the stream can no longer be trusted).
// A blocking call returns when the peer dies (ChannelClosed), so none waits forever on a
// dead peer.
//
// Threading: one thread sends and one thread receives at a time (they may be different
// threads); a Channel is not safe for concurrent senders. Ownership: move-only, owns its
// descriptors/mapping; the destructor closes (and for the creating side, removes) them.
#pragma once

#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "ferry/ipc/deadline.hpp"
#include "ferry/shared/config.hpp"
#include "ferry/shared/error.hpp"
#include "ferry/shared/frame.hpp"

namespace ferry::ipc {

class Channel {
 public:
  Channel() = default;
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;
  virtual ~Channel() = default;

  // Sends f (header.length is set from the payload by the transport).
  virtual Status send_until(const Frame& f, Deadline d) = 0;
  // Receives one frame into out, reusing out.payload's capacity.
  virtual Status recv_until(Frame& out, Deadline d) = 0;
  // The endpoint string that opens the other end (for handing to a child or a task).
  virtual std::string endpoint() const = 0;
  // Sends the frames in order, as send_until each, but lets the transport gather them (one
  // writev on pipes, one publish and wake-up on shm). Stops at the first error; the frames
  // before it were sent.
  virtual Status send_batch(std::span<const Frame> frames, Deadline d) {
    for (const Frame& f : frames) {
      if (auto st = send_until(f, d); !st) return st;
    }
    return {};
  }
  // A descriptor that polls readable when recv may make progress (-1 if none).
  virtual int wait_fd() const noexcept { return -1; }

  Status try_send(const Frame& f) { return send_until(f, Deadline::now()); }
  Status send(const Frame& f) { return send_until(f, Deadline::never()); }
  template <class Rep, class Period>
  Status send_for(const Frame& f, std::chrono::duration<Rep, Period> d) {
    return send_until(f, Deadline::after(d));
  }
  Status try_recv(Frame& out) { return recv_until(out, Deadline::now()); }
  Status recv(Frame& out) { return recv_until(out, Deadline::never()); }
  template <class Rep, class Period>
  Status recv_for(Frame& out, std::chrono::duration<Rep, Period> d) {
    return recv_until(out, Deadline::after(d));
  }
};

using ChannelPtr = std::unique_ptr<Channel>;

// Which side of an endpoint a process is: the side that makes it (binds, creates the
// segment) or the side that joins it.
enum class Role { bind, connect };

struct ChannelOptions {
  std::size_t max_frame = kDefaultMaxFrame;
  // tcp:// only: a CURVE key directory (curve.hpp); empty: plain TCP. The connect side uses
  // the worker keys and the coordinator's public key, the bind side the coordinator's keys.
  std::string keys_dir{};
};

}  // namespace ferry::ipc
