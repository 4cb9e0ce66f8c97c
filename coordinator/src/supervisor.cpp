// Local worker processes: spawn, watch, reap, forward output.
#include "supervisor.hpp"

#include "ferry/shared/task.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <optional>
#include <system_error>
#include <utility>

#include "ferry/ipc/endpoint.hpp"
#include "ferry/ipc/pipe_channel.hpp"
#include "ferry/ipc/shm_channel.hpp"
#include "ferry/ipc/zmq_channel.hpp"
#include "ferry/shared/log.hpp"
#include "ferry/shared/session.hpp"
#include "pool_core.hpp"

namespace ferry::detail {
namespace {

std::atomic<std::uint32_t> g_pool_serial{0};

struct OpenedChannel {
  ipc::ChannelPtr ch;    // empty while `pending` holds it
  std::string endpoint;  // what the worker opens
  std::size_t credit = 0;
  ipc::PipeEnds pipe_ends;  // pipe transport: the child's descriptors
  std::string socket_path;  // zmq: the ipc socket file
  // shm: named and sized, its rings reserved by finish() once the worker is spawned.
  std::optional<ipc::ShmChannel::Pending> pending;

  Status finish() {
    if (!pending) return {};
    auto c = pending->finish();
    pending.reset();
    if (!c) return std::move(c).error();
    ch = std::move(*c);
    return {};
  }
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
      auto c = ipc::ShmChannel::prepare(name);
      if (!c) return std::move(c).error();
      out.credit = ipc::ShmOptions{}.ring_bytes;
      out.endpoint = c->endpoint();
      out.pending.emplace(std::move(*c));
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

// The worker's stdout and stderr pipes (read ends non-blocking, ours; write ends its). Closes
// what it still holds when destroyed.
struct OutputPipes {
  int out[2] = {-1, -1}, err[2] = {-1, -1};
  OutputPipes() = default;
  OutputPipes(OutputPipes&& o) noexcept { take(o); }
  OutputPipes& operator=(OutputPipes&& o) noexcept {
    if (this != &o) {
      close_all();
      take(o);
    }
    return *this;
  }
  ~OutputPipes() { close_all(); }
  void take(OutputPipes& o) noexcept {
    for (int i = 0; i < 2; ++i) {
      out[i] = std::exchange(o.out[i], -1);
      err[i] = std::exchange(o.err[i], -1);
    }
  }
  Status open() {
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
      const int e = errno;
      close_all();
      Error why = system_error("pipe", e);
      if (e == EMFILE) why.detail += " (raise the open-file limit, `ulimit -n`)";
      return why;
    }
    for (int fd : {out[0], err[0]})
      ::fcntl(fd, F_SETFL, O_NONBLOCK);
    return {};
  }
  void close_child_ends() {
    for (int* fd : {&out[1], &err[1]}) {
      if (*fd >= 0) ::close(*fd);
      *fd = -1;
    }
  }
  void close_all() {
    close_child_ends();
    for (int* fd : {&out[0], &err[0]}) {
      if (*fd >= 0) ::close(*fd);
      *fd = -1;
    }
  }
};

}  // namespace

Supervisor::Supervisor(PoolCore& core, const PoolOptions& opt,
                       std::shared_ptr<coordinator::Launcher> launcher)
    : core_(core), opt_(opt), launcher_(std::move(launcher)) {
  exe_ = opt_.worker_program.empty() ? coordinator::self_executable() : opt_.worker_program;
  serial_ = g_pool_serial.fetch_add(1) + 1;
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) throw Exception(system_error("eventfd", errno));
}

Supervisor::~Supervisor() {
  stop(false);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void Supervisor::start() {
  thread_ = std::thread([this] {
    try {
      run();
    } catch (const std::exception& e) {
      // Out of memory while watching: stop the workers rather than leave them unwatched.
      core_.event(EventLevel::error,
                  std::string("supervisor failed: ") + e.what() + "; stopping the workers");
      terminate_all();
    }
  });
}

void Supervisor::request_spawns(unsigned n) {
  {
    std::lock_guard lk(mu_);
    want_spawn_ += n;
  }
  wake();
}

void Supervisor::wake() noexcept {
  std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

void Supervisor::stop(bool graceful) {
  {
    std::lock_guard lk(mu_);
    if (stopping_) {
      // Already stopping (or stopped): just wait for it.
    } else {
      stopping_ = true;
      graceful_ = graceful;
    }
  }
  wake();
  if (thread_.joinable()) thread_.join();
}

// A worker spawned whose channel is not finished yet; destroying it undoes the spawn (the
// process is killed and reaped, the channel's name removed, the pipes closed).
struct Supervisor::Launched {
  WorkerId id = 0;
  OpenedChannel opened;
  OutputPipes pipes;
  std::unique_ptr<coordinator::Process> proc;
};

void Supervisor::spawn(unsigned n) {
  // Every worker is spawned before any channel is finished: reserving a worker's shared
  // memory (about 0.4 ms for 2 MiB of rings) then overlaps the exec of the workers spawned
  // before it instead of delaying the next spawn. A worker opening its channel early waits
  // for the reservation (ShmChannel::open), so it never touches unreserved pages.
  std::vector<Launched> launched;
  try {
    launched.reserve(n);
    workers_.reserve(workers_.size() + n);  // so no push_back below can throw
  } catch (const std::exception& e) {
    for (unsigned i = 0; i < n; ++i)
      core_.spawn_failed(std::string("cannot start a worker: ") + e.what());
    return;
  }
  for (unsigned i = 0; i < n; ++i) {
    try {
      launch(launched);
    } catch (const std::exception& e) {  // out of memory: as any other failure to start
      core_.spawn_failed(std::string("cannot start a worker: ") + e.what());
    }
  }
  for (auto& l : launched) {
    try {
      start(l);
    } catch (const std::exception& e) {
      core_.spawn_failed("cannot start worker " + std::to_string(l.id) + ": " + e.what());
    }
  }
}

void Supervisor::launch(std::vector<Launched>& out) {
  Launched l;
  l.id = core_.next_worker_id();
  const std::string name = "pool" + std::to_string(serial_) + ".w" + std::to_string(l.id);
  auto opened = open_worker_channel(opt_.transport, name);
  if (!opened) {
    return core_.spawn_failed("cannot start worker " + std::to_string(l.id) + ": " +
                              opened.error().message());
  }
  l.opened = std::move(*opened);
  if (auto st = l.pipes.open(); !st) {
    l.opened.pipe_ends.close();
    return core_.spawn_failed("cannot start worker " + std::to_string(l.id) + ": " +
                              st.error().message());
  }
  coordinator::SpawnSpec spec;
  spec.exe = exe_;
  spec.args = opt_.worker_args;
  spec.env = {"FERRY_WORKER_ENDPOINT=" + l.opened.endpoint,
              "FERRY_WORKER_PARENT=" + std::to_string(::getpid()),
              "FERRY_WORKER_ID=" + std::to_string(l.id),
              std::string(kSessionEnv) + "=" + SessionId::current().str()};
  // The libraries this process loaded: the worker serves their tasks too.
  if (const auto& libs = TaskRegistry::instance().libraries(); !libs.empty()) {
    std::string v = std::string(kTaskLibrariesEnv) + "=";
    for (const auto& lib : libs)
      v += lib + "\n";
    spec.env.push_back(std::move(v));
  }
  spec.stdout_fd = l.pipes.out[1];
  spec.stderr_fd = l.pipes.err[1];
  if (opt_.transport == Transport::pipe) {
    spec.fds = {{l.opened.pipe_ends.read_fd, 3}, {l.opened.pipe_ends.write_fd, 4}};
  }
  auto proc = launcher_->spawn(spec);
  l.pipes.close_child_ends();
  l.opened.pipe_ends.close();
  if (!proc) {
    return core_.spawn_failed("cannot start worker " + std::to_string(l.id) + ": " +
                              proc.error().message());
  }
  l.proc = std::move(*proc);
  out.push_back(std::move(l));  // capacity reserved by spawn()
}

void Supervisor::start(Launched& l) {
  if (auto st = l.opened.finish(); !st) {
    // The process is killed and reaped with `l`, before the pool ever counts it; it never
    // touched the unreserved rings (its open waits for finish(), and is told it failed).
    return core_.spawn_failed("cannot start worker " + std::to_string(l.id) + ": " +
                              st.error().message());
  }
  WorkerIdentity who;
  who.id = l.id;
  who.pid = l.proc->pid();
  auto w =
      std::make_shared<LocalWorker>(who, std::move(l.proc), std::move(l.opened.ch), l.opened.credit,
                                    l.pipes.out[0], l.pipes.err[0], l.opened.socket_path);
  l.pipes.out[0] = l.pipes.err[0] = -1;  // the worker's now
  w->spawned_at = SchedClock::now();
  try {
    w->start_reader(core_);
  } catch (const std::system_error& e) {
    // No thread for its channel: the worker cannot be served. Its process is stopped and
    // reaped here (Process's destructor) before the pool ever counts it.
    core_.spawn_failed("cannot start worker " + std::to_string(l.id) + ": no thread for it (" +
                       e.what() + ")");
    return;
  }
  log::write(
      log::Level::debug, "ferry",
      "worker " + std::to_string(w->id()) + " started (pid " + std::to_string(w->who().pid) + ")");
  core_.worker_started(w);
  workers_.push_back(w);
  w->release_reader();
}

void Supervisor::emit_line(const LocalWorker& w, int stream, std::string_view line) const {
  core_.note_line(w.id(), line);
  if (opt_.on_output) {
    opt_.on_output(WorkerLine{w.id(), w.who().pid, stream, line});
    return;
  }
  log::worker_line(w.id(), w.who().pid, stream, line);
}

void Supervisor::read_output(LocalWorker& w, int stream, bool eof) {
  int& fd = stream == 1 ? w.out_fd : w.err_fd;
  std::string& buf = stream == 1 ? w.out_buf : w.err_buf;
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
      emit_line(w, stream, std::string_view(buf).substr(0, pos));
      buf.erase(0, pos + 1);
    }
    if (buf.size() > 65536) {  // a very long line without newline: pass it on in pieces
      emit_line(w, stream, buf);
      buf.clear();
    }
  }
  if (eof && !buf.empty()) {
    emit_line(w, stream, buf);
    buf.clear();
  }
}

void Supervisor::reap(const std::shared_ptr<LocalWorker>& w) {
  auto info = w->process().try_reap();
  if (!info) return;  // spurious wake-up
  w->stop_reader();   // delivers the results it sent before dying
  read_output(*w, 1, true);
  read_output(*w, 2, true);
  workers_.erase(std::find(workers_.begin(), workers_.end(), w));
  EndInfo end;
  // A SIGKILL the pool sent was recorded as the kill's cause, which the scheduler uses instead.
  end.cause = info->signal == SIGKILL ? EndCause::killed : EndCause::exited;
  end.exit = info;
  core_.worker_gone(w->id(), end);
}

void Supervisor::run() {
  for (;;) {
    unsigned spawns = 0;
    {
      std::lock_guard lk(mu_);
      if (stopping_) break;
      spawns = std::exchange(want_spawn_, 0u);
    }
    if (spawns > 0) spawn(spawns);

    std::vector<pollfd> fds{{wake_fd_, POLLIN, 0}};
    std::vector<std::pair<std::shared_ptr<LocalWorker>, int>> who{{nullptr, 0}};
    // Only open descriptors: poll() refuses (EINVAL) more entries than RLIMIT_NOFILE, closed
    // ones included, and a refused poll would leave the workers unwatched and unreaped.
    auto watch = [&](int fd, const std::shared_ptr<LocalWorker>& w, int what) {
      if (fd < 0) return;
      fds.push_back({fd, POLLIN, 0});
      who.emplace_back(w, what);
    };
    for (auto& w : workers_) {
      watch(w->process().pidfd(), w, 0);
      watch(w->out_fd, w, 1);
      watch(w->err_fd, w, 2);
    }
    int timeout_ms = 1000;
    if (auto due = core_.next_deadline()) {
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*due - SchedClock::now());
      timeout_ms = static_cast<int>(std::clamp<std::int64_t>(ms.count() + 1, 0, timeout_ms));
    }
    int n = ::poll(fds.data(), fds.size(), timeout_ms);
    if (n < 0 && errno != EINTR) break;
    if (fds[0].revents) {
      std::uint64_t v;
      [[maybe_unused]] auto r = ::read(wake_fd_, &v, sizeof v);
    }
    // Output first, so a worker's last words come before the news of its death.
    for (std::size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents && who[i].second != 0) read_output(*who[i].first, who[i].second, false);
    }
    for (std::size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents && who[i].second == 0) reap(who[i].first);
    }
    core_.tick();
  }
  terminate_all();
}

bool Supervisor::wait_all(TimePoint until) {
  for (;;) {
    if (workers_.empty()) return true;
    std::vector<pollfd> fds;
    for (auto& w : workers_)
      fds.push_back({w->process().pidfd(), POLLIN, 0});
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - SchedClock::now());
    if (left.count() <= 0) return false;
    int n = ::poll(fds.data(), fds.size(), static_cast<int>(left.count()));
    if (n < 0 && errno != EINTR) return false;
    const auto snapshot = workers_;
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents) reap(snapshot[i]);
    }
  }
}

void Supervisor::terminate_all() {
  bool graceful;
  {
    std::lock_guard lk(mu_);
    graceful = graceful_;
  }
  auto signal_all = [&](int sig) {
    for (auto& w : workers_)
      (void)w->process().kill(sig);
  };
  if (graceful) {
    // The worker exits after its current task.
    const Frame bye = make_frame(MessageKind::shutdown, msg::Shutdown{true});
    for (auto& w : workers_) {
      std::lock_guard lk(w->send_mu);
      (void)w->send(std::span<const Frame>(&bye, 1),
                    ipc::Deadline::after(std::chrono::milliseconds(100)));
    }
  } else {
    signal_all(SIGTERM);
  }
  if (!wait_all(SchedClock::now() + opt_.shutdown_grace)) {
    signal_all(SIGTERM);
    if (!wait_all(SchedClock::now() + opt_.shutdown_grace)) {
      signal_all(SIGKILL);
      wait_all(SchedClock::now() + std::chrono::seconds(30));
    }
  }
}

}  // namespace ferry::detail
