// ferry::Actor<C>: one instance of a class registered with FERRY_ACTOR (ferry/shared/actor.hpp),
// living in a worker process of its own, and called through futures.
//
//   ferry::Pool pool({.workers = 4});
//   auto counter = pool.actor<Counter>(ferry::ActorOptions{.max_restarts = 3}, 10);
//   ferry::Future<std::int64_t> f = counter.call(&Counter::add, 5);   // 15
//
// Placement (ActorOptions::placement): local (the default) gives each actor a dedicated local
// worker process (started with the pool's worker program, transport and task libraries), not
// one of the pool's task slots. remote takes one remote worker that joined the pool
// (PoolOptions::listen, `ferry-worker --connect`) and serves the actor's constructor out of the
// pool's task slots for the actor's life: no ordinary task is sent to it until the actor goes
// away, and then it serves tasks again. If none is free, pool.actor() waits for one up to the
// start-up timeout, then throws ferry::Exception (timeout) naming how many joined and how many
// actors hold them; a pool without a listen address throws at once. pid() is then the worker's
// pid on its host.
//
// Order: calls run one at a time, in the order call() was entered (across threads: the order
// in which their calls took the actor's queue), never reordered and never retried.
//
// Death: when the process dies (remote: the worker is lost, disconnects or is evicted), the
// calls not yet finished (running, sent to it, or waiting) fail with ferry::ActorDied naming
// the cause (signal, exit status, the worker's end, or what its constructor threw); none of
// them runs later. The actor is then restarted with its constructor arguments (fresh state) up
// to ActorOptions::max_restarts times, and calls made after that run on the new instance. Once
// the restarts are used up, every call fails with ActorDied naming the last cause. A remote
// actor is restarted on another free joined remote worker (or the same one if it rejoins),
// waiting up to the start-up timeout for one; if none comes, it is gone for good, naming that.
// cancel() on a call's future removes it if it has not been sent to the process, and otherwise
// stops the process (which counts as a death). Remote: a remote worker is never stopped, so
// cancel() fails a sent call with Cancelled while it may still run there (later calls wait for
// it); a call still waiting for the instance to be built cannot be cancelled.
//
// Lifetime: the process is stopped and reaped when the handle is destroyed (after the calls
// made so far have finished) or when its pool shuts down (with the pool's mode: drain lets the
// calls finish, cancel fails them with Cancelled). Futures of its calls may outlive both.
// then/on_done callbacks of its calls run on the actor's own callback thread (remote: the
// pool's), which its end waits for: do not let the last handle go inside one of them. A remote
// actor's worker is given back, not stopped; the instance stays in that process until another
// instance of the class is built there or the process exits.
//
// Threading: call(), pid(), restarts() and wait_ready() may be used from any thread at once;
// the handle itself is move-only, and moving or destroying it is not concurrent with its use.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeindex>
#include <utility>
#include <vector>

#include "ferry/coordinator/future.hpp"
#include "ferry/shared/actor.hpp"
#include "ferry/shared/task.hpp"

namespace ferry {

class Pool;
struct PoolOptions;
enum class ShutdownMode;

// Where an actor's instance lives (ActorOptions::placement).
enum class ActorPlacement : std::uint8_t {
  local,   // a worker process of its own, spawned beside the pool's workers
  remote,  // one joined remote worker of the pool, reserved for the actor's life
};

struct ActorOptions {
  // Restarts with the constructor's arguments after the process died; then calls fail for good.
  unsigned max_restarts = 3;
  // Spawn -> ready (the constructor is run before the first call); 0: the pool's startup_timeout.
  // Remote: also how long to wait for a free joined remote worker, at creation and restart.
  std::chrono::milliseconds startup_timeout{0};
  ActorPlacement placement = ActorPlacement::local;
};

namespace detail {

class RemoteActor;

// The non-template part of an actor (coordinator/src/actor.cpp): its process, its queue of
// calls, its restarts. Owned by the Actor handle; its pool keeps a weak reference.
class ActorCore {
 public:
  // owner: the pool's core (remote placement reserves one of its remote workers).
  ActorCore(const PoolOptions& pool, std::shared_ptr<PoolCore> owner, std::string class_name,
            std::string constructor, Bytes args, ActorOptions opt);
  ~ActorCore();
  ActorCore(const ActorCore&) = delete;
  ActorCore& operator=(const ActorCore&) = delete;

  // Sends a call of the method task `task` (its arguments encoded); the state completes with its
  // result, or ActorDied / Cancelled.
  std::shared_ptr<TaskState> call(const std::string& task, Bytes args);
  std::weak_ptr<PoolCore> core() const;
  pid_t pid() const;
  unsigned restarts() const;
  bool wait_ready(std::chrono::milliseconds timeout);
  bool wait_restarted(unsigned n, std::chrono::milliseconds timeout);
  void shutdown(ShutdownMode mode);
  const std::string& class_name() const noexcept { return class_name_; }

  struct Watch;  // the process's ends, as the supervisor reaps them

 private:
  std::string class_name_;
  ActorOptions opt_;
  std::shared_ptr<Watch> watch_;
  std::unique_ptr<Pool> pool_;           // local: one worker; the actor's own supervisor and queue
  std::shared_ptr<RemoteActor> remote_;  // remote placement (coordinator/src/remote_actor.hpp)
  std::weak_ptr<PoolCore> owner_;
};

// The actors of one pool, stopped with it.
class ActorSet {
 public:
  void add(const std::shared_ptr<ActorCore>& a);
  void shutdown(ShutdownMode mode);

 private:
  std::mutex m_;
  std::vector<std::weak_ptr<ActorCore>> actors_;
};

[[noreturn]] void throw_unknown_method(const std::string& cls);

}  // namespace detail

template <class C>
class Actor {
 public:
  Actor() = default;
  Actor(Actor&&) noexcept = default;
  Actor& operator=(Actor&&) noexcept = default;
  ~Actor() = default;  // the core's destructor stops the process

  bool valid() const noexcept { return core_ != nullptr; }

  // Calls m on the instance with args; the method must be one FERRY_ACTOR named.
  template <class R, class... P, class... A>
  Future<std::decay_t<R>> call(R (C::*m)(P...), A&&... args) {
    return send<std::decay_t<R>, P...>(m, std::forward<A>(args)...);
  }
  template <class R, class... P, class... A>
  Future<std::decay_t<R>> call(R (C::*m)(P...) const, A&&... args) {
    return send<std::decay_t<R>, P...>(m, std::forward<A>(args)...);
  }
  template <class R, class... P, class... A>
  Future<std::decay_t<R>> call(R (C::*m)(P...) noexcept, A&&... args) {
    return send<std::decay_t<R>, P...>(m, std::forward<A>(args)...);
  }
  template <class R, class... P, class... A>
  Future<std::decay_t<R>> call(R (C::*m)(P...) const noexcept, A&&... args) {
    return send<std::decay_t<R>, P...>(m, std::forward<A>(args)...);
  }

  // The actor's process now (0 while it is being restarted or after it stopped for good).
  pid_t pid() const { return core_->pid(); }
  // How many times it was restarted after its process died.
  unsigned restarts() const { return core_->restarts(); }
  // Waits until its process is running (after a restart: the new one); false at timeout or once
  // it cannot be restarted.
  bool wait_ready(std::chrono::milliseconds timeout) { return core_->wait_ready(timeout); }
  // Waits until its process has died n times (counted from its start) and the n-th restart is
  // running; false at timeout, or once it will not be restarted (max_restarts used up, stopped).
  bool wait_restarted(unsigned n, std::chrono::milliseconds timeout) {
    return core_->wait_restarted(n, timeout);
  }

 private:
  friend class Pool;
  explicit Actor(std::shared_ptr<detail::ActorCore> core) : core_(std::move(core)) {}

  template <class R, class... P, class M, class... A>
  Future<R> send(M m, A&&... args) {
    static_assert(sizeof...(P) == sizeof...(A), "Actor::call: wrong number of arguments");
    const std::string* task =
        actor_detail::MethodTable::instance().find(std::type_index(typeid(C)), m);
    if (!task) detail::throw_unknown_method(core_->class_name());
    auto s =
        core_->call(*task, encode_value(std::tuple<std::decay_t<P>...>(std::forward<A>(args)...)));
    return Future<R>(std::move(s), core_->core());
  }

  std::shared_ptr<detail::ActorCore> core_;
};

}  // namespace ferry
