// Actors: each one is a pool of its own with one local worker (ferry/coordinator/actor.hpp).
// That pool gives the actor what it needs and the task pools already have: a supervisor that
// spawns, watches and reaps the process and replaces it when it dies, and one queue of calls
// sent in order to a worker that runs them one at a time. What differs is set in its options:
// no retries (methods have effects), the constructor as the worker's initializer (so a
// replacement starts with fresh state), no recycling, and a launcher that counts the deaths and
// refuses to start a process once max_restarts is used up.
#include "ferry/coordinator/actor.hpp"

#include <algorithm>
#include <condition_variable>
#include <optional>

#include "ferry/coordinator/pool.hpp"
#include "ferry/coordinator/process.hpp"
#include "ferry/shared/log.hpp"
#include "remote_actor.hpp"

namespace ferry::detail {

struct ActorCore::Watch {
  std::string class_name;
  unsigned max_restarts = 0;
  std::mutex m;
  std::condition_variable cv;
  unsigned deaths = 0;    // ends of its process that we did not ask for
  bool stopping = false;  // the handle or the pool is stopping it: its end is no death
  pid_t pid = 0;          // the process now, 0 between a death and the next start
  std::optional<coordinator::ExitInfo> last;  // how the last one died
  std::string constructor;                    // its task name
  std::string init_error;  // "threw T: what" when the last process's constructor threw

  bool exhausted_locked() const { return deaths > max_restarts; }
  // "signal 9 (SIGKILL)": how the last process died.
  std::string cause_locked() const {
    if (!init_error.empty()) return "its constructor " + init_error;
    return last ? last->describe() : "an unknown cause";
  }
};

namespace {

// A process of the actor: reports its end to the watch once, when the supervisor reaps it.
class WatchedProcess final : public coordinator::Process {
 public:
  WatchedProcess(std::unique_ptr<coordinator::Process> p, std::shared_ptr<ActorCore::Watch> w)
      : p_(std::move(p)), w_(std::move(w)) {}
  pid_t pid() const noexcept override { return p_->pid(); }
  int pidfd() const noexcept override { return p_->pidfd(); }
  Status kill(int sig) noexcept override { return p_->kill(sig); }
  std::optional<coordinator::ExitInfo> try_reap() noexcept override {
    auto r = p_->try_reap();
    if (r && !ended_) {
      ended_ = true;
      {
        std::lock_guard lk(w_->m);
        if (w_->pid == p_->pid()) w_->pid = 0;
        if (!w_->stopping) {
          ++w_->deaths;
          w_->last = *r;
        }
      }
      w_->cv.notify_all();
    }
    return r;
  }

 private:
  std::unique_ptr<coordinator::Process> p_;
  std::shared_ptr<ActorCore::Watch> w_;
  bool ended_ = false;
};

class ActorLauncher final : public coordinator::Launcher {
 public:
  ActorLauncher(std::shared_ptr<coordinator::Launcher> inner, std::shared_ptr<ActorCore::Watch> w)
      : inner_(std::move(inner)), w_(std::move(w)) {}
  Result<std::unique_ptr<coordinator::Process>> spawn(const coordinator::SpawnSpec& spec) override {
    {
      std::lock_guard lk(w_->m);
      if (w_->exhausted_locked() || w_->stopping) {
        return Error{Errc::cancelled,
                     "actor " + w_->class_name + " is not restarted: " +
                         (w_->stopping ? std::string("it is stopping")
                                       : "its max_restarts (" + std::to_string(w_->max_restarts) +
                                             ") are used up")};
      }
    }
    auto p = inner_->spawn(spec);
    if (!p) return std::move(p).error();
    {
      std::lock_guard lk(w_->m);
      w_->pid = (*p)->pid();
      w_->init_error.clear();
    }
    w_->cv.notify_all();
    return std::unique_ptr<coordinator::Process>(new WatchedProcess(std::move(*p), w_));
  }

 private:
  std::shared_ptr<coordinator::Launcher> inner_;
  std::shared_ptr<ActorCore::Watch> w_;
};

// What the caller is told when the actor's process died with its call, or is gone for good.
FailureInfo actor_died(FailureInfo f, ActorCore::Watch& w) {
  std::lock_guard lk(w.m);
  const bool had_process = f.kind == FailureKind::worker_died;
  f.kind = FailureKind::actor_died;
  f.max_attempts = 0;  // never retried: nothing to count
  std::string cause;
  if (!w.init_error.empty()) {
    // The pool stops a worker whose initializer failed: its exit status says less.
    cause = "its constructor " + w.init_error;
  } else if (had_process && (f.signal != 0 || f.exit_code >= 0)) {
    cause = coordinator::ExitInfo{f.exit_code, f.signal}.describe();
  } else {
    cause = w.cause_locked();
    if (w.last) {
      f.signal = w.last->signal;
      f.exit_code = w.last->code;
    }
  }
  std::string m = "actor " + w.class_name;
  if (had_process) {
    // A call that was still waiting for the process has no pid of its own: the cause is the
    // death just recorded.
    m += "'s process" + (f.pid ? " (pid " + std::to_string(f.pid) + ")" : std::string()) +
         " died with this call " + (f.pid ? "in it" : "waiting for it") + ": " + cause;
  } else {
    m += " is gone: its process died (" + cause + ")";
  }
  if (w.exhausted_locked()) {
    m += "; not restarted: its max_restarts (" + std::to_string(w.max_restarts) + ") are used up";
  } else if (had_process) {
    m += "; restarted with its constructor's arguments (restart " +
         std::to_string(std::min(w.deaths, w.max_restarts)) + " of at most " +
         std::to_string(w.max_restarts) + ")";
  }
  f.message = std::move(m);
  return f;
}

}  // namespace

ActorCore::ActorCore(const PoolOptions& pool, std::shared_ptr<PoolCore> owner,
                     std::string class_name, std::string constructor, Bytes args, ActorOptions opt)
    : class_name_(std::move(class_name)),
      opt_(opt),
      watch_(std::make_shared<Watch>()),
      owner_(owner) {
  if (opt.placement == ActorPlacement::remote) {
    remote_ = std::make_shared<RemoteActor>(std::move(owner), class_name_, std::move(constructor),
                                            std::move(args), opt);
    remote_->start();
    return;
  }
  watch_->class_name = class_name_;
  watch_->max_restarts = opt.max_restarts;
  watch_->constructor = constructor;
  PoolOptions o;
  o.workers = 1;
  o.transport = pool.transport;
  o.worker_program = pool.worker_program;
  o.worker_args = pool.worker_args;
  o.task_libraries = pool.task_libraries;
  o.max_retries = 0;
  o.fail_sent_on_death = true;
  o.task_timeout = std::chrono::milliseconds{0};
  o.max_tasks_per_worker = 0;
  // Every call goes to the process as soon as it is made (up to the window): a death fails
  // all calls made before it, and none made before it runs on the next instance.
  o.max_in_flight = 1024;
  o.prefetch = 1024;
  o.initializer = Initializer{nullptr, std::move(constructor), std::move(args)};
  o.object_threshold = pool.object_threshold;
  o.shutdown_grace = pool.shutdown_grace;
  o.startup_timeout = opt.startup_timeout.count() > 0 ? opt.startup_timeout : pool.startup_timeout;
  // The worker's report of a constructor that threw names the cause of that death.
  o.on_output = [watch = watch_, parent = pool.on_output](const WorkerLine& l) {
    const std::string marker = "initializer " + watch->constructor + " threw ";
    if (auto at = l.line.find(marker); at != std::string_view::npos) {
      std::lock_guard lk(watch->m);
      watch->init_error = std::string(l.line.substr(at + marker.size() - 6));  // "threw ..."
    }
    if (parent) return parent(l);
    log::worker_line(l.worker, l.pid, l.stream, l.line);
  };
  o.on_event = pool.on_event;
  o.event_level = pool.event_level;
  o.launcher = std::make_shared<ActorLauncher>(
      pool.launcher ? pool.launcher : std::make_shared<coordinator::PosixLauncher>(), watch_);
  pool_ = std::make_unique<Pool>(std::move(o));
}

ActorCore::~ActorCore() {
  shutdown(ShutdownMode::drain);
}

std::shared_ptr<TaskState> ActorCore::call(const std::string& task, Bytes args) {
  if (remote_) return remote_->call(task, std::move(args));
  auto outer = std::make_shared<TaskState>();
  bool gone = false;
  {
    std::lock_guard lk(watch_->m);
    gone = watch_->exhausted_locked();
  }
  if (gone) {
    FailureInfo f;
    f.task = task;
    outer->complete({}, actor_died(std::move(f), *watch_));
    return outer;
  }
  FutureBase inner = pool_->submit_encoded(task, std::move(args));
  // The same id: the call's future cancels through the actor's pool by it.
  outer->id = inner.id();
  inner.state()->listen([outer, watch = watch_](const std::shared_ptr<TaskState>& s) {
    Bytes value;
    std::optional<FailureInfo> f;
    {
      std::lock_guard lk(s->m);
      f = s->failure;
      if (!f) value = std::move(s->value);  // the inner state is seen by no one else
    }
    if (f) {
      bool exhausted = false;
      {
        std::lock_guard lk(watch->m);
        exhausted = watch->exhausted_locked();
      }
      // Rejected: no process could be started for it any more.
      if (f->kind == FailureKind::worker_died || (f->kind == FailureKind::rejected && exhausted))
        f = actor_died(std::move(*f), *watch);
    }
    outer->complete(std::move(value), std::move(f));
  });
  return outer;
}

std::weak_ptr<PoolCore> ActorCore::core() const {
  if (remote_) return owner_;
  return pool_->core_;
}

pid_t ActorCore::pid() const {
  if (remote_) return remote_->pid();
  std::lock_guard lk(watch_->m);
  return watch_->pid;
}

unsigned ActorCore::restarts() const {
  if (remote_) return remote_->restarts();
  std::lock_guard lk(watch_->m);
  return std::min(watch_->deaths, watch_->max_restarts);
}

bool ActorCore::wait_ready(std::chrono::milliseconds timeout) {
  return wait_restarted(0, timeout);
}

bool ActorCore::wait_restarted(unsigned n, std::chrono::milliseconds timeout) {
  if (remote_) return remote_->wait_restarted(n, timeout);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  {
    std::unique_lock lk(watch_->m);
    // Its process now: started after the n-th death was reaped (pid is cleared at each death).
    if (!watch_->cv.wait_until(lk, deadline, [&] {
          return (watch_->deaths >= n && watch_->pid != 0) || watch_->exhausted_locked() ||
                 watch_->stopping;
        })) {
      return false;
    }
    if (watch_->exhausted_locked() || watch_->stopping) return false;
  }
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return pool_->wait_ready(std::max(left, std::chrono::milliseconds{0}));
}

void ActorCore::shutdown(ShutdownMode mode) {
  if (remote_) return remote_->shutdown(mode);
  {
    std::lock_guard lk(watch_->m);
    watch_->stopping = true;
  }
  watch_->cv.notify_all();
  pool_->shutdown(mode);
}

void ActorSet::add(const std::shared_ptr<ActorCore>& a) {
  std::lock_guard lk(m_);
  std::erase_if(actors_, [](const auto& w) { return w.expired(); });
  actors_.push_back(a);
}

void ActorSet::shutdown(ShutdownMode mode) {
  std::vector<std::weak_ptr<ActorCore>> all;
  {
    std::lock_guard lk(m_);
    all.swap(actors_);
  }
  for (auto& w : all) {
    if (auto a = w.lock()) a->shutdown(mode);
  }
}

void throw_unknown_method(const std::string& cls) {
  throw Exception(
      Error{Errc::invalid_argument,
            "Actor<" + cls + ">::call: not a method FERRY_ACTOR registered for this class"});
}

}  // namespace ferry::detail
