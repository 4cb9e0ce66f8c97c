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
// Admission: until the caller admit()s a peer (say, once its hello checked out), the peer may
// send frames of at most ZmqOptions::unadmitted_max_frame (64 KiB) bytes. A larger frame is
// refused on its header, before any of its payload is kept (the rest of it is skipped
// unread), and recv reports FrameTooLarge with `from` set to that peer, so the caller can drop
// it. Whatever a peer sends, libzmq holds at most about 1 MiB of its message in progress (see
// "Large frames" in zmq_channel.hpp), plus, while the caller is not receiving, up to recv_hwm
// whole messages queued per connection (each at most about 1 MiB). An admitted peer may send
// frames up to max_frame.
//
// Peer addresses: recv can also say where the peer's connection comes from (PeerInfo), so a
// caller can rate-limit what it logs about misbehaving peers per address.
//
// Threading: one sending and one receiving thread at a time (they may differ); admit and
// revoke from either. Ownership: move-only, owns its socket; shares the process's zmq context
// (see zmq_channel.hpp).
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

// Who a received frame or event is about.
struct PeerInfo {
  PeerId id;
  // Where the connection comes from as zmq reports it ("Peer-Address"): the IP for tcp://,
  // "localhost:UID:GID:PID" of the connecting process for ipc://; empty when zmq does not
  // say. For logs and rate limits, not for trust.
  std::string address;
  bool admitted = false;  // admit()ted when this was received
};

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
  // BadMagic etc.: `from` sent a malformed frame (router still usable). FrameTooLarge: `from`
  // sent a frame over its limit (max_frame, or unadmitted_max_frame before admit()); it was
  // dropped. WouldBlock (try), Timeout (timed).
  Status recv_until(PeerId& from, Frame& out, Deadline d);
  // The same, also telling the peer's address and whether it was admitted.
  Status recv_until(PeerInfo& from, Frame& out, Deadline d);
  // ok, FrameTooLarge, ChannelClosed (unknown or departed peer), QueueFull (try: that peer's
  // queue is at the high-water mark), Timeout (timed). A frame larger than 1 MiB goes as
  // several zmq messages; once the first is taken the frame is committed: if the deadline
  // passes before the rest is, the rest waits in the router (it goes out before anything else
  // to that peer, during later calls, or within linger at destruction) and the send is ok.
  Status send_until(const PeerId& to, const Frame& f, Deadline d);

  // Lets `peer` send frames up to max_frame from now on. ChannelClosed if the router does not
  // know the peer (never heard from, or gone: a peer that comes back must be admitted again).
  Status admit(const PeerId& peer);
  // Back to the unadmitted limit (e.g. for a peer the caller no longer serves).
  Status revoke(const PeerId& peer);

  Status try_recv(PeerId& from, Frame& out) { return recv_until(from, out, Deadline::now()); }
  Status recv(PeerId& from, Frame& out) { return recv_until(from, out, Deadline::never()); }
  template <class Rep, class Period>
  Status recv_for(PeerId& from, Frame& out, std::chrono::duration<Rep, Period> d) {
    return recv_until(from, out, Deadline::after(d));
  }
  Status try_recv(PeerInfo& from, Frame& out) { return recv_until(from, out, Deadline::now()); }
  Status recv(PeerInfo& from, Frame& out) { return recv_until(from, out, Deadline::never()); }
  template <class Rep, class Period>
  Status recv_for(PeerInfo& from, Frame& out, std::chrono::duration<Rep, Period> d) {
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
