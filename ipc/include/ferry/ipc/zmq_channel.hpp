// A Channel over ZeroMQ for ipc://PATH and tcp://HOST:PORT endpoints.
//
// The connect side is a DEALER; the bind side is a ROUTER that talks to its single, most
// recently connected peer, so one point-to-point Channel works both ways. A frame travels as
// one zmq message: the 20-byte header followed by the payload.
//
// Large frames: a payload over 1 MiB travels as a bare header followed by chunks of at most
// 1 MiB, each its own zmq message (not one multipart message, which libzmq would buffer
// whole), and the receiver puts them back together. So zmq never holds more than about 1 MiB
// of a message in progress (ZMQ_MAXMSGSIZE), and a frame's declared length is checked against
// max_frame before any of it is kept. A send whose deadline passes after the first chunk went
// commits the frame: the rest goes out before the next frame (during later calls, or within
// linger when the channel is destroyed) and the send is ok.
//
// Peer death: a peer that closes or dies (SIGKILL included) is reported as ChannelClosed, after
// every frame it sent before has been delivered; the kernel closes a dead process's sockets, so
// this takes milliseconds, even for a sender that never waits (the monitor is read at least
// once a millisecond while frames flow). A silent peer (host down): heartbeat_timeout below.
// Closing: a frame sent before the channel is destroyed is still delivered to a live peer (the
// destructor waits up to ZmqOptions::linger for the queue to drain), so destroy the channel
// before the process exits; never _exit() with frames queued.
//
// Context: all ZeroMQ objects of a process share one context, created lazily by the first
// channel or router and terminated when the last one is destroyed (the destructor of the last
// one may therefore wait up to `linger`). When nothing zmq is open, no zmq thread or descriptor
// exists. Never use a channel across fork(): processes are started with posix_spawn/exec, and a
// forked child must not touch the parent's channels (they share the context's threads' state).
//
// Threading: as Channel: one sending and one receiving thread at a time (they may differ; the
// zmq socket is guarded internally and waits happen outside the guard). Ownership: owns its
// sockets; held through a unique_ptr (ChannelPtr).
#pragma once

#include <optional>

#include "ferry/ipc/curve.hpp"

#include <chrono>
#include <memory>
#include <string>

#include "ferry/ipc/channel.hpp"
#include "ferry/ipc/endpoint.hpp"

namespace ferry::ipc {

// Tuning shared by ZmqChannel and ZmqRouter. The defaults suit local and LAN peers.
struct ZmqOptions {
  // How long closing waits for queued outgoing frames to reach a live peer.
  std::chrono::milliseconds linger{1000};
  // ZMTP heartbeats: a ping every interval; no traffic for timeout closes the connection.
  // Caveat (zmq): a side whose receive queue stays at recv_hwm stops reading its connection,
  // misses the pings and drops the connection after timeout; keep in-flight frames per peer
  // below recv_hwm (the pool's window does) or raise the timeout.
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds heartbeat_timeout{5000};
  // Frames queued per direction before a send waits (or try_send says QueueFull). zmq counts
  // messages, not bytes; the kernel's socket buffers add some slack on top.
  int send_hwm = 1000;
  int recv_hwm = 1000;
  // CURVE (use on tcp://): a bound socket sets curve_server, a connecting one curve_client.
  // A server refuses a peer whose key its authorize callback rejects during the handshake,
  // before any message of that peer is read. See curve.hpp for keys.
  std::optional<CurveServer> curve_server{};
  std::optional<CurveClient> curve_client{};
  // ZmqRouter only: the largest frame a peer may send before ZmqRouter::admit(peer); see
  // zmq_router.hpp. (ZmqChannel's bind side takes up to max_frame from whoever connects.)
  std::size_t unadmitted_max_frame = std::size_t{64} << 10;
};

class ZmqChannel final : public Channel {
 public:
  // Binds a ROUTER on endpoint (tcp port 0 or * picks a free port; endpoint() tells which).
  static Result<std::unique_ptr<ZmqChannel>> bind(const Endpoint& endpoint,
                                                  const ChannelOptions& options = {},
                                                  const ZmqOptions& zmq = {});
  // Connects a DEALER to endpoint. Frames sent before the bind side is up are queued, in order.
  static Result<std::unique_ptr<ZmqChannel>> connect(const Endpoint& endpoint,
                                                     const ChannelOptions& options = {},
                                                     const ZmqOptions& zmq = {});
  ~ZmqChannel() override;

  // Try: QueueFull at the high-water mark (or, bind side, before any peer has connected).
  // FrameTooLarge if the payload exceeds max_frame (nothing is sent; the channel stays open).
  Status send_until(const Frame& f, Deadline d) override;
  // Try: WouldBlock when nothing is queued. A malformed frame returns decode_header's named
  // error (a frame declared longer than max_frame: FrameTooLarge) and closes the channel. A
  // single zmq message longer than header + 1 MiB (never sent by ferry) makes zmq drop the
  // connection: the caller sees ChannelClosed.
  Status recv_until(Frame& out, Deadline d) override;
  // The address the other end opens (for bind: the resolved address, real port included).
  std::string endpoint() const override;
  // An epoll descriptor over the zmq socket's ZMQ_FD and its monitor (and, bind side, a timer).
  // Like ZMQ_FD it is edge-triggered in effect: readable means "call try_recv until it says
  // WouldBlock", and a frame may be pending while it is not readable after a partial drain.
  int wait_fd() const noexcept override;

  struct Impl;

 private:
  explicit ZmqChannel(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

// The zmq part of the channel factory: ipc:// and tcp:// endpoints only (InvalidArgument for
// other schemes). Role::bind binds, Role::connect connects.
Result<ChannelPtr> open_zmq_channel(const Endpoint& endpoint, Role role,
                                    const ChannelOptions& options = {});
Result<ChannelPtr> open_zmq_channel(const Endpoint& endpoint, Role role,
                                    const ChannelOptions& options, const ZmqOptions& zmq);

}  // namespace ferry::ipc
