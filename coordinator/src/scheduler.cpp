#include "scheduler.hpp"

#include <algorithm>

namespace ferry::detail {

std::string_view to_string(EndCause c) noexcept {
  switch (c) {
    case EndCause::exited:
      return "exited";
    case EndCause::lost:
      return "lost";
    case EndCause::rejected:
      return "rejected";
    case EndCause::bad_frame:
      return "sent a malformed frame";
    case EndCause::startup_timeout:
      return "did not register within the start-up timeout";
    case EndCause::task_timeout:
      return "a task ran past the task timeout";
    case EndCause::cancelled:
      return "its running task was cancelled";
    case EndCause::recycled:
      return "recycled (max_tasks_per_worker)";
    case EndCause::shutdown:
      return "the pool shut down";
    case EndCause::killed:
      return "killed (SIGKILL from outside the pool)";
  }
  return "?";
}

std::string_view to_string(FailCause c) noexcept {
  switch (c) {
    case FailCause::worker_died:
      return "worker died";
    case FailCause::timeout:
      return "timeout";
    case FailCause::cancelled:
      return "cancelled";
    case FailCause::shutdown:
      return "shutdown";
    case FailCause::no_workers:
      return "no workers";
    case FailCause::too_large:
      return "too large";
    case FailCause::bad_result:
      return "bad result";
    case FailCause::unserved:
      return "no worker serves it";
    case FailCause::unsendable:
      return "its frame could not be built";
  }
  return "?";
}

Scheduler::Scheduler(SchedulerConfig c) : cfg_(c), local_target_(c.local_workers) {
  cfg_.prefetch = std::max(1u, cfg_.prefetch);
  cfg_.window = std::max<std::size_t>(1, cfg_.window);
  cfg_.startup_failure_limit = std::max(1u, cfg_.startup_failure_limit);
}

void Scheduler::start() {
  replenish();
}

bool Scheduler::has_room() const noexcept {
  return in_system_ < cfg_.window || closed_ || broken_;
}

void Scheduler::submit(TaskId id, std::size_t bytes, TimePoint now, std::uint32_t function,
                       TaskLimits limits) {
  auto [it, fresh] = tasks_.try_emplace(id);
  if (!fresh) return;  // ids are unique: a repeat is ignored
  Task& t = it->second;
  t.bytes = bytes;
  t.function = function;
  t.max_retries = limits.max_retries.value_or(cfg_.max_retries);
  t.timeout = limits.timeout.value_or(cfg_.task_timeout);
  t.pin = limits.pin;
  if (t.pin) t.max_retries = 0;  // an actor's call: methods have effects
  ++counters_.submitted;
  ++in_system_;
  if (closed_ || stopping_) return fail(id, t, FailCause::shutdown);
  if (broken_) return fail(id, t, FailCause::no_workers);
  if (bytes > cfg_.max_task_bytes) return fail(id, t, FailCause::too_large);
  if (t.pin) {
    auto w = workers_.find(t.pin);
    if (w == workers_.end() || !w->second.reserved || w->second.kill) {
      return fail(id, t, FailCause::worker_died, t.pin);
    }
    if (!serves(w->second, function)) return fail(id, t, FailCause::unserved);
  }
  // Workers that serve every task (restricted_ == 0) serve this one once any is up.
  if (restricted_ > 0 && !serving_undecided() && !served(function)) {
    return fail(id, t, FailCause::unserved);
  }
  pending_.push_back(id);
  pump(now, Ahead::one);
}

bool Scheduler::cancel(TaskId id, TimePoint now) {
  auto it = tasks_.find(id);
  if (it == tasks_.end() || it->second.done) return false;
  Task& t = it->second;
  if (t.at == 0) {
    pending_.erase(std::find(pending_.begin(), pending_.end(), id));
  } else {
    Worker& w = workers_.at(t.at);
    auto pos = std::find(w.inflight.begin(), w.inflight.end(), id);
    const bool running = static_cast<std::size_t>(pos - w.inflight.begin()) < w.slots;
    // A running task is stopped by stopping its process (replaced when it exits); a remote
    // worker cannot be stopped that way, nor a queued task: its result is dropped.
    if (running && w.local && !w.kill) {
      w.kill = EndCause::cancelled;
      w.kill_sent = true;
      out_.kills.push_back({t.at, EndCause::cancelled});
    }
  }
  fail(id, t, FailCause::cancelled, t.at);
  pump(now);
  return true;
}

void Scheduler::worker_started(WorkerId w, TimePoint now) {
  if (spawning_ > 0) --spawning_;
  auto [it, fresh] = workers_.try_emplace(w);
  Worker& x = it->second;
  if (fresh || x.state != WState::starting) ++starting_;
  x.state = WState::starting;
  x.local = true;
  x.since = now;
}

void Scheduler::spawn_failed(std::string why, TimePoint now) {
  (void)now;
  if (spawning_ > 0) --spawning_;
  if (broken_) return;  // said already
  broken_reason_ = std::move(why);
  const unsigned alive = static_cast<unsigned>(workers_.size());
  if (alive == 0) {
    if (!broken_) out_.notices.push_back({Notice::Kind::broken, 0, cfg_.local_workers});
    broken_ = true;
    fail_pending(FailCause::no_workers);
    out_.workers_changed = true;
    out_.room_freed = true;
    return;
  }
  // Run with the workers there are; say so once.
  if (local_target_ > 0) --local_target_;
  if (!shrunk_noticed_) {
    shrunk_noticed_ = true;
    out_.notices.push_back({Notice::Kind::shrunk, alive, cfg_.local_workers});
  }
  out_.workers_changed = true;
}

void Scheduler::kill_worker(WorkerId w, EndCause why) {
  auto it = workers_.find(w);
  if (it == workers_.end() || it->second.kill) return;
  // A worker told to exit (recycled, or the pool stopping) closes its channel as it goes.
  if (why == EndCause::lost && (stopping_ || it->second.stop_sent)) return;
  it->second.kill = why;
  // A refused worker exits by itself after telling why (its start-up timeout still applies).
  if (why == EndCause::rejected) return;
  it->second.kill_sent = true;
  out_.kills.push_back({w, why});
}

void Scheduler::worker_ready(WorkerId w, bool local, unsigned slots, std::size_t credit,
                             TimePoint now, std::vector<bool> serves) {
  auto [it, fresh] = workers_.try_emplace(w);  // a remote worker is new here
  Worker& x = it->second;
  if (x.state != WState::starting) return;
  if (!fresh) --starting_;
  x.state = WState::ready;
  x.local = local;
  // A local worker that registered ends a row of start-up failures: the program can start
  // (workers killed while starting, as by an operator or a chaos test, do not break the pool).
  if (local) startup_failures_ = startup_kills_ = 0;
  x.slots = std::max(1u, slots);
  x.credit = credit;
  x.since = now;
  // All true is the same as no restriction (the common case: keeps placement FIFO).
  if (std::find(serves.begin(), serves.end(), false) != serves.end()) {
    x.serves = std::move(serves);
    ++restricted_;
  }
  out_.workers_changed = true;
  fail_unserved();
  pump(now);
}

bool Scheduler::serves(const Worker& w, std::uint32_t function) {
  return function == kAnyFunction || w.serves.empty() ||
         (function < w.serves.size() && w.serves[function]);
}

bool Scheduler::served(std::uint32_t function) const {
  return std::any_of(workers_.begin(), workers_.end(), [&](const auto& p) {
    return p.second.state != WState::starting && !p.second.kill && serves(p.second, function);
  });
}

bool Scheduler::serving_undecided() const {
  if (anyone_starting()) return true;
  return std::none_of(workers_.begin(), workers_.end(), [](const auto& p) {
    return p.second.state != WState::starting && !p.second.kill;
  });
}

void Scheduler::fail_unserved() {
  if (stopping_ || serving_undecided()) return;
  for (std::size_t i = 0; i < pending_.size();) {
    const TaskId id = pending_[i];
    Task& t = tasks_.at(id);
    if (served(t.function)) {
      ++i;
      continue;
    }
    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
    fail(id, t, FailCause::unserved);
  }
}

std::pair<Scheduler::Worker*, Scheduler::Task*> Scheduler::leave_queue(WorkerId wid, TaskId id,
                                                                       TimePoint now) {
  auto wit = workers_.find(wid);
  if (wit == workers_.end()) return {nullptr, nullptr};
  Worker& w = wit->second;
  auto pos = std::find(w.inflight.begin(), w.inflight.end(), id);
  if (pos == w.inflight.end()) return {nullptr, nullptr};
  Task& t = tasks_.at(id);
  remove_inflight(w, static_cast<std::size_t>(pos - w.inflight.begin()), t, now);
  t.at = 0;
  return {&w, &t};
}

void Scheduler::after_leaving(WorkerId wid, Worker& w, TaskId id, TimePoint now) {
  forget_if_idle(id);
  maybe_stop_draining(wid, w);
  pump(now);
}

bool Scheduler::result(WorkerId wid, TaskId id, TimePoint now) {
  auto [w, t] = leave_queue(wid, id, now);
  if (!w) return false;
  const double us = std::chrono::duration<double, std::micro>(now - t->started).count();
  avg_service_us_ = avg_service_us_ < 0 ? us : 0.8 * avg_service_us_ + 0.2 * us;
  const bool counts = !t->done;
  if (counts) {
    startup_failures_ = startup_kills_ = 0;
    finish(id, *t);
  }
  after_leaving(wid, *w, id, now);
  return counts;
}

void Scheduler::not_sent(WorkerId wid, TaskId id, FailCause why, TimePoint now) {
  auto [w, t] = leave_queue(wid, id, now);
  if (!w) return;
  if (!t->done) fail(id, *t, why, wid);  // else cancelled meanwhile: its outcome is given
  after_leaving(wid, *w, id, now);
}

void Scheduler::bad_result(WorkerId wid, TaskId id, TimePoint now) {
  auto [w, t] = leave_queue(wid, id, now);
  if (!w) return;
  if (!t->done) {
    if (t->bad_result || t->pin) {  // a pinned task has nowhere else to go
      fail(id, *t, FailCause::bad_result, wid);
    } else {
      t->bad_result = true;
      t->avoid = wid;
      ++counters_.retries;
      pending_.push_front(id);
    }
  }
  after_leaving(wid, *w, id, now);
}

EndCause Scheduler::worker_gone(WorkerId wid, EndCause reported, TimePoint now) {
  auto wit = workers_.find(wid);
  if (wit == workers_.end()) return reported;
  Worker w = std::move(wit->second);
  if (w.state == WState::starting) --starting_;
  workers_.erase(wit);
  out_.workers_changed = true;
  EndCause cause = w.kill.value_or(reported);
  if (stopping_) cause = EndCause::shutdown;
  if (w.state == WState::draining && w.stop_sent && cause == EndCause::exited) {
    cause = EndCause::recycled;
  }
  const bool death = cause == EndCause::exited || cause == EndCause::killed ||
                     cause == EndCause::lost || cause == EndCause::bad_frame ||
                     cause == EndCause::startup_timeout || cause == EndCause::task_timeout;
  if (death) ++counters_.worker_deaths;

  // Tasks running there, cancelled ones included: the worker does not know of the cancel and
  // still runs them, so one of them may be what killed it.
  const std::size_t running = std::min<std::size_t>(w.inflight.size(), w.slots);
  std::vector<TaskId> requeue;
  for (std::size_t i = 0; i < w.inflight.size(); ++i) {
    const TaskId id = w.inflight[i];
    Task& t = tasks_.at(id);
    t.at = 0;
    if (t.done) {
      forget_if_idle(id);
      continue;
    }
    if (cause == EndCause::shutdown) {
      fail(id, t, FailCause::shutdown, wid, cause);
      forget_if_idle(id);
      continue;
    }
    if (t.pin == wid) {  // an actor's call: never re-run, on this worker or another
      fail(id, t, FailCause::worker_died, wid, cause);
      forget_if_idle(id);
      continue;
    }
    const bool was_running = i < w.slots;
    bool charged = false;
    if (was_running) {
      if (cause == EndCause::task_timeout) {
        charged = id == w.culprit;
      } else if (death) {
        charged = running == 1;  // alone on the worker: the death is its doing
        if (running > 1) t.isolate = true;
      }
    }
    if (!charged && !(death && cfg_.fail_sent_on_death)) {
      requeue.push_back(id);
      continue;
    }
    if (!charged) {
      fail(id, t, FailCause::worker_died, wid, cause);
      forget_if_idle(id);
      continue;
    }
    ++t.charges;
    if (t.charges < 1 + t.max_retries) {
      ++counters_.retries;
      requeue.push_back(id);
      continue;
    }
    fail(id, t, cause == EndCause::task_timeout ? FailCause::timeout : FailCause::worker_died, wid,
         cause);
    forget_if_idle(id);
  }
  requeue_front(requeue);
  if (w.reserved) fail_pinned_pending(wid);
  // Nothing submitted before the death may run after it, on the next worker.
  if (death && cfg_.fail_sent_on_death) fail_pending(FailCause::worker_died);

  if (w.local && !stopping_) {
    if (w.state == WState::starting) startup_failure(cause == EndCause::killed, now);
    replenish();
  }
  if (broken_ && workers_.empty()) fail_pending(FailCause::no_workers);
  pump(now);
  return cause;
}

void Scheduler::tick(TimePoint now) {
  for (auto& [wid, w] : workers_) {
    if (w.state == WState::starting) {
      if (!w.kill_sent && now - w.since > cfg_.startup_timeout) {
        if (!w.kill) w.kill = EndCause::startup_timeout;
        w.kill_sent = true;
        out_.kills.push_back({wid, *w.kill});
      }
      continue;
    }
    if (w.kill) continue;
    // A cancelled task still running there counts too: hung, it holds the slot (a remote
    // worker, or a local one that reached a task cancelled while queued, is not killed by the
    // cancel). Its kill charges nobody (worker_gone skips tasks that have their outcome).
    for (std::size_t i = 0; i < w.inflight.size() && i < w.slots; ++i) {
      const Task& t = tasks_.at(w.inflight[i]);
      if (t.timeout.count() <= 0 || now - t.started <= t.timeout) continue;
      w.kill = EndCause::task_timeout;
      w.kill_sent = true;
      w.culprit = w.inflight[i];
      out_.kills.push_back({wid, EndCause::task_timeout});
      break;
    }
  }
}

std::optional<TimePoint> Scheduler::next_deadline() const {
  std::optional<TimePoint> next;
  auto consider = [&](TimePoint t) {
    if (!next || t < *next) next = t;
  };
  for (const auto& [wid, w] : workers_) {
    if (w.state == WState::starting) {
      if (!w.kill_sent) consider(w.since + cfg_.startup_timeout);
      continue;
    }
    if (w.kill) continue;
    for (std::size_t i = 0; i < w.inflight.size() && i < w.slots; ++i) {
      const Task& t = tasks_.at(w.inflight[i]);
      if (t.timeout.count() > 0) consider(t.started + t.timeout);
    }
  }
  return next;
}

void Scheduler::close() {
  closed_ = true;
  out_.room_freed = true;
}

void Scheduler::stop(TimePoint now) {
  (void)now;
  closed_ = stopping_ = true;
  fail_pending(FailCause::shutdown);
  out_.room_freed = true;
  out_.workers_changed = true;
}

unsigned Scheduler::ready_workers(bool local_only) const {
  unsigned n = 0;
  for (const auto& [wid, w] : workers_)
    n += w.state == WState::ready && (!local_only || w.local) ? 1u : 0u;
  return n;
}

unsigned Scheduler::ready_slots() const {
  unsigned n = 0;
  for (const auto& [wid, w] : workers_)
    n += w.state == WState::ready && !w.reserved ? w.slots : 0u;  // an actor's: not a slot
  return n;
}

bool Scheduler::is_ready(WorkerId wid) const {
  auto it = workers_.find(wid);
  return it != workers_.end() && it->second.state != WState::starting;
}

std::vector<TaskId> Scheduler::inflight_of(WorkerId wid) const {
  auto it = workers_.find(wid);
  if (it == workers_.end()) return {};
  return {it->second.inflight.begin(), it->second.inflight.end()};
}

bool Scheduler::told_to_exit(WorkerId wid) const {
  auto it = workers_.find(wid);
  if (it == workers_.end()) return true;
  return stopping_ || it->second.stop_sent || it->second.kill.has_value();
}

std::optional<EndCause> Scheduler::kill_cause(WorkerId wid) const {
  auto it = workers_.find(wid);
  if (it == workers_.end()) return std::nullopt;
  return it->second.kill;
}

// --- rules ----------------------------------------------------------------------------------

bool Scheduler::anyone_starting() const {
  return spawning_ > 0 || starting_ > 0;  // asked for and not started yet, or registering
}

std::size_t Scheduler::depth() const {
  if (anyone_starting()) return 1;  // early tasks wait for the workers still registering
  if (avg_service_us_ < 0) return std::min<std::size_t>(2, cfg_.prefetch);
  // Queue about a millisecond of work per worker.
  const double ahead = 1000.0 / std::max(avg_service_us_, 0.01);
  return 1 + static_cast<std::size_t>(std::clamp(ahead, 0.0, double(cfg_.prefetch - 1)));
}

bool Scheduler::has_room_for(const Worker& w, const Task& t, WorkerId wid, Ahead ahead,
                             std::size_t d) const {
  if (w.state != WState::ready || w.kill) return false;
  // A reserved worker takes its pinned tasks only, one at a time (an actor's calls in order).
  if (w.reserved || t.pin) return w.reserved && t.pin == wid && w.inflight.empty();
  if (!serves(w, t.function)) return false;
  if (w.local && cfg_.max_tasks_per_worker && w.sent >= cfg_.max_tasks_per_worker) return false;
  // A re-run after an undecodable result goes to another worker if there is one (an isolated
  // task too: checked before isolation, which would take any idle worker).
  if (t.avoid == wid) {
    // Elsewhere: another worker, when there is or may be one (a remote worker that sent an
    // undecodable result never gets the task back; a lone local worker does).
    const bool other = std::any_of(workers_.begin(), workers_.end(),
                                   [&](const auto& p) { return p.first != wid; });
    if (other || !w.local) return false;
  }
  // An isolated task runs alone, and nothing joins a worker running one.
  if (t.isolate) return w.inflight.empty();
  if (!w.inflight.empty() && w.isolated) return false;
  if (w.inflight.size() < w.slots) return true;
  // A submit queues at most one task behind a busy worker's running ones, and none where tasks
  // are tiny; the pump after each result fills the rest of the depth in one batch (one write,
  // one wake-up), where a write per submit made a fast submitter pay a system call and a
  // context switch per task. With tiny tasks even the one behind kept a worker that keeps up
  // in a write-per-task, result-per-task rhythm (submit rates halved in some runs); a worker
  // idle for one round trip costs less than that.
  const std::size_t queue =
      ahead == Ahead::one ? (d > kSubmitQueueDepth ? 0 : std::min<std::size_t>(d, 2)) : d;
  return w.inflight.size() < w.slots - 1 + queue && w.inflight_bytes + t.bytes <= w.credit / 2;
}

bool Scheduler::has_any_room(const Worker& w, std::size_t d) const {
  if (w.state != WState::ready || w.kill) return false;
  if (w.reserved) return w.inflight.empty();
  if (w.local && cfg_.max_tasks_per_worker && w.sent >= cfg_.max_tasks_per_worker) return false;
  if (!w.inflight.empty() && w.isolated) return false;
  return w.inflight.size() < w.slots || w.inflight.size() < w.slots - 1 + d;
}

void Scheduler::pump(TimePoint now, Ahead ahead) {
  // Stopping: nothing more is sent; a task back in the queue (a result that could not be
  // decoded) fails as every pending task did at stop().
  if (stopping_) return fail_pending(FailCause::shutdown);
  // The depth changes only when a worker starts or is asked for (below: a retired worker's
  // replacement), not per task: read once, not per task and worker.
  std::size_t d = depth();
  // Oldest first. With every worker serving every task, a task that fits nowhere stops the
  // pass (later ones would not fit either); with workers that serve some tasks only, a task
  // no worker with room serves is passed over, so it does not hold up the others.
  for (std::size_t i = 0; i < pending_.size();) {
    const TaskId id = pending_[i];
    Task& t = tasks_.at(id);
    Worker* best = nullptr;
    WorkerId best_id = 0;
    for (auto& [wid, w] : workers_) {
      if (!has_room_for(w, t, wid, ahead, d)) continue;
      if (!best || w.inflight.size() < best->inflight.size()) {
        best = &w;
        best_id = wid;
      }
    }
    if (!best) {
      if (restricted_ == 0) return;
      // Passing over tasks only helps while some worker has room: without this check, every
      // event with all workers full scanned the whole queue (remote submit fell to ~8 k/s
      // with 30,000 queued).
      if (std::none_of(workers_.begin(), workers_.end(),
                       [&](const auto& p) { return has_any_room(p.second, d); })) {
        return;
      }
      ++i;
      continue;
    }
    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
    t.at = best_id;
    if (best->inflight.size() < best->slots) t.started = now;
    best->isolated = t.isolate;  // an isolated task only joins an empty queue; others end it
    best->inflight.push_back(id);
    best->inflight_bytes += t.bytes;
    ++best->sent;
    out_.sends.push_back({best_id, id, t.charges + 1});
    if (best->local && cfg_.max_tasks_per_worker && best->sent >= cfg_.max_tasks_per_worker) {
      // Retired: it takes no more; its replacement starts now, so queued work has somewhere
      // to go while it finishes.
      best->state = WState::draining;
      ++counters_.workers_recycled;
      replenish();
      d = depth();
    }
  }
}

void Scheduler::remove_inflight(Worker& w, std::size_t at, const Task& leaving, TimePoint now) {
  w.inflight_bytes -= leaving.bytes;
  w.inflight.erase(w.inflight.begin() + static_cast<std::ptrdiff_t>(at));
  // The worker runs its queue in order, `slots` at a time: the task that just moved into the
  // running window started now.
  if (at < w.slots && w.inflight.size() >= w.slots) {
    tasks_.at(w.inflight[w.slots - 1]).started = now;
  }
}

void Scheduler::maybe_stop_draining(WorkerId wid, Worker& w) {
  if (w.state == WState::draining && w.inflight.empty() && !w.stop_sent) {
    w.stop_sent = true;
    out_.stops.push_back(wid);
  }
}

void Scheduler::requeue_front(std::vector<TaskId>& ids) {
  for (auto it = ids.rbegin(); it != ids.rend(); ++it)
    pending_.push_front(*it);
}

void Scheduler::fail(TaskId id, Task& t, FailCause c, WorkerId w, EndCause e) {
  out_.failures.push_back({id, c, t.charges, w, e});
  finish(id, t);
  forget_if_idle(id);
}

void Scheduler::finish(TaskId id, Task& t) {
  (void)id;
  if (t.done) return;
  t.done = true;
  --in_system_;
  // Blocked submitters are woken once a slice of the window is free, not for every outcome:
  // each wake-up costs a futex call and a trip through the pool's lock for the submitter and
  // for the thread reporting results (per-slot wake-ups convoyed the pipe pool at 0.4x).
  if (cfg_.window - in_system_ >= room_slice() || in_system_ == 0) out_.room_freed = true;
}

std::size_t Scheduler::room_slice() const noexcept {
  return std::max<std::size_t>(1, cfg_.window / 16);
}

void Scheduler::forget_if_idle(TaskId id) {
  auto it = tasks_.find(id);
  if (it != tasks_.end() && it->second.done && it->second.at == 0) tasks_.erase(it);
}

void Scheduler::startup_failure(bool killed, TimePoint now) {
  (void)now;
  // Workers SIGKILLed from outside while starting (a chaos test, an operator) say nothing about
  // the program: they break the pool only after many more in a row, so that a start-up the OOM
  // killer always ends still stops, and says why, instead of respawning silently forever.
  const unsigned n = killed ? ++startup_kills_ : ++startup_failures_;
  const unsigned limit = killed ? 8 * cfg_.startup_failure_limit : cfg_.startup_failure_limit;
  if (n >= limit && !broken_) {
    broken_ = true;
    if (broken_reason_.empty()) {
      broken_reason_ = std::to_string(n) + " local workers in a row " +
                       (killed ? "were SIGKILLed" : "ended") + " before they registered";
    }
    out_.notices.push_back(
        {Notice::Kind::broken, static_cast<unsigned>(workers_.size()), cfg_.local_workers});
    out_.room_freed = true;
  }
}

void Scheduler::replenish() {
  if (stopping_ || broken_) return;
  unsigned have = spawning_;
  for (const auto& [wid, w] : workers_)
    have += w.local && w.state != WState::draining && !w.kill ? 1u : 0u;
  if (have >= local_target_) return;
  const unsigned more = local_target_ - have;
  spawning_ += more;
  out_.spawns += more;
}

void Scheduler::fail_pending(FailCause c) {
  auto ids = std::move(pending_);
  pending_.clear();
  for (TaskId id : ids)
    fail(id, tasks_.at(id), c);
}

std::optional<WorkerId> Scheduler::free_remote(std::uint32_t function) const {
  std::optional<WorkerId> best;
  std::size_t load = SIZE_MAX;
  for (const auto& [wid, w] : workers_) {
    if (w.local || w.reserved || w.kill || w.state != WState::ready) continue;
    if (!serves(w, function)) continue;
    if (w.inflight.size() < load) {
      best = wid;
      load = w.inflight.size();
    }
  }
  return best;
}

bool Scheduler::reserve(WorkerId wid) {
  auto it = workers_.find(wid);
  if (it == workers_.end()) return false;
  Worker& w = it->second;
  if (w.local || w.reserved || w.kill || w.state != WState::ready) return false;
  w.reserved = true;
  // Pending tasks no longer fit everywhere: the pump passes over the ones that wait.
  ++restricted_;
  return true;
}

void Scheduler::release(WorkerId wid, TimePoint now) {
  auto it = workers_.find(wid);
  if (it == workers_.end() || !it->second.reserved) return;
  it->second.reserved = false;
  fail_pinned_pending(wid);
  out_.workers_changed = true;
  pump(now);
}

bool Scheduler::reserved(WorkerId wid) const {
  auto it = workers_.find(wid);
  return it != workers_.end() && it->second.reserved;
}

void Scheduler::fail_pinned_pending(WorkerId wid) {
  for (std::size_t i = 0; i < pending_.size();) {
    const TaskId id = pending_[i];
    Task& t = tasks_.at(id);
    if (t.pin != wid) {
      ++i;
      continue;
    }
    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
    fail(id, t, FailCause::worker_died, wid);
  }
}

}  // namespace ferry::detail
