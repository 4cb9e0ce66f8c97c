// Remote workers: the listen router, admission, heartbeats, departures.
#include "membership.hpp"

#include <arpa/inet.h>

#include <algorithm>

#include "ferry/ipc/curve.hpp"
#include "ferry/ipc/endpoint.hpp"
#include "ferry/shared/frame_batch.hpp"
#include "ferry/shared/log.hpp"
#include "ferry/shared/object_ref.hpp"
#include "pool_core.hpp"

namespace ferry::detail {
namespace {

using std::chrono::milliseconds;

bool is_loopback_host(const std::string& host) {
  if (host == "localhost" || host == "::1" || host == "[::1]") return true;
  in_addr a{};
  return ::inet_pton(AF_INET, host.c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

std::string ms_text(SchedClock::duration d) {
  return std::to_string(std::chrono::duration_cast<milliseconds>(d).count()) + " ms";
}

}  // namespace

Membership::Membership(PoolCore& core, const PoolOptions& opt) : core_(core), opt_(opt) {
  auto ep = ipc::Endpoint::parse(opt_.listen);
  if (!ep) throw Exception(Error{ep.error().code, "--listen: " + ep.error().detail});
  if (ep->scheme == ipc::Scheme::zmq_tcp && opt_.keys.empty() && !opt_.insecure) {
    const auto tcp = ipc::parse_tcp_address(ep->address);  // parse() checked it
    if (!tcp || !is_loopback_host(tcp->host)) {
      throw Exception(Error{
          Errc::invalid_argument,
          "refusing to listen on " + opt_.listen +
              " without --keys: anyone who can reach that port could submit work to this "
              "pool's workers and read its results. Make keys with `ferry-coordinator keygen "
              "DIR` and pass --keys DIR (workers too), or add --insecure on a network you trust"});
    }
  }
  ipc::ZmqOptions zo;
  zo.heartbeat_interval = opt_.heartbeat_interval;
  zo.heartbeat_timeout = opt_.heartbeat_timeout;
  if (!opt_.keys.empty()) {
    auto server = ipc::load_curve_server(opt_.keys);
    if (!server) throw Exception(Error{server.error().code, "--keys: " + server.error().detail});
    // Runs on zmq's authentication thread during the handshake, before any frame is read.
    server->authorize = [this, allowed = std::move(server->authorize)](std::string_view key) {
      if (allowed(key)) return true;
      log_limited("key " + std::string(key), "rejected a connection: its CURVE key " +
                                                 std::string(key) +
                                                 " is not in authorized_workers");
      return false;
    };
    zo.curve_server = std::move(*server);
  }
  auto r = ipc::ZmqRouter::bind(*ep, {}, zo);
  if (!r) {
    throw Exception(Error{r.error().code, "--listen " + opt_.listen + ": " + r.error().detail});
  }
  router_ = std::make_unique<ipc::ZmqRouter>(std::move(*r));
}

Membership::~Membership() {
  stop(false);
}

void Membership::start() {
  thread_ = std::thread([this] {
    try {
      run();
    } catch (const std::exception& e) {
      core_.event(EventLevel::error,
                  std::string("remote workers: the listener failed: ") + e.what());
    }
  });
}

std::string Membership::endpoint() const {
  return router_->endpoint();
}

Status Membership::send(const ipc::PeerId& to, std::span<const Frame> frames, ipc::Deadline d) {
  // Several frames for one worker go as one Batch frame (one zmq message, one wake-up of the
  // I/O threads on both sides), up to 1 MiB: a larger frame goes alone, uncopied.
  constexpr std::size_t kBatchBytes = std::size_t{1} << 20;
  while (!frames.empty()) {
    const std::size_t n = batch_span(frames, kBatchBytes);
    Frame batch;
    if (n > 1) batch = make_batch(frames.first(n));  // encoded before the lock
    std::lock_guard lk(send_mu_);
    if (auto st = router_->send_until(to, n > 1 ? batch : frames.front(), d); !st) return st;
    frames = frames.subspan(n);
  }
  return {};
}

void Membership::log_limited(const std::string& key, const std::string& line) {
  if (limiter_.allow(key)) core_.event(EventLevel::warn, line);
}

void Membership::drop(const ipc::PeerId& peer, EndCause cause, const std::string& detail) {
  std::shared_ptr<RemoteWorker> w;
  {
    std::lock_guard lk(mu_);
    auto it = peers_.find(peer);
    if (it == peers_.end()) return;
    w = std::move(it->second.worker);
    peers_.erase(it);
  }
  (void)router_->revoke(peer);  // back to the small limit of peers that did not say hello
  EndInfo end;
  end.cause = cause;
  end.detail = detail;
  core_.worker_gone(w->id(), end);
}

void Membership::ban(const ipc::PeerInfo& peer, const std::string& why) {
  {
    std::lock_guard lk(mu_);
    banned_.insert(peer.id);
  }
  const std::string where = peer.address.empty() ? "unknown address" : peer.address;
  log_limited("garbage " + where,
              "dropping a peer at " + where + " that " + why + " (said once a minute per address)");
  drop(peer.id, EndCause::bad_frame, why);
}

void Membership::evict(WorkerId id, const ipc::PeerId& peer, EndCause why) {
  {
    std::lock_guard lk(mu_);
    auto it = peers_.find(peer);
    if (it == peers_.end() || it->second.worker->id() != id) return;
  }
  // A thread cannot be killed: the worker is told to restart, and its tasks move.
  const Frame bye = make_frame(MessageKind::shutdown, msg::Shutdown{false});
  (void)send(peer, std::span<const Frame>(&bye, 1), ipc::Deadline::now());
  drop(peer, why, std::string(to_string(why)) + "; worker told to restart");
}

void Membership::refuse(const ipc::PeerInfo& peer, const msg::Hello& hello,
                        const std::string& reason) {
  const Frame r = make_frame(MessageKind::reject, msg::Reject{reason});
  (void)send(peer.id, std::span<const Frame>(&r, 1), ipc::Deadline::after(milliseconds(500)));
  log_limited("refused " + peer.address, "rejected worker (pid " + std::to_string(hello.pid) +
                                             (hello.host.empty() ? "" : " on " + hello.host) +
                                             " at " + peer.address + "): " + reason);
}

void Membership::on_hello(const ipc::PeerInfo& peer, const Frame& f) {
  const ipc::PeerId& from = peer.id;
  auto hello = decode_value<msg::Hello>(f.payload);
  if (!hello) return ban(peer, "sent a bad hello: " + hello.error().message());
  drop(from, EndCause::lost, "registered again");  // same socket, new session
  greetings_.erase(from);
  if (auto why = version_mismatch(*hello)) return refuse(peer, *hello, *why);
  // Its Offer follows; a list of many tasks may exceed the limit for unadmitted peers.
  (void)router_->admit(from);
  greetings_[from] = Greeting{std::move(*hello), SchedClock::now()};
}

void Membership::on_offer(const ipc::PeerInfo& peer, const Frame& f) {
  const ipc::PeerId& from = peer.id;
  auto g = greetings_.find(from);
  if (g == greetings_.end()) return ban(peer, "sent an offer without a hello");
  const msg::Hello hello = std::move(g->second.hello);
  greetings_.erase(g);
  auto offer = decode_value<msg::Offer>(f.payload);
  if (!offer) return ban(peer, "sent a bad offer: " + offer.error().message());
  WorkerIdentity who;
  who.id = core_.next_worker_id();
  who.remote = true;
  who.slots = std::clamp<std::uint32_t>(hello.slots, 1, 1024);
  who.pid = hello.pid;
  who.host = hello.host;
  who.name = hello.name;
  auto a = admit(core_.admission(), hello, *offer, who.id, true);
  if (!a.welcome) {
    (void)router_->revoke(from);
    return refuse(peer, hello, a.reason);
  }
  auto w = std::make_shared<RemoteWorker>(who, from, *this);
  {
    std::lock_guard lk(w->send_mu);
    const Frame welcome = make_frame(MessageKind::welcome, *a.welcome);
    if (!send(from, std::span<const Frame>(&welcome, 1),
              ipc::Deadline::after(std::chrono::seconds(1)))) {
      return;
    }
  }
  {
    std::lock_guard lk(mu_);
    const auto now = SchedClock::now();
    peers_[from] = Peer{w, now, now};
  }
  const std::string joined = "worker w" + std::to_string(who.id) + " joined from " + who.host +
                             " (pid " + std::to_string(who.pid) + ", " + std::to_string(who.slots) +
                             " slot(s)" + (who.name.empty() ? "" : ", " + who.name) + ")";
  core_.event(EventLevel::info, joined);
  core_.worker_joined(w, a);
}

// An admitted worker asks for a chunk of an object this process put (a task of its names it
// in an ObjectRef). Answered from the segment's mapping, a chunk within the frame limit; an
// object not (or no longer) held here gets its reason.
void Membership::on_fetch(const ipc::PeerInfo& peer, const Frame& f) {
  auto ask =
      msg::decode<msg::ObjectFetch>(FrameView{f.header, f.payload}, MessageKind::object_fetch);
  if (!ask) return ban(peer, "sent a bad object request: " + ask.error().message());
  msg::ObjectData d;
  d.offset = ask->offset;
  d.total = ask->size;
  const auto block = own_object(ask->name);
  if (!block) {
    d.error = "holds no object '" + ask->name + "' (freed by its pool, or not one of its)";
  } else if (block->size() != ask->size) {
    d.error = "holds object '" + ask->name + "' with " + std::to_string(block->size()) +
              " bytes, the ref says " + std::to_string(ask->size);
  } else {
    const ByteView all = block->encoded();
    if (all.size() != block->size()) {
      d.error = "cannot read object '" + ask->name + "' any more";
    } else if (ask->offset > all.size() || (ask->max_bytes == 0 && ask->offset < all.size())) {
      d.error = "was asked for bytes from " + std::to_string(ask->offset) + " of object '" +
                ask->name + "' (" + std::to_string(all.size()) + " bytes)";
    } else {
      // Within our own frame limit too, whatever the worker's is.
      const std::uint64_t n = std::min<std::uint64_t>(
          {ask->max_bytes, all.size() - ask->offset, kDefaultMaxFrame - 4096});
      const ByteView part = all.subspan(ask->offset, n);
      d.bytes.assign(part.begin(), part.end());
    }
  }
  const Frame reply = make_frame(MessageKind::object_data, d, f.header.request_id);
  const bool sent = send(peer.id, std::span<const Frame>(&reply, 1),
                         ipc::Deadline::after(std::chrono::seconds(5)))
                        .has_value();
  if (sent && d.error.empty()) {
    core_.count_served(d.bytes.size(), d.offset + d.bytes.size() == d.total);
  }
}

void Membership::on_frame(const ipc::PeerInfo& peer, Frame& f) {
  const ipc::PeerId& from = peer.id;
  WorkerId id = 0;
  {
    std::lock_guard lk(mu_);
    if (banned_.count(from)) return;
    if (auto it = peers_.find(from); it != peers_.end()) {
      it->second.last_heard = SchedClock::now();
      id = it->second.worker->id();
    }
  }
  if (f.header.kind == MessageKind::hello) return on_hello(peer, f);
  if (id == 0 && f.header.kind == MessageKind::offer) return on_offer(peer, f);
  if (id == 0) {
    // A worker we declared lost (or never met) is still talking: ask it to register again.
    const Frame r = make_frame(MessageKind::reject, msg::Reject{"unknown worker: register again"});
    (void)send(from, std::span<const Frame>(&r, 1), ipc::Deadline::now());
    return;
  }
  if (f.header.kind == MessageKind::object_fetch) return on_fetch(peer, f);
  if (f.header.kind == MessageKind::heartbeat) {
    if (auto hb =
            msg::decode<msg::Heartbeat>(FrameView{f.header, f.payload}, MessageKind::heartbeat))
      core_.note_heartbeat(id, *hb);
    return;
  }
  if (f.header.kind == MessageKind::batch) return on_batch(peer, id, f);
  core_.on_frames(id, std::span<Frame>(&f, 1), true);
}

void Membership::on_batch(const ipc::PeerInfo& peer, WorkerId id, const Frame& f) {
  unpacked_.clear();
  if (auto st = unpack_batch(f, unpacked_); !st) {
    return ban(peer, "sent a malformed batch: " + st.error().message());
  }
  // Heartbeat answers are noted here; the results go to the pool in one call (one lock, and
  // their follow-up tasks to this worker as one batch).
  std::size_t keep = 0;
  for (Frame& in : unpacked_) {
    if (in.header.kind == MessageKind::heartbeat) {
      if (auto hb =
              msg::decode<msg::Heartbeat>(FrameView{in.header, in.payload}, MessageKind::heartbeat))
        core_.note_heartbeat(id, *hb);
      continue;
    }
    if (in.header.kind == MessageKind::offer) {
      return ban(peer, "sent an offer inside a batch");
    }
    if (&unpacked_[keep] != &in) unpacked_[keep] = std::move(in);
    ++keep;
  }
  if (keep > 0) core_.on_frames(id, std::span<Frame>(unpacked_.data(), keep), true);
}

void Membership::housekeeping() {
  const auto now = SchedClock::now();
  // A hello whose offer never came: forgotten (the worker retries its handshake).
  for (auto it = greetings_.begin(); it != greetings_.end();) {
    if (now - it->second.at >
        std::max<std::chrono::milliseconds>(opt_.heartbeat_timeout, std::chrono::seconds(10))) {
      (void)router_->revoke(it->first);
      it = greetings_.erase(it);
    } else {
      ++it;
    }
  }
  std::vector<std::pair<ipc::PeerId, std::string>> lost;
  std::vector<ipc::PeerId> ping;
  {
    std::lock_guard lk(mu_);
    for (auto& [peer, p] : peers_) {
      if (now - p.last_heard > opt_.heartbeat_timeout) {
        lost.emplace_back(peer, "no message for " + ms_text(now - p.last_heard) +
                                    " (heartbeat timeout " + ms_text(opt_.heartbeat_timeout) + ")");
      } else if (now - p.last_ping >= opt_.heartbeat_interval) {
        p.last_ping = now;
        ping.push_back(peer);
      }
    }
  }
  const Frame hb = make_frame(MessageKind::heartbeat, msg::Heartbeat{});
  for (auto& peer : ping)
    (void)send(peer, std::span<const Frame>(&hb, 1), ipc::Deadline::now());
  for (auto& [peer, why] : lost)
    drop(peer, EndCause::lost, why);
}

void Membership::run() {
  Frame f;
  ipc::PeerInfo from;
  while (!stop_.load()) {
    auto st = router_->recv_for(from, f, milliseconds(50));
    if (st) {
      on_frame(from, f);
    } else if (st.error().code == Errc::channel_closed) {
      drop(from.id, EndCause::lost, "disconnected");
    } else if (st.error().code != Errc::timeout && st.error().code != Errc::would_block) {
      // Garbage from a peer (or a large frame before its hello): dropped and ignored from now
      // on; the pool goes on.
      ban(from, "sent a malformed frame: " + st.error().message());
    }
    housekeeping();
  }
}

void Membership::stop(bool graceful) {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  std::vector<ipc::PeerId> peers;
  {
    std::lock_guard lk(mu_);
    for (auto& [peer, p] : peers_)
      peers.push_back(peer);
  }
  // Told to stop (the frames are flushed when the router closes) and reported gone at once:
  // there is no process of ours to wait for.
  const Frame bye = make_frame(MessageKind::shutdown, msg::Shutdown{graceful});
  for (auto& peer : peers) {
    (void)send(peer, std::span<const Frame>(&bye, 1), ipc::Deadline::after(milliseconds(100)));
    drop(peer, EndCause::shutdown, "the pool shut down");
  }
}

}  // namespace ferry::detail
