// Remote actors (remote_actor.hpp): one reserved remote worker at a time, its calls pinned to it.
#include "remote_actor.hpp"

#include <algorithm>

#include "ferry/coordinator/pool.hpp"
#include "ferry/shared/task.hpp"

namespace ferry::detail {

RemoteActor::RemoteActor(std::shared_ptr<PoolCore> core, std::string class_name,
                         std::string constructor, Bytes args, ActorOptions opt)
    : core_(std::move(core)),
      class_name_(std::move(class_name)),
      constructor_(std::move(constructor)),
      args_(std::move(args)),
      opt_(opt),
      place_timeout_(opt.startup_timeout.count() > 0 ? opt.startup_timeout
                                                     : core_->options().startup_timeout) {
  auto fn = TaskRegistry::instance().index_of(constructor_);
  if (!fn) throw Exception(fn.error());
  constructor_fn_ = *fn;
}

RemoteActor::~RemoteActor() {
  shutdown(ShutdownMode::drain);
}

void RemoteActor::start() {
  if (core_->options().listen.empty()) {
    throw Exception(Error{Errc::invalid_argument,
                          "actor " + class_name_ +
                              ": remote placement needs a pool that remote workers can join "
                              "(PoolOptions::listen)"});
  }
  std::weak_ptr<RemoteActor> self = weak_from_this();
  // The first worker is taken here, so that a pool with none fails the creation clearly.
  auto r = core_->reserve_remote(constructor_fn_, place_timeout_, abandon_,
                                 [self](WorkerId id, const std::string& why) {
                                   if (auto a = self.lock()) a->on_gone(id, why);
                                 });
  if (!r) {
    auto [joined, reserved] = core_->remote_workers();
    throw Exception(Error{
        Errc::timeout, "actor " + class_name_ + ": no free remote worker to place it on within " +
                           std::to_string(place_timeout_.count()) + " ms (" +
                           std::to_string(joined) + " remote worker(s) joined, " +
                           std::to_string(reserved) +
                           " held by actors; start one with ferry-worker --connect " +
                           core_->listen_endpoint() + ")"});
  }
  Failed failed;
  {
    std::lock_guard lk(m_);
    take_seat_locked(*r, failed);
    want_place_ = true;
  }
  for (auto& [t, f] : failed)
    t->complete({}, std::move(f));
  placer_ = std::thread([this] { run_placer(); });
}

void RemoteActor::run_placer() {
  for (;;) {
    WorkerId seat = 0;
    {
      std::unique_lock lk(m_);
      cv_.wait(lk, [&] { return want_place_ || stopping_; });
      if (stopping_) return;
      want_place_ = false;
      seat = seat_;
    }
    if (seat == 0) {
      // A restart: another remote worker, once one is free (joined, or given back).
      std::weak_ptr<RemoteActor> self = weak_from_this();
      auto r = core_->reserve_remote(constructor_fn_, place_timeout_, abandon_,
                                     [self](WorkerId id, const std::string& why) {
                                       if (auto a = self.lock()) a->on_gone(id, why);
                                     });
      Failed failed;
      bool stop = false;
      {
        std::lock_guard lk(m_);
        stop = stopping_;
        if (r) {
          take_seat_locked(*r, failed);
          seat = seat_;
        } else if (!stopping_) {
          gone_ = true;
          cause_ += "; no free remote worker to restart it on within " +
                    std::to_string(place_timeout_.count()) + " ms";
          fail_waiting_locked(failed, false, "is gone: " + cause_);
        }
      }
      cv_.notify_all();
      for (auto& [t, f] : failed)
        t->complete({}, std::move(f));
      if (stop) return;               // shutdown() gives the seat back
      if (!r || seat == 0) continue;  // gone for good, or lost at once (asked again)
    }
    // Builds the instance there: the constructor task, pinned like the calls.
    auto ctor = std::make_shared<TaskState>();
    ctor->function = constructor_fn_;
    ctor->args = args_;
    ctor->pin = seat;
    ctor->max_retries = 0;
    ctor->timeout = std::chrono::milliseconds{0};
    {
      std::lock_guard lk(m_);
      sent_.push_back(ctor);
    }
    core_->enqueue(ctor, true);
    ctor->wait();
    std::optional<FailureInfo> f;
    {
      std::lock_guard lk(ctor->m);
      f = ctor->failure;
    }
    if (!f) {
      // Ready: the calls that waited go first, in order, then new ones (send_m_ held).
      std::lock_guard send_lk(send_m_);
      std::deque<Waiting> now;
      {
        std::lock_guard lk(m_);
        if (seat_ != seat || stopping_) continue;  // it died (on_gone said so) or stops
        ready_ = true;
        now.swap(waiting_);
        outstanding_ += now.size();
      }
      cv_.notify_all();
      for (auto& c : now)
        send(std::move(c), seat);
      continue;
    }
    if (f->kind == FailureKind::worker_died) continue;  // on_gone counts it and asks again
    Failed failed;
    bool release = false;
    {
      std::lock_guard lk(m_);
      if (stopping_ || seat_ != seat) continue;
      // Its constructor threw: a death of the instance (as for a local actor); the worker
      // itself is fine and goes back to the pool.
      ++deaths_;
      cause_ = "its constructor threw " + (f->type.empty() ? "" : f->type + ": ") + f->message;
      seat_ = 0;
      pid_ = 0;
      release = true;
      if (deaths_ > opt_.max_restarts) {
        gone_ = true;
        fail_waiting_locked(failed, false, "is gone: " + cause_ + not_restarted_locked());
      } else {
        fail_waiting_locked(failed, false, "died before this call ran: " + cause_);
        want_place_ = true;
      }
    }
    cv_.notify_all();
    if (release) core_->release_reserved(seat);
    for (auto& [t, fi] : failed)
      t->complete({}, std::move(fi));
  }
}

std::shared_ptr<TaskState> RemoteActor::call(const std::string& task, Bytes args) {
  auto outer = std::make_shared<TaskState>();
  auto fn = TaskRegistry::instance().index_of(task);
  if (!fn) throw Exception(fn.error());
  std::lock_guard send_lk(send_m_);
  WorkerId seat = 0;
  std::optional<FailureInfo> now;
  {
    std::lock_guard lk(m_);
    if (stopping_) {
      FailureInfo f;
      f.kind = FailureKind::cancelled;
      f.task = task;
      f.message = "actor " + class_name_ + " is stopping";
      now = std::move(f);
    } else if (gone_) {
      now = died(task, "actor " + class_name_ + " is gone: " + cause_ + not_restarted_locked());
    } else if (!ready_) {
      waiting_.push_back({outer, *fn, std::move(args)});
      return outer;
    } else {
      seat = seat_;
      ++outstanding_;
    }
  }
  if (now) {
    outer->complete({}, std::move(now));
    return outer;
  }
  send({outer, *fn, std::move(args)}, seat);
  return outer;
}

void RemoteActor::send(Waiting c, WorkerId seat) {
  auto inner = std::make_shared<TaskState>();
  inner->function = c.function;
  inner->args = std::move(c.args);
  inner->pin = seat;
  inner->max_retries = 0;
  inner->timeout = std::chrono::milliseconds{0};
  {
    std::lock_guard lk(m_);
    std::erase_if(sent_, [](const auto& w) { return w.expired(); });
    sent_.push_back(inner);
  }
  core_->enqueue(inner, true);
  // The same id: the call's future cancels through the pool by it.
  c.outer->id = inner->id;
  inner->listen([self = shared_from_this(), outer = c.outer](const std::shared_ptr<TaskState>& s) {
    Bytes value;
    std::optional<FailureInfo> f;
    {
      std::lock_guard lk(s->m);
      f = s->failure;
      if (!f) value = std::move(s->value);
    }
    if (f && f->kind == FailureKind::worker_died) {
      std::lock_guard lk(self->m_);
      // The pool's account of the worker's end, then what becomes of the actor (on_gone
      // counts the death after this listener ran).
      std::string m = "actor " + self->class_name_ + "'s remote worker " + self->where_locked() +
                      " ended with this call sent to it (" + f->message + ")";
      if (self->deaths_ + 1 > self->opt_.max_restarts) {
        m += "; not restarted: its max_restarts (" + std::to_string(self->opt_.max_restarts) +
             ") are used up";
      } else {
        m += "; it is restarted on another remote worker";
      }
      auto d = self->died(f->task, std::move(m));
      d.pid = f->pid;
      d.host = f->host;
      d.signal = f->signal;
      d.exit_code = f->exit_code;
      f = std::move(d);
    }
    outer->complete(std::move(value), std::move(f));
    {
      std::lock_guard lk(self->m_);
      --self->outstanding_;
    }
    self->cv_.notify_all();
  });
}

void RemoteActor::on_gone(WorkerId id, const std::string& why) {
  Failed failed;
  {
    std::lock_guard lk(m_);
    if (id != seat_) {
      ended_early_[id] = why;  // reserved, not yet taken as the seat: take_seat_locked sees it
      return;
    }
    lose_seat_locked(why, failed);
  }
  cv_.notify_all();
  for (auto& [t, f] : failed)
    t->complete({}, std::move(f));
}

void RemoteActor::take_seat_locked(const PoolCore::Reservation& r, Failed& failed) {
  seat_ = r.id;
  pid_ = r.pid;
  host_ = r.host;
  if (auto e = ended_early_.find(r.id); e != ended_early_.end()) {
    const std::string why = e->second;
    ended_early_.erase(e);
    lose_seat_locked(why, failed);
  }
}

void RemoteActor::lose_seat_locked(const std::string& why, Failed& failed) {
  const std::string where = where_locked();
  seat_ = 0;
  pid_ = 0;
  ready_ = false;
  if (stopping_) return;
  ++deaths_;
  cause_ = "its remote worker " + where + " ended (" + why + ")";
  if (deaths_ > opt_.max_restarts) {
    gone_ = true;
    fail_waiting_locked(failed, false, "is gone: " + cause_ + not_restarted_locked());
  } else {
    fail_waiting_locked(failed, false, "died before this call was sent: " + cause_);
    want_place_ = true;
  }
}

void RemoteActor::fail_waiting_locked(Failed& out, bool cancelled, const std::string& why) {
  for (auto& c : waiting_) {
    FailureInfo f;
    if (cancelled) {
      f.kind = FailureKind::cancelled;
      f.message = "actor " + class_name_ + " " + why;
    } else {
      f = died({}, "actor " + class_name_ + " " + why);
    }
    out.emplace_back(std::move(c.outer), std::move(f));
  }
  waiting_.clear();
}

FailureInfo RemoteActor::died(const std::string& task, std::string message) const {
  FailureInfo f;
  f.kind = FailureKind::actor_died;
  f.task = task;
  f.message = std::move(message);
  return f;
}

std::string RemoteActor::where_locked() const {
  return "w" + std::to_string(seat_) + " (pid " + std::to_string(pid_) +
         (host_.empty() ? "" : " on " + host_) + ")";
}

std::string RemoteActor::not_restarted_locked() const {
  return deaths_ > opt_.max_restarts ? "; not restarted: its max_restarts (" +
                                           std::to_string(opt_.max_restarts) + ") are used up"
                                     : std::string();
}

pid_t RemoteActor::pid() const {
  std::lock_guard lk(m_);
  return ready_ ? pid_ : 0;
}

unsigned RemoteActor::restarts() const {
  std::lock_guard lk(m_);
  return std::min(deaths_, opt_.max_restarts);
}

bool RemoteActor::wait_restarted(unsigned n, std::chrono::milliseconds timeout) {
  std::unique_lock lk(m_);
  cv_.wait_for(lk, timeout, [&] { return (deaths_ >= n && ready_) || gone_ || stopping_; });
  return deaths_ >= n && ready_ && !gone_ && !stopping_;
}

void RemoteActor::shutdown(ShutdownMode mode) {
  std::lock_guard stop_lk(stop_m_);
  Failed failed;
  {
    std::unique_lock lk(m_);
    if (stopping_) return;
    // Drain: the calls made so far finish first (those waiting for the instance are sent
    // once it is built, or fail if it cannot be).
    if (mode == ShutdownMode::drain) {
      cv_.wait(lk, [&] { return (waiting_.empty() && outstanding_ == 0) || gone_; });
    }
    stopping_ = true;
    fail_waiting_locked(failed, true, "was stopped before this call was sent");
  }
  cv_.notify_all();
  abandon_ = true;
  core_->wake_waiters();
  for (auto& [t, f] : failed)
    t->complete({}, std::move(f));
  std::vector<std::shared_ptr<TaskState>> sent;
  {
    std::lock_guard lk(m_);
    for (auto& w : sent_)
      if (auto s = w.lock()) sent.push_back(std::move(s));
    sent_.clear();
  }
  for (auto& s : sent)
    if (!s->done) core_->cancel(s);
  if (placer_.joinable()) placer_.join();
  WorkerId seat = 0;
  {
    std::lock_guard lk(m_);
    seat = std::exchange(seat_, 0);
    ready_ = false;
  }
  if (seat) core_->release_reserved(seat);
}

}  // namespace ferry::detail
