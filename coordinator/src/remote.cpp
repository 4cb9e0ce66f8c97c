// Remote workers: one ROUTER socket on the listen address, served by one thread that admits
// workers, routes their results, pings them and declares silent ones lost.
#include <arpa/inet.h>

#include <algorithm>

#include "ferry/ipc/curve.hpp"
#include "ferry/ipc/endpoint.hpp"
#include "pool_core.hpp"

namespace ferry::detail {
namespace {

using Clock = std::chrono::steady_clock;

bool is_loopback_host(const std::string& host) {
  if (host == "localhost" || host == "::1" || host == "[::1]") return true;
  in_addr a{};
  return ::inet_pton(AF_INET, host.c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

}  // namespace

void PoolCore::open_listener() {
  auto ep = ipc::Endpoint::parse(opt_.listen);
  if (!ep) throw Exception(Error{ep.error().code, "--listen: " + ep.error().detail});
  if (ep->scheme == ipc::Scheme::zmq_tcp && opt_.keys.empty() && !opt_.insecure) {
    const std::string& a = ep->address;  // "tcp://HOST:PORT"
    const auto host_begin = a.find("://") + 3;
    const std::string host = a.substr(host_begin, a.rfind(':') - host_begin);
    if (!is_loopback_host(host)) {
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
      event("rejected a connection: its CURVE key " + std::string(key) +
            " is not in authorized_workers");
      return false;
    };
    zo.curve_server = std::move(*server);
  }
  auto r = ipc::ZmqRouter::bind(*ep, {}, zo);
  if (!r)
    throw Exception(Error{r.error().code, "--listen " + opt_.listen + ": " + r.error().detail});
  router_ = std::make_unique<ipc::ZmqRouter>(std::move(*r));
}

std::string PoolCore::listen_endpoint() const {
  return router_ ? router_->endpoint() : "";
}

void PoolCore::on_remote_frame(const ipc::PeerId& from, Frame& f) {
  WorkerLink* link = nullptr;
  {
    std::lock_guard lk(mu_);
    if (banned_.count(from)) return;
    if (auto it = peers_.find(from); it != peers_.end()) link = it->second;
    if (link) link->last_heard = Clock::now();
  }
  if (f.header.kind == MessageKind::hello) {
    auto hello = decode_value<msg::Hello>(f.payload);
    if (!hello) {
      event("dropping a peer that sent a bad hello: " + hello.error().message());
      std::lock_guard lk(mu_);
      banned_.insert(from);
      return;
    }
    if (link) retire(*link, std::nullopt, "registered again");  // same socket, new session
    auto fresh = std::make_unique<WorkerLink>();
    fresh->remote = true;
    fresh->peer = from;
    fresh->slots = std::clamp<std::uint32_t>(hello->slots, 1, 1024);
    fresh->pid = hello->pid;
    fresh->host = hello->host;
    fresh->name = hello->name;
    fresh->credit_bytes = std::size_t{64} << 20;
    fresh->last_heard = fresh->last_ping = Clock::now();
    WorkerLink* raw = fresh.get();
    {
      std::lock_guard lk(mu_);
      raw->id = next_worker_id_++;
      links_.push_back(std::move(fresh));
      peers_[from] = raw;
    }
    auto w = admit(*raw, *hello);
    if (!w) {
      retire(*raw, std::nullopt, "rejected");
      return;
    }
    {
      std::lock_guard lk(raw->send_mu);
      if (!send_to(*raw, make_frame(MessageKind::welcome, *w),
                   Deadline::after(std::chrono::seconds(1)))) {
        retire(*raw, std::nullopt, "could not send the welcome");
        return;
      }
    }
    event("worker w" + std::to_string(raw->id) + " joined from " + raw->host + " (pid " +
          std::to_string(raw->pid) + ", " + std::to_string(raw->slots) + " slot(s)" +
          (raw->name.empty() ? "" : ", " + raw->name) + ")");
    std::vector<SendJob> jobs;
    {
      std::lock_guard lk(mu_);
      raw->state = WorkerLink::State::ready;
      raw->stats_index = stats_.workers.size();
      stats_.workers.push_back(WorkerStats{raw->id, raw->pid, 0, true, true, raw->host, raw->name});
      state_cv_.notify_all();
      pump_locked(jobs);
    }
    flush(jobs);
    return;
  }
  if (!link) {
    // A worker we declared lost (or never met) is still talking: ask it to register again.
    std::lock_guard lk(router_send_mu_);
    (void)router_->send_until(
        from, make_frame(MessageKind::reject, msg::Reject{"unknown worker: register again"}),
        Deadline::now());
    return;
  }
  if (f.header.kind == MessageKind::heartbeat) return;
  on_frame(*link, f);
}

void PoolCore::remote_housekeeping() {
  const auto now = Clock::now();
  std::vector<std::pair<WorkerLink*, std::string>> lost;
  std::vector<WorkerLink*> ping;
  {
    std::lock_guard lk(mu_);
    for (auto& l : links_) {
      if (!l->remote || l->state == WorkerLink::State::dead) continue;
      if (now - l->last_heard > opt_.heartbeat_timeout) {
        lost.emplace_back(l.get(),
                          "no message for " +
                              std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                 now - l->last_heard)
                                                 .count()) +
                              " ms (heartbeat timeout " +
                              std::to_string(opt_.heartbeat_timeout.count()) + " ms)");
        continue;
      }
      if (opt_.task_timeout.count() > 0) {
        const std::size_t running = std::min<std::size_t>(l->slots, l->inflight.size());
        bool late = false;
        for (std::size_t i = 0; i < running; ++i) {
          if (now - l->inflight[i]->started > opt_.task_timeout) {
            l->inflight[i]->timeout_kill = true;
            late = true;
          }
        }
        if (late) {
          // A thread cannot be killed: the worker is told to restart, and its tasks move.
          l->kill_reason = "a task ran past the task timeout";
          lost.emplace_back(l.get(), "a task ran past the task timeout; worker told to restart");
          continue;
        }
      }
      if (now - l->last_ping >= opt_.heartbeat_interval) {
        l->last_ping = now;
        ping.push_back(l.get());
      }
    }
  }
  for (auto* l : ping) {
    std::lock_guard lk(l->send_mu);
    (void)send_to(*l, make_frame(MessageKind::heartbeat, msg::Heartbeat{}), Deadline::now());
  }
  for (auto& [l, why] : lost) {
    if (!l->kill_reason.empty()) {
      std::lock_guard lk(l->send_mu);
      (void)send_to(*l, make_frame(MessageKind::shutdown, msg::Shutdown{false}), Deadline::now());
    }
    retire(*l, std::nullopt, why);
  }
}

void PoolCore::router_loop() {
  Frame f;
  ipc::PeerId from;
  while (!router_stop_.load()) {
    auto st = router_->recv_for(from, f, std::chrono::milliseconds(50));
    if (st) {
      on_remote_frame(from, f);
    } else if (st.error().code == Errc::channel_closed) {
      WorkerLink* link = nullptr;
      {
        std::lock_guard lk(mu_);
        if (auto it = peers_.find(from); it != peers_.end()) link = it->second;
      }
      if (link) retire(*link, std::nullopt, "disconnected");
    } else if (st.error().code != Errc::timeout && st.error().code != Errc::would_block) {
      // Garbage from a peer: it is dropped (ignored from now on), the pool goes on.
      WorkerLink* link = nullptr;
      {
        std::lock_guard lk(mu_);
        banned_.insert(from);
        if (auto it = peers_.find(from); it != peers_.end()) link = it->second;
      }
      event("dropping a peer that sent a malformed frame: " + st.error().message());
      if (link) retire(*link, std::nullopt, "sent a malformed frame");
    }
    remote_housekeeping();
  }
}

}  // namespace ferry::detail
