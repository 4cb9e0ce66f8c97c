// An actor placed on a remote worker (ActorPlacement::remote; ferry/coordinator/actor.hpp).
// It reserves one joined remote worker of its pool (Scheduler::reserve: no ordinary task goes
// there while it holds it), runs the constructor task there, then sends its calls pinned to
// that worker, which runs them one at a time in the order they were made. Calls made before the
// instance is ready wait here and are sent, in order, once it is. When the worker ends, the
// calls sent to it fail (the pool fails pinned tasks) and those waiting here fail too, with
// ActorDied; a placer thread then reserves another remote worker (waiting up to the start-up
// timeout for one to join or come free) and builds the instance again, up to max_restarts.
//
// Threading: call(), pid(), restarts(), wait_restarted() and shutdown() from any thread. Lock
// order: send_m_, then m_, then the pool's lock (enqueue); listeners and on_gone take m_ only.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ferry/coordinator/actor.hpp"
#include "pool_core.hpp"

namespace ferry::detail {

class RemoteActor : public std::enable_shared_from_this<RemoteActor> {
 public:
  RemoteActor(std::shared_ptr<PoolCore> core, std::string class_name, std::string constructor,
              Bytes args, ActorOptions opt);
  ~RemoteActor();
  // Reserves the first worker (throws ferry::Exception when none is free within the start-up
  // timeout) and starts the placer, which builds the instance there.
  void start();
  std::shared_ptr<TaskState> call(const std::string& task, Bytes args);
  pid_t pid() const;
  unsigned restarts() const;
  bool wait_restarted(unsigned n, std::chrono::milliseconds timeout);
  void shutdown(ShutdownMode mode);

 private:
  struct Waiting {
    std::shared_ptr<TaskState> outer;
    std::uint32_t function = 0;
    Bytes args;
  };
  using Failed = std::vector<std::pair<std::shared_ptr<TaskState>, FailureInfo>>;

  void run_placer();
  // send_m_ held: submits one call pinned to seat (m_ not held).
  void send(Waiting c, WorkerId seat);
  void on_gone(WorkerId seat, const std::string& why);
  // m_ held: the seat's worker ended; the caller completes `failed` after unlocking.
  void lose_seat_locked(const std::string& why, Failed& failed);
  // m_ held: takes r as the seat (or loses it at once if it ended before this).
  void take_seat_locked(const PoolCore::Reservation& r, Failed& failed);
  // m_ held: the waiting calls fail with ActorDied (or Cancelled) and are moved into out.
  void fail_waiting_locked(Failed& out, bool cancelled, const std::string& why);
  FailureInfo died(const std::string& task, std::string message) const;
  std::string where_locked() const;  // "w3 (pid 123 on host)"
  std::string not_restarted_locked() const;

  std::shared_ptr<PoolCore> core_;
  std::string class_name_, constructor_;
  std::uint32_t constructor_fn_ = 0;
  Bytes args_;
  ActorOptions opt_;
  std::chrono::milliseconds place_timeout_;

  std::mutex stop_m_;  // shutdown() from the handle and the pool at once: one stops, one waits
  std::mutex send_m_;  // held while calls are submitted: keeps their order
  mutable std::mutex m_;
  std::condition_variable cv_;
  WorkerId seat_ = 0;  // the reserved worker (0: none now)
  pid_t pid_ = 0;
  std::string host_;
  bool ready_ = false;       // the instance on seat_ is built: calls go straight to it
  bool want_place_ = false;  // the placer should (reserve and) build an instance
  bool gone_ = false;        // for good: restarts used up, or no worker to restart on
  bool stopping_ = false;
  unsigned deaths_ = 0;
  std::string cause_;  // of the last death
  // Reserved workers that ended before the placer took them as its seat (ids are never reused).
  std::map<WorkerId, std::string> ended_early_;
  std::deque<Waiting> waiting_;
  std::size_t outstanding_ = 0;                 // calls sent, not finished
  std::vector<std::weak_ptr<TaskState>> sent_;  // for a cancelling shutdown
  std::atomic<bool> abandon_{false};
  std::thread placer_;
};

}  // namespace ferry::detail
