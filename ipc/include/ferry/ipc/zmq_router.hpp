// The coordinator's many-peer end of ZeroMQ endpoints: a bound ROUTER that receives frames
// from any connected ZmqChannel (connect side) and sends frames to a chosen one.
//
// Peers are named by their zmq routing identity (PeerId, opaque bytes). A peer becomes known
// when its first message arrives (a connecting ZmqChannel announces itself at once, so that is
// right after it connects). When a known peer closes or dies, recv reports it once, as
// ChannelClosed with `from` set to that peer, after every frame that peer sent before has been
// delivered; the router itself stays open. Sending to an unknown or departed peer is
// ChannelClosed (ROUTER_MANDATORY: never silently dropped).
//
// How departures are found: the socket monitor reports a dropped connection (by descriptor, not
// by peer), then known peers are probed with an empty message, which zmq refuses (EHOSTUNREACH)
// for a peer whose connection is gone; live peers ignore empty messages. Probing runs only
// while a dropped connection is unaccounted for.
//
// Threading: one sending and one receiving thread at a time (they may differ). Ownership:
// move-only, owns its socket; shares the process's zmq context (see zmq_channel.hpp).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "ferry/ipc/channel.hpp"
#include "ferry/ipc/deadline.hpp"
#include "ferry/ipc/endpoint.hpp"
#include "ferry/ipc/zmq_channel.hpp"

namespace ferry::ipc {

using PeerId = std::string;  // zmq routing identity: opaque bytes, not text

class ZmqRouter {
 public:
  static Result<ZmqRouter> bind(const Endpoint& endpoint, const ChannelOptions& options = {},
                                const ZmqOptions& zmq = {});
  ZmqRouter(ZmqRouter&&) noexcept;
  ZmqRouter& operator=(ZmqRouter&&) noexcept;
  ZmqRouter(const ZmqRouter&) = delete;
  ZmqRouter& operator=(const ZmqRouter&) = delete;
  ~ZmqRouter();

  // ok: a frame from `from`. ChannelClosed: peer `from` went away (router still usable).
  // BadMagic etc.: `from` sent a malformed frame (router still usable). WouldBlock (try),
  // Timeout (timed).
  Status recv_until(PeerId& from, Frame& out, Deadline d);
  // ok, FrameTooLarge, ChannelClosed (unknown or departed peer), QueueFull (try: that peer's
  // queue is at the high-water mark), Timeout (timed).
  Status send_until(const PeerId& to, const Frame& f, Deadline d);

  Status try_recv(PeerId& from, Frame& out) { return recv_until(from, out, Deadline::now()); }
  Status recv(PeerId& from, Frame& out) { return recv_until(from, out, Deadline::never()); }
  template <class Rep, class Period>
  Status recv_for(PeerId& from, Frame& out, std::chrono::duration<Rep, Period> d) {
    return recv_until(from, out, Deadline::after(d));
  }
  Status try_send(const PeerId& to, const Frame& f) { return send_until(to, f, Deadline::now()); }
  Status send(const PeerId& to, const Frame& f) { return send_until(to, f, Deadline::never()); }
  template <class Rep, class Period>
  Status send_for(const PeerId& to, const Frame& f, std::chrono::duration<Rep, Period> d) {
    return send_until(to, f, Deadline::after(d));
  }

  // Peers known and not (yet) reported gone.
  std::vector<PeerId> peers() const;
  std::string endpoint() const;
  // As ZmqChannel::wait_fd: readable means "call try_recv until WouldBlock".
  int wait_fd() const noexcept;

  struct Impl;

 private:
  explicit ZmqRouter(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::ipc
