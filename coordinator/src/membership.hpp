// Remote workers (internal): one ROUTER socket on the listen address, served by one thread
// that admits workers through the pool's one admission path, routes their frames, pings them,
// declares silent ones lost and drops peers that send garbage (logged once a minute per
// address, not on every retry).
//
// Threading: send(), evict() and stop() may be called from any thread; the rest runs on the
// membership thread. mu_ guards the peer tables and is never held while calling the PoolCore.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "ferry/coordinator/pool.hpp"
#include "ferry/ipc/zmq_router.hpp"
#include "ferry/shared/log.hpp"
#include "ferry/shared/messages.hpp"
#include "worker_endpoint.hpp"

namespace ferry::detail {

class PoolCore;
struct EndInfo;

class Membership {
 public:
  // Binds the listen address; throws ferry::Exception naming the problem (bad address,
  // non-loopback TCP without keys or --insecure, unreadable keys).
  Membership(PoolCore& core, const PoolOptions& opt);
  ~Membership();
  Membership(const Membership&) = delete;
  Membership& operator=(const Membership&) = delete;

  void start();
  // Tells every remote worker to stop (graceful: after its running tasks) and reports each
  // gone; joins the thread.
  void stop(bool graceful);
  std::string endpoint() const;
  Status send(const ipc::PeerId& to, std::span<const Frame> frames, ipc::Deadline d);
  // The pool wants this worker gone: it is told to restart, forgotten, and reported gone.
  void evict(WorkerId id, const ipc::PeerId& peer, EndCause why);

 private:
  struct Peer {
    std::shared_ptr<RemoteWorker> worker;
    TimePoint last_heard{}, last_ping{};
  };
  void run();
  void on_frame(const ipc::PeerInfo& from, Frame& f);
  void on_hello(const ipc::PeerInfo& from, const Frame& f);
  // A registered worker's Batch: its frames handled as if each had come alone.
  void on_batch(const ipc::PeerInfo& from, WorkerId id, const Frame& f);
  void on_offer(const ipc::PeerInfo& from, const Frame& f);
  void on_fetch(const ipc::PeerInfo& from, const Frame& f);
  void refuse(const ipc::PeerInfo& peer, const msg::Hello& hello, const std::string& reason);
  void housekeeping();
  // Forgets the peer's worker (if any) and reports it gone.
  void drop(const ipc::PeerId& peer, EndCause cause, const std::string& detail);
  void ban(const ipc::PeerInfo& peer, const std::string& why);
  // Logs line unless a line with the same key was logged within the last minute.
  void log_limited(const std::string& key, const std::string& line);

  PoolCore& core_;
  const PoolOptions& opt_;
  std::unique_ptr<ipc::ZmqRouter> router_;
  std::mutex send_mu_;  // the router has one sending thread at a time
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::vector<Frame> unpacked_;  // a Batch's frames (membership thread only)

  std::mutex mu_;
  std::map<ipc::PeerId, Peer> peers_;
  std::set<ipc::PeerId> banned_;
  log::RateLimiter limiter_{std::chrono::minutes(1)};  // log_limited: once a minute per key
  // Hellos waiting for their Offer (membership thread only).
  struct Greeting {
    msg::Hello hello;
    TimePoint at{};
  };
  std::map<ipc::PeerId, Greeting> greetings_;
};

}  // namespace ferry::detail
