// The supervisor thread: spawns workers, reaps them, forwards their output, enforces task
// timeouts, and turns a worker's death into retries or failures.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <iostream>

#include "ferry/ipc/endpoint.hpp"
#include "ferry/ipc/pipe_channel.hpp"
#include "ferry/ipc/shm_channel.hpp"
#include "ferry/ipc/zmq_channel.hpp"
#include "ferry/shared/session.hpp"
#include "pool_core.hpp"

namespace ferry::detail {
namespace {

using Clock = std::chrono::steady_clock;

std::atomic<std::uint32_t> g_pool_serial{0};

struct OpenedChannel {
  ipc::ChannelPtr ch;
  std::string endpoint;  // what the worker opens
  std::size_t credit = 0;
  ipc::PipeEnds pipe_ends;  // pipe transport: the child's descriptors
  std::string socket_path;  // zmq: the ipc socket file
};

Result<OpenedChannel> open_worker_channel(Transport t, const std::string& name) {
  OpenedChannel out;
  switch (t) {
    case Transport::pipe: {
      auto p = ipc::PipeChannel::make_pair();
      if (!p) return std::move(p).error();
      out.pipe_ends = p->second;
      // A bigger pipe buffer lets a worker queue more results without waiting for us.
      for (int fd : {out.pipe_ends.read_fd, out.pipe_ends.write_fd}) {
        ::fcntl(fd, F_SETPIPE_SZ, 1 << 20);
      }
      int sz = ::fcntl(out.pipe_ends.read_fd, F_GETPIPE_SZ);
      out.credit = sz > 0 ? static_cast<std::size_t>(sz) : 65536;
      out.ch = std::move(p->first);
      out.endpoint = "pipe:3,4";
      return out;
    }
    case Transport::shm: {
      auto c = ipc::ShmChannel::create(name);
      if (!c) return std::move(c).error();
      out.credit = ipc::ShmOptions{}.ring_bytes;
      out.endpoint = (*c)->endpoint();
      out.ch = std::move(*c);
      return out;
    }
    case Transport::zmq: {
      // The socket file lives in /dev/shm under the session's name, so the stale sweep of a
      // dead coordinator removes it too.
      out.socket_path = "/dev/shm/" + shm_name(name) + ".sock";
      auto ep = ipc::Endpoint::parse("ipc://" + out.socket_path);
      if (!ep) return std::move(ep).error();
      auto c = ipc::ZmqChannel::bind(*ep);
      if (!c) return std::move(c).error();
      out.credit = std::size_t{64} << 20;
      out.endpoint = (*c)->endpoint();
      out.ch = std::move(*c);
      return out;
    }
  }
  return Error{Errc::invalid_argument, "unknown transport"};
}

}  // namespace

void PoolCore::spawn_worker() {
  std::uint32_t id;
  {
    std::lock_guard lk(mu_);
    id = next_worker_id_++;
  }
  if (serial_ == 0) serial_ = g_pool_serial.fetch_add(1) + 1;
  const std::string name = "pool" + std::to_string(serial_) + ".w" + std::to_string(id);
  auto fail = [&](const std::string& why) {
    std::vector<std::shared_ptr<TaskState>> rejected;
    {
      std::lock_guard lk(mu_);
      ++startup_failures_;
      broken_reason_ = "cannot start worker " + std::to_string(id) + ": " + why;
      if (startup_failures_ >= 3 || links_.empty()) broken_ = true;
      if (broken_ && links_.empty()) {
        // Nothing can run what is queued: fail it rather than hang.
        for (auto& t : pending_) {
          finish_locked(*t);
          rejected.push_back(t);
        }
        pending_.clear();
      }
      state_cv_.notify_all();
      space_cv_.notify_all();
    }
    for (auto& t : rejected) {
      t->complete({}, failure_for(*t, FailureKind::rejected, broken_reason_), &counters_.failed);
    }
  };
  auto opened = open_worker_channel(opt_.transport, name);
  if (!opened) return fail(opened.error().message());

  int out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) {
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) {
      if (fd >= 0) ::close(fd);
    }
    opened->pipe_ends.close();
    return fail(std::string("pipe: ") + std::strerror(errno));
  }
  coordinator::SpawnSpec spec;
  spec.exe = worker_exe_;
  spec.args = opt_.worker_args;
  spec.env = {"FERRY_WORKER_ENDPOINT=" + opened->endpoint,
              "FERRY_WORKER_PARENT=" + std::to_string(::getpid()),
              "FERRY_WORKER_ID=" + std::to_string(id),
              std::string(kSessionEnv) + "=" + SessionId::current().str()};
  spec.stdout_fd = out_pipe[1];
  spec.stderr_fd = err_pipe[1];
  if (opt_.transport == Transport::pipe) {
    spec.fds = {{opened->pipe_ends.read_fd, 3}, {opened->pipe_ends.write_fd, 4}};
  }
  auto proc = launcher_->spawn(spec);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  opened->pipe_ends.close();
  if (!proc) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    return fail(proc.error().message());
  }
  auto link = std::make_unique<WorkerLink>();
  link->id = id;
  link->proc = std::move(*proc);
  link->pid = link->proc->pid();
  link->ch = std::move(opened->ch);
  link->credit_bytes = opened->credit;
  link->socket_path = opened->socket_path;
  link->out_fd = out_pipe[0];
  link->err_fd = err_pipe[0];
  link->spawned_at = Clock::now();
  for (int fd : {link->out_fd, link->err_fd})
    ::fcntl(fd, F_SETFL, O_NONBLOCK);
  WorkerLink* raw = link.get();
  {
    std::lock_guard lk(mu_);
    ++stats_.workers_spawned;
    raw->stats_index = stats_.workers.size();
    stats_.workers.push_back(WorkerStats{id, raw->pid, 0, true, false, {}, {}});
    links_.push_back(std::move(link));
  }
  raw->reader = std::thread([this, raw] { reader_loop(*raw); });
}

void PoolCore::emit_line(const WorkerLink& link, int stream, std::string_view line) {
  if (opt_.on_output) {
    opt_.on_output(WorkerLine{link.id, link.pid, stream, line});
    return;
  }
  std::string s = "[w" + std::to_string(link.id) + " pid " + std::to_string(link.pid) + "] ";
  s.append(line);
  s.push_back('\n');
  [[maybe_unused]] auto n = ::write(2, s.data(), s.size());
}

void PoolCore::read_output(WorkerLink& link, int& fd, std::string& buf, int stream, bool eof) {
  char tmp[4096];
  while (fd >= 0) {
    ssize_t n = ::read(fd, tmp, sizeof tmp);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) {  // the worker closed it: stop polling it
      ::close(fd);
      fd = -1;
      eof = true;
      break;
    }
    if (n < 0) break;
    buf.append(tmp, static_cast<std::size_t>(n));
    std::size_t pos;
    while ((pos = buf.find('\n')) != std::string::npos) {
      emit_line(link, stream, std::string_view(buf).substr(0, pos));
      buf.erase(0, pos + 1);
    }
    if (buf.size() > 65536) {  // a very long line without newline: pass it on in pieces
      emit_line(link, stream, buf);
      buf.clear();
    }
  }
  if (eof && !buf.empty()) {
    emit_line(link, stream, buf);
    buf.clear();
  }
}

void PoolCore::handle_exit(WorkerLink& link) {
  auto info = link.proc->try_reap();
  if (!info) return;  // spurious wake-up
  link.stop = true;
  if (link.reader.joinable()) link.reader.join();  // delivers results it sent before dying
  read_output(link, link.out_fd, link.out_buf, 1, true);
  read_output(link, link.err_fd, link.err_buf, 2, true);
  for (int* fd : {&link.out_fd, &link.err_fd}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
  retire(link, info, {});
}

void PoolCore::retire(WorkerLink& link, std::optional<coordinator::ExitInfo> info,
                      std::string why) {
  std::vector<std::pair<std::shared_ptr<TaskState>, FailureInfo>> failed;
  std::vector<SendJob> jobs;
  std::unique_ptr<WorkerLink> owned;
  {
    std::lock_guard lk(mu_);
    if (link.state == WorkerLink::State::dead) return;  // retired already (remote: twice told)
    const bool was_starting = link.state == WorkerLink::State::starting;
    link.state = WorkerLink::State::dead;
    const bool unexpected = !link.expected_exit && !stopping_;
    const bool by_cancel = link.kill_reason.rfind("cancelled", 0) == 0;
    if (unexpected && !by_cancel) ++stats_.worker_deaths;
    auto tasks = std::move(link.inflight);
    link.inflight_bytes = 0;
    std::vector<std::shared_ptr<TaskState>> requeue;
    std::size_t position = 0;
    for (auto& t : tasks) {
      // The worker ran its queue in order, `slots` at a time: only those had started.
      const bool was_head = position++ < link.slots;
      if (t->done.load() || t->cancel_requested) {
        finish_locked(*t);
        continue;
      }
      if (stopping_) {
        finish_locked(*t);
        failed.emplace_back(t, failure_for(*t, FailureKind::cancelled, "the pool shut down"));
        continue;
      }
      if (!was_head) {
        --t->runs;  // it never started
        requeue.push_back(t);
        continue;
      }
      if (t->runs < 1 + opt_.max_retries) {
        ++stats_.retries;
        requeue.push_back(t);
        continue;
      }
      finish_locked(*t);
      FailureKind k = t->timeout_kill ? FailureKind::timeout : FailureKind::worker_died;
      std::string msg = t->timeout_kill ? "ran longer than the task timeout of " +
                                              std::to_string(opt_.task_timeout.count()) + " ms"
                                        : std::string();
      auto f = failure_for(*t, k, t->timeout_kill ? std::move(msg) : why);
      f.pid = link.pid;
      f.host = link.host;
      f.signal = info ? info->signal : 0;
      f.exit_code = info ? info->code : -1;
      failed.emplace_back(t, std::move(f));
    }
    for (auto it = requeue.rbegin(); it != requeue.rend(); ++it) {
      (*it)->timeout_kill = false;
      pending_.push_front(*it);
    }
    const bool rejected = link.kill_reason.rfind("rejected", 0) == 0;
    if (was_starting && unexpected && !rejected && !link.remote) {
      ++startup_failures_;
      broken_reason_ = "worker " + std::to_string(link.id) + " (pid " + std::to_string(link.pid) +
                       ") died before registering: " + (info ? info->describe() : why);
      if (startup_failures_ >= 3) broken_ = true;
    }
    if (unexpected && !broken_ && !link.remote) ++want_spawn_;
    if (link.remote) peers_.erase(link.peer);
    if (unexpected && (link.remote || !was_starting)) {
      event("worker w" + std::to_string(link.id) + " (pid " + std::to_string(link.pid) +
            (link.host.empty() ? "" : " on " + link.host) + ") " +
            (info ? "died: " + info->describe() : "lost: " + why) +
            (link.kill_reason.empty() ? "" : " (" + link.kill_reason + ")") + "; re-queued " +
            std::to_string(requeue.size()) + " task(s)");
    }
    auto it =
        std::find_if(links_.begin(), links_.end(), [&](const auto& p) { return p.get() == &link; });
    owned = std::move(*it);
    links_.erase(it);
    if (broken_ && links_.empty()) {
      // Nothing can run what is queued: fail it rather than hang.
      for (auto& t : pending_) {
        finish_locked(*t);
        failed.emplace_back(t, failure_for(*t, FailureKind::rejected, broken_reason_));
      }
      pending_.clear();
    }
    pump_locked(jobs);
    state_cv_.notify_all();
    space_cv_.notify_all();
  }
  flush(jobs);
  for (auto& [t, f] : failed) {
    const bool cancelled = f.kind == FailureKind::cancelled;
    t->complete({}, std::move(f), cancelled ? &counters_.cancelled : &counters_.failed);
  }
}

void PoolCore::enforce_timeouts() {
  std::lock_guard lk(mu_);
  const auto now = Clock::now();
  for (auto& l : links_) {
    if (!l->kill_reason.empty() || l->remote) continue;  // remote: the router thread's job
    if (l->state == WorkerLink::State::starting && now - l->spawned_at > opt_.startup_timeout) {
      l->kill_reason = "did not register within the start-up timeout";
      (void)l->proc->kill(SIGKILL);
      continue;
    }
    if (opt_.task_timeout.count() <= 0 || l->inflight.empty()) continue;
    auto& head = l->inflight.front();
    if (now - head->started > opt_.task_timeout) {
      head->timeout_kill = true;
      l->kill_reason = "task " + std::to_string(head->id) + " timed out";
      (void)l->proc->kill(SIGKILL);
    }
  }
}

void PoolCore::terminate_all() {
  // The router thread retires remote links too: stop it before collecting them.
  router_stop_ = true;
  if (router_thread_.joinable()) router_thread_.join();
  std::vector<WorkerLink*> live, remote;
  {
    std::lock_guard lk(mu_);
    for (auto& l : links_) {
      l->expected_exit = true;
      (l->remote ? remote : live).push_back(l.get());
    }
  }
  // Remote workers are told to stop (the frames are flushed when the router closes) and
  // retired at once: there is no process of ours to wait for.
  for (auto* l : remote) {
    (void)send_to(*l, make_frame(MessageKind::shutdown, msg::Shutdown{!cancel_on_stop_}),
                  Deadline::after(std::chrono::milliseconds(100)));
    retire(*l, std::nullopt, "the pool shut down");
  }
  // Graceful first (drain mode): the worker exits after its current task.
  if (!cancel_on_stop_) {
    for (auto* l : live) {
      std::lock_guard lk(l->send_mu);
      (void)l->ch->send_for(make_frame(MessageKind::shutdown, msg::Shutdown{true}),
                            std::chrono::milliseconds(100));
    }
  }
  auto wait_all = [&](Clock::time_point until) {
    for (;;) {
      std::vector<pollfd> fds;
      std::vector<WorkerLink*> who;
      {
        std::lock_guard lk(mu_);
        for (auto& l : links_) {
          if (l->remote) continue;
          fds.push_back({l->proc->pidfd(), POLLIN, 0});
          who.push_back(l.get());
        }
      }
      if (fds.empty()) return true;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
      if (left.count() <= 0) return false;
      int n = ::poll(fds.data(), fds.size(), static_cast<int>(left.count()));
      if (n < 0 && errno != EINTR) return false;
      for (std::size_t i = 0; i < fds.size(); ++i) {
        if (fds[i].revents) handle_exit(*who[i]);
      }
    }
  };
  auto signal_all = [&](int sig) {
    std::lock_guard lk(mu_);
    for (auto& l : links_)
      (void)l->proc->kill(sig);
  };
  if (cancel_on_stop_) signal_all(SIGTERM);
  if (!wait_all(Clock::now() + opt_.shutdown_grace)) {
    signal_all(SIGTERM);
    if (!wait_all(Clock::now() + opt_.shutdown_grace)) {
      signal_all(SIGKILL);
      wait_all(Clock::now() + std::chrono::seconds(30));
    }
  }
  // Whatever is still queued can no longer run.
  std::vector<std::shared_ptr<TaskState>> left;
  {
    std::lock_guard lk(mu_);
    for (auto& t : pending_) {
      finish_locked(*t);
      left.push_back(t);
    }
    pending_.clear();
    state_cv_.notify_all();
  }
  for (auto& t : left) {
    t->complete({}, failure_for(*t, FailureKind::cancelled, "the pool shut down"),
                &counters_.cancelled);
  }
}

void PoolCore::supervise() {
  for (;;) {
    unsigned spawns = 0;
    bool stop = false;
    {
      std::lock_guard lk(mu_);
      stop = stopping_;
      if (!stop && !broken_) spawns = std::exchange(want_spawn_, 0);
    }
    if (stop) break;
    while (spawns-- > 0)
      spawn_worker();

    std::vector<pollfd> fds{{wake_fd_, POLLIN, 0}};
    std::vector<std::pair<WorkerLink*, int>> who{{nullptr, 0}};
    int timeout_ms = 1000;
    {
      std::lock_guard lk(mu_);
      for (auto& l : links_) {
        if (l->remote) continue;
        fds.push_back({l->proc->pidfd(), POLLIN, 0});
        who.emplace_back(l.get(), 0);
        fds.push_back({l->out_fd, POLLIN, 0});
        who.emplace_back(l.get(), 1);
        fds.push_back({l->err_fd, POLLIN, 0});
        who.emplace_back(l.get(), 2);
        if (opt_.task_timeout.count() > 0 && !l->inflight.empty()) {
          auto due = l->inflight.front()->started + opt_.task_timeout - Clock::now();
          auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(due).count() + 1;
          timeout_ms = std::clamp<int>(static_cast<int>(ms), 0, timeout_ms);
        }
      }
    }
    int n = ::poll(fds.data(), fds.size(), timeout_ms);
    if (n < 0 && errno != EINTR) break;
    if (fds[0].revents) {
      std::uint64_t v;
      [[maybe_unused]] auto r = ::read(wake_fd_, &v, sizeof v);
    }
    // Output first, so a worker's last words come before the news of its death.
    for (std::size_t i = 1; i < fds.size(); ++i) {
      if (!fds[i].revents || who[i].second == 0) continue;
      auto* l = who[i].first;
      if (who[i].second == 1) read_output(*l, l->out_fd, l->out_buf, 1, false);
      if (who[i].second == 2) read_output(*l, l->err_fd, l->err_buf, 2, false);
    }
    for (std::size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents && who[i].second == 0) handle_exit(*who[i].first);
    }
    enforce_timeouts();
  }
  terminate_all();
}

}  // namespace ferry::detail
