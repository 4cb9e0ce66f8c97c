#include "ferry/ipc/zmq_router.hpp"

#include <algorithm>
#include <cerrno>

#include "zmq_detail.hpp"

namespace ferry::ipc {
namespace zmq_detail {

namespace {
// Probing after a dropped connection: quick at first (the ROUTER learns of the drop within
// microseconds), then backing off; given up this long after the last drop if it never matches
// a known peer (a connection that never sent anything).
constexpr auto kFirstProbeStep = std::chrono::milliseconds(1);
constexpr auto kMaxProbeStep = std::chrono::milliseconds(200);
constexpr auto kProbeGiveUp = std::chrono::seconds(30);
}  // namespace

bool RouterCore::pump_monitor() {
  bool any = false;
  while (auto e = s_->next_event()) {
    any = true;
    if (e->event == ZMQ_EVENT_ACCEPTED) {
      live_fds_.insert(e->value);
    } else if (e->event == ZMQ_EVENT_DISCONNECTED && live_fds_.erase(e->value) == 1) {
      ++unexplained_;
      last_drop_ = Clock::now();
      next_probe_ = last_drop_;
      probe_step_ = kFirstProbeStep;
    }
  }
  return any;
}

void RouterCore::probe_if_due() {
  if (unexplained_ <= 0) return;
  const auto now = Clock::now();
  if (now - last_drop_ > kProbeGiveUp) {
    unexplained_ = 0;
    return;
  }
  if (now >= next_probe_) {
    const std::vector<PeerId> peers(known_.begin(), known_.end());
    for (const auto& p : peers) {
      zmq::message_t empty;
      if (send_to(p, empty) == SendOutcome::unreachable) mark_departed(p);
    }
    next_probe_ = now + probe_step_;
    probe_step_ = std::min<Clock::duration>(probe_step_ * 2, kMaxProbeStep);
  }
  if (unexplained_ > 0) s_->wake_at = std::min(s_->wake_at, next_probe_);
}

RouterCore::~RouterCore() {
  // The rest of committed frames gets the linger time to go out, as zmq's own queue does.
  if (!s_ || backlog_.empty()) return;
  try {
    (void)s_->run(kSend, Deadline::after(s_->linger()), [&]() -> Status {
      pump_monitor();
      if (flush_backlog()) return {};
      // As in attempt_send: zmq's commands processed (ZMQ_FD re-armed), then one more try.
      (void)s_->data().get(zmq::sockopt::events);
      return flush_backlog() ? Status{} : Status{Errc::queue_full};
    });
  } catch (const zmq::error_t&) {
  }
}

void RouterCore::retry_soon() {
  s_->wake_at = std::min(s_->wake_at, Clock::now() + backlog_backoff_.next());
}

bool RouterCore::flush_backlog() {
  for (auto it = backlog_.begin(); it != backlog_.end();) {
    auto& q = it->second;
    bool gone = false;
    while (!q.empty()) {
      const auto out = send_to(it->first, q.front());
      if (out == SendOutcome::sent) {
        q.pop_front();
        continue;
      }
      gone = out == SendOutcome::unreachable;
      break;
    }
    if (q.empty() || gone) {
      const PeerId peer = it->first;
      it = backlog_.erase(it);
      if (gone) mark_departed(peer);
    } else {
      ++it;
    }
  }
  if (backlog_.empty()) {
    backlog_backoff_.reset();
    return true;
  }
  return false;
}

void RouterCore::keep_rest(const PeerId& peer, WireFrame& w) {
  w.move_rest(backlog_[peer]);
}

Status RouterCore::admit(const PeerId& peer, bool admitted) {
  auto it = state_.find(peer);
  if (it == state_.end() || known_.count(peer) == 0) {
    return Error{Errc::channel_closed, "no such peer (never seen, or gone)"};
  }
  it->second.admitted = admitted;
  return {};
}

void RouterCore::mark_departed(const PeerId& peer) {
  backlog_.erase(peer);
  if (known_.erase(peer) == 1) {
    departed_.push_back(Departed{peer, 0});
    // May go below zero when a send finds the peer gone before the monitor reports the drop;
    // the drop then balances it.
    --unexplained_;
  }
}

RouterCore::SendOutcome RouterCore::send_to(const PeerId& peer, zmq::message_t& body) {
  zmq::message_t id(peer.data(), peer.size());
  try {
    if (!s_->data().send(id, zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
      return SendOutcome::full;
    }
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) return SendOutcome::unreachable;
    throw;
  }
  // Once the routing part is accepted, the ROUTER accepts the rest of the message.
  (void)s_->data().send(body, zmq::send_flags::dontwait);
  return SendOutcome::sent;
}

bool RouterCore::pop_departed(Event& ev, bool nothing_to_read) {
  // The ROUTER reads its peers round-robin, one message per peer with any queued. So once more
  // messages than it has connections were read and none came from a departed peer, that peer
  // has nothing left: report it even while others keep the socket busy.
  const std::size_t connections = live_fds_.size() + known_.size() + departed_.size() + 1;
  for (auto it = departed_.begin(); it != departed_.end(); ++it) {
    if (nothing_to_read || it->quiet > connections) {
      ev.got = Got::departed;
      ev.fresh = false;
      ev.peer = PeerInfo{std::move(it->peer), {}, false};
      departed_.erase(it);
      // Forgotten from here on (a part-received frame with it).
      if (auto st = state_.find(ev.peer.id); st != state_.end()) {
        ev.peer.address = std::move(st->second.address);
        ev.peer.admitted = st->second.admitted;
        state_.erase(st);
      }
      return true;
    }
  }
  return false;
}

namespace {
// Where zmq says the connection comes from ("" if it does not say).
std::string peer_address(const zmq::message_t& m) {
  const char* a = zmq_msg_gets(m.handle(), "Peer-Address");
  return a != nullptr ? std::string(a) : std::string();
}
}  // namespace

Status RouterCore::attempt_recv(Event& ev, Frame& out) {
  // Events and probes before data: frames a departed peer sent are read before its departure
  // (a probe only fails once the drop is known, and the peer's frames were queued before it).
  // On a busy socket the monitor is read only now and then (Socket::monitor_due); when the
  // data runs dry it is read, and the data once more if it brought news.
  if (s_->monitor_due(false)) pump_monitor();
  probe_if_due();
  if (!backlog_.empty() && !flush_backlog()) retry_soon();
  if (pop_departed(ev, false)) return {};
  auto st = read(ev, out);
  if (!not_ready(st)) return st;
  if (s_->monitor_due(true) && pump_monitor()) {
    probe_if_due();
    if (pop_departed(ev, false)) return {};
    st = read(ev, out);
    if (!not_ready(st)) return st;
  }
  if (pop_departed(ev, true)) return {};
  return Errc::would_block;
}

Status RouterCore::read(Event& ev, Frame& out) {
  for (;;) {
    zmq::message_t id;
    if (!s_->data().recv(id, zmq::recv_flags::dontwait)) return Errc::would_block;
    if (!id.more()) continue;
    zmq::message_t body;
    (void)s_->data().recv(body, zmq::recv_flags::dontwait);  // arrives with the routing part
    bool multipart = false;
    while (body.more()) {
      multipart = true;
      if (!s_->data().recv(body, zmq::recv_flags::dontwait)) break;
    }
    PeerId peer = id.to_string();
    // A departed peer's last frames may still be read while its departure awaits reporting.
    bool pending_departure = false;
    for (auto& d : departed_) {
      if (d.peer == peer) {
        d.quiet = 0;
        pending_departure = true;
      } else {
        ++d.quiet;
      }
    }
    ev.fresh = !pending_departure && known_.count(peer) == 0;
    if (ev.fresh) {
      known_.insert(peer);
      if (unexplained_ > 0) next_probe_ = Clock::now();  // it may be the one that dropped
    }
    auto [it, first] = state_.try_emplace(peer);
    PeerState& ps = it->second;
    if (first && addresses_) ps.address = peer_address(body);
    ev.peer = PeerInfo{std::move(peer), ps.address, ps.admitted};
    ev.got = Got::frame;
    if (multipart) {
      return Error{Errc::malformed_payload, "multi-part zmq message; a ferry frame is one part"};
    }
    if (body.size() != 0) {
      const std::size_t limit =
          ps.admitted ? s_->max_frame() : std::min(unadmitted_max_, s_->max_frame());
      bool complete = false;
      auto st = ps.in.take(body, limit, out, complete);
      if (!st && st.code() == Errc::frame_too_large && !ps.admitted && limit < s_->max_frame()) {
        // Said in the caller's terms: this limit is about admission, not the frame format.
        return Error{Errc::frame_too_large,
                     "a peer not admitted yet sent a frame larger than its limit of " +
                         std::to_string(limit) + " bytes (" + st.error().detail +
                         "); nothing of it was kept"};
      }
      if (!st || complete) return st;
    }
    // An announcement (or a probe answered in kind), or a part of a frame: nothing to deliver,
    // unless this is the first word from a new peer.
    if (!ev.fresh) continue;
    ev.got = Got::joined;
    return {};
  }
}

Status RouterCore::attempt_send(const PeerId& peer, WireFrame& w) {
  if (s_->monitor_due(false)) pump_monitor();
  probe_if_due();
  for (int pass = 0;; ++pass) {
    auto st = send_some(peer, w);
    if (st.code() != Errc::queue_full) return st;
    // Full. A send processes zmq's commands only now and then, so one that gave this peer
    // room may be waiting: reading ZMQ_EVENTS processes them (and re-arms ZMQ_FD, so the wait
    // that follows wakes at the next command, room for this peer among them). POLLOUT on a
    // ROUTER means some peer has room, maybe not this one: one more try, then the wait.
    // Socket::run does not read ZMQ_EVENTS again for a ROUTER's send (see there).
    if (pass == 1 || (s_->data().get(zmq::sockopt::events) & ZMQ_POLLOUT) == 0) {
      // A wait may follow, so the monitor now (its drops start the probes).
      if (s_->monitor_due(true) && pump_monitor()) probe_if_due();
      return st;
    }
  }
}

Status RouterCore::send_some(const PeerId& peer, WireFrame& w) {
  // Earlier frames' rests first (they go before anything else to their peer).
  if (!backlog_.empty() && !flush_backlog() && backlog_.count(peer) != 0) {
    retry_soon();
    return Error{Errc::queue_full, "the peer's queue is at its high-water mark"};
  }
  for (; !w.done(); w.advance()) {
    switch (send_to(peer, w.next())) {
      case SendOutcome::sent:
        continue;
      case SendOutcome::unreachable:
        mark_departed(peer);
        return Error{Errc::channel_closed, "peer went away (or never connected)"};
      case SendOutcome::full:
        return Error{Errc::queue_full, "the peer's queue is at its high-water mark"};
    }
  }
  return {};
}

std::vector<PeerId> RouterCore::peers() const {
  return {known_.begin(), known_.end()};
}

}  // namespace zmq_detail

using namespace zmq_detail;

struct ZmqRouter::Impl {
  Impl(std::unique_ptr<Socket> s, std::size_t unadmitted_max)
      : core(std::move(s), unadmitted_max, true) {}
  RouterCore core;
};

ZmqRouter::ZmqRouter(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
ZmqRouter::ZmqRouter(ZmqRouter&&) noexcept = default;
ZmqRouter& ZmqRouter::operator=(ZmqRouter&&) noexcept = default;
ZmqRouter::~ZmqRouter() = default;

Result<ZmqRouter> ZmqRouter::bind(const Endpoint& endpoint, const ChannelOptions& options,
                                  const ZmqOptions& zmq) {
  if (endpoint.scheme != Scheme::zmq_ipc && endpoint.scheme != Scheme::zmq_tcp) {
    return Error{Errc::invalid_argument,
                 "'" + endpoint.str() + "' is not a ZeroMQ endpoint (ipc:// or tcp://)"};
  }
  auto s = Socket::open(zmq::socket_type::router, endpoint.address, Role::bind, options, zmq);
  if (!s) return std::move(s).error();
  return ZmqRouter(std::make_unique<Impl>(std::move(*s), zmq.unadmitted_max_frame));
}

Status ZmqRouter::recv_until(PeerId& from, Frame& out, Deadline d) {
  PeerInfo info;
  auto st = recv_until(info, out, d);
  if (!info.id.empty()) from = std::move(info.id);
  return st;
}

Status ZmqRouter::recv_until(PeerInfo& from, Frame& out, Deadline d) {
  try {
    return impl_->core.socket().run(kRecv, d, [&]() -> Status {
      for (;;) {
        RouterCore::Event ev;
        auto st = impl_->core.attempt_recv(ev, out);
        if (not_ready(st)) return st;
        from = std::move(ev.peer);
        if (!st) return st;
        switch (ev.got) {
          case RouterCore::Got::joined:
            continue;
          case RouterCore::Got::departed:
            return Error{Errc::channel_closed, "peer closed the connection or died"};
          case RouterCore::Got::frame:
            return {};
        }
      }
    });
  } catch (const zmq::error_t& e) {
    return zmq_error("zmq router recv", e);
  }
}

Status ZmqRouter::send_until(const PeerId& to, const Frame& f, Deadline d) {
  if (auto st = check_size(f, impl_->core.socket().max_frame()); !st) return st;
  try {
    WireFrame w(f);
    auto& core = impl_->core;
    auto st = core.socket().run(kSend, d, [&]() -> Status { return core.attempt_send(to, w); });
    return committed(std::move(st), w, core.socket().mutex(), [&] { core.keep_rest(to, w); });
  } catch (const zmq::error_t& e) {
    return zmq_error("zmq router send", e);
  }
}

Status ZmqRouter::admit(const PeerId& peer) {
  std::lock_guard lk(impl_->core.socket().mutex());
  return impl_->core.admit(peer, true);
}

Status ZmqRouter::revoke(const PeerId& peer) {
  std::lock_guard lk(impl_->core.socket().mutex());
  return impl_->core.admit(peer, false);
}

std::vector<PeerId> ZmqRouter::peers() const {
  std::lock_guard lk(impl_->core.socket().mutex());
  return impl_->core.peers();
}

std::string ZmqRouter::endpoint() const {
  return impl_->core.socket().endpoint();
}

int ZmqRouter::wait_fd() const noexcept {
  return impl_->core.socket().wait_fd();
}

}  // namespace ferry::ipc
