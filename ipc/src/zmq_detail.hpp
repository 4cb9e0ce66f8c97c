// Internal to ipc/: the guarded zmq socket shared by ZmqChannel and ZmqRouter.
#pragma once

#include <functional>
#include <future>
#include <map>
#include <thread>

#include <sys/stat.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "ferry/ipc/channel.hpp"
#include "ferry/ipc/deadline.hpp"
#include "ferry/ipc/zmq_channel.hpp"
#include "ferry/ipc/zmq_router.hpp"

namespace ferry::ipc::zmq_detail {

// The process's context: created on first use, terminated when the last holder lets go.
std::shared_ptr<zmq::context_t> shared_context();
bool shared_context_alive();

// File descriptors kept free when a socket is opened (fd_limits::check_headroom): a socket
// takes about 8 (zmq's mailboxes, the monitor pair, our eventfds, epoll and timer, its
// listener or connection) and a router one per peer; the context's first use takes about 5
// (reaper and I/O thread mailboxes and pollers). The rest is slack for accepted connections.
inline constexpr std::size_t kFdsPerSocket = 16;
inline constexpr std::size_t kFdsPerContext = 8;

// The ZAP handler (RFC 27) of the shared context: one thread answering libzmq's
// authentication requests for every CURVE server socket, each registered under its own domain
// with its own authorize callback. Alive while a CURVE server socket holds it.
class ZapHandler {
 public:
  static std::shared_ptr<ZapHandler> acquire(const std::shared_ptr<zmq::context_t>& ctx);
  explicit ZapHandler(std::shared_ptr<zmq::context_t> ctx);
  ~ZapHandler();
  std::string add(std::function<bool(std::string_view)> authorize);  // returns the domain
  void remove(const std::string& domain);

 private:
  void run(std::promise<void>& bound);
  std::shared_ptr<zmq::context_t> ctx_;
  std::mutex m_;
  std::map<std::string, std::function<bool(std::string_view)>> domains_;
  unsigned next_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

enum Side : int { kRecv = 0, kSend = 1 };

// What an attempt returns when it should be retried after a wait.
inline bool not_ready(const Status& s) noexcept {
  return s.code() == Errc::would_block || s.code() == Errc::queue_full;
}

struct MonitorEvent {
  std::uint16_t event = 0;
  std::int32_t value = 0;  // the descriptor, for connection events
};

Error zmq_error(std::string_view what, const zmq::error_t& e);

// One zmq data socket plus its monitor, with a mutex so a sending and a receiving thread can
// share it. Waits never hold the mutex: they poll the sockets' ZMQ_FDs plus a per-side eventfd
// ("kick") that the other side writes after each operation while this side waits, because an
// operation on one thread may consume the ZMQ_FD signal the other thread is waiting for.
class Socket {
 public:
  static Result<std::unique_ptr<Socket>> open(zmq::socket_type type, const std::string& address,
                                              Role role, const ChannelOptions& options,
                                              const ZmqOptions& zmq);
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket();

  // Calls attempt() under the mutex until it returns something other than WouldBlock /
  // QueueFull, waiting between tries up to d. attempt may lower wake_at to be retried by then
  // even without socket activity. Returns Timeout when a timed d expires.
  template <class F>
  Status run(Side side, Deadline d, F&& attempt) {
    for (;;) {
      Status st;
      Clock::time_point wake;
      bool ready_now = false;
      {
        std::lock_guard lk(mu_);
        // Only a kick makes the eventfd readable: no read() per call on a busy stream.
        if (kicked_[side]) {
          kicked_[side] = false;
          drain(kick_[side]);
        }
        waiting_[side].store(false);
        wake_at = Clock::time_point::max();
        st = attempt();
        // Processes zmq's pending commands (a try form retries once if they made room or
        // brought a message), which also re-arms the ZMQ_FDs before we poll them.
        if (not_ready(st)) ready_now = pending(side) && wake_at == Clock::time_point::max();
        if (ready_now && d.is_now()) {
          wake_at = Clock::time_point::max();
          st = attempt();
        }
        wake = wake_at;
        // No timerfd_settime per call while no probe is due (disarmed stays disarmed).
        if (timer_fd_ >= 0 && !(wake == Clock::time_point::max() && armed_ == wake)) {
          arm_timer(wake);
          armed_ = wake;
        }
        if (!not_ready(st) || d.is_now()) {
          kick_other(side);
          return st;
        }
        if (!ready_now) waiting_[side].store(true);
        kick_other(side);
      }
      if (ready_now && !d.expired()) continue;
      if (d.expired()) {
        waiting_[side].store(false);
        return Error{Errc::timeout};
      }
      wait(side, d, wake);
    }
  }

  std::optional<MonitorEvent> next_event();  // under the mutex
  std::mutex& mutex() const noexcept { return mu_; }
  zmq::socket_t& data() noexcept { return data_; }
  std::size_t max_frame() const noexcept { return max_frame_; }
  const std::string& endpoint() const noexcept { return endpoint_; }
  int wait_fd() const noexcept { return epoll_fd_; }

  // Set by attempt(): retry no later than this.
  Clock::time_point wake_at = Clock::time_point::max();

 private:
  Socket() = default;
  static void drain(int fd) noexcept;
  void kick_other(Side side) noexcept;
  bool pending(Side side);
  void wait(Side side, Deadline d, Clock::time_point wake);
  void arm_timer(Clock::time_point when) noexcept;

  // Declared first so it is destroyed last: the context may only end after the sockets.
  std::shared_ptr<zmq::context_t> ctx_;
  // CURVE servers: the process's ZAP handler (outlives this socket's registration in it).
  std::shared_ptr<class ZapHandler> zap_;
  std::string zap_domain_;
  mutable std::mutex mu_;
  zmq::socket_t data_;
  zmq::socket_t monitor_;
  bool monitoring_ = false;
  int data_fd_ = -1;
  int monitor_fd_ = -1;
  int kick_[2] = {-1, -1};
  std::atomic<bool> waiting_[2] = {false, false};
  bool kicked_[2] = {false, false};  // under mu_: kick_[side] was written since its last drain
  Clock::time_point armed_ = Clock::time_point::max();  // under mu_: the timer's setting
  int epoll_fd_ = -1;
  int timer_fd_ = -1;  // routers only: wakes wait_fd() users for due probes
  std::size_t max_frame_ = 0;
  std::string endpoint_;
  // The socket file of a bound ipc:// endpoint, identified so that closing removes only ours
  // (zmq leaves the file behind unless the address was a wildcard).
  std::string ipc_path_;
  dev_t ipc_dev_ = 0;
  ino_t ipc_ino_ = 0;
};

// Builds the one-part wire message of a frame (header.length taken from the payload).
zmq::message_t to_message(const Frame& f);
// Parses one wire message into out (payload capacity reused).
Status from_message(const zmq::message_t& m, std::size_t max_frame, Frame& out);
Status check_size(const Frame& f, std::size_t max_frame);

// A bound ROUTER that tracks its peers and finds departed ones (see zmq_router.hpp).
class RouterCore {
 public:
  enum class Got { frame, joined, departed };
  struct Event {
    Got got = Got::frame;
    PeerId peer;
    bool fresh = false;  // the first message from this peer
  };

  explicit RouterCore(std::unique_ptr<Socket> s) noexcept : s_(std::move(s)) {}
  Socket& socket() noexcept { return *s_; }
  const Socket& socket() const noexcept { return *s_; }

  // Under the socket mutex (inside Socket::run): one step of receiving. ok with ev set: a frame
  // (in out), a peer joined, or a peer departed; an error for a malformed frame from ev.peer;
  // WouldBlock when nothing is there.
  Status attempt_recv(Event& ev, Frame& out);
  // Under the socket mutex: one try at sending to peer.
  // body is consumed only when sent, so a retry does not rebuild it.
  Status attempt_send(const PeerId& peer, zmq::message_t& body);
  std::vector<PeerId> peers() const;  // under the socket mutex

 private:
  void pump_monitor();
  void probe_if_due();
  void mark_departed(const PeerId& peer);
  bool pop_departed(Event& ev, bool nothing_to_read);
  enum class SendOutcome { sent, full, unreachable };
  SendOutcome send_to(const PeerId& peer, zmq::message_t& body);

  std::unique_ptr<Socket> s_;
  std::set<PeerId> known_;
  struct Departed {
    PeerId peer;
    std::size_t quiet = 0;  // messages read from others since this peer's last one
  };
  std::deque<Departed> departed_;  // found gone, not yet reported
  std::set<int> live_fds_;         // accepted connections (by descriptor) not yet dropped
  int unexplained_ = 0;            // dropped connections not yet matched to a departed peer
  Clock::time_point next_probe_{};
  Clock::duration probe_step_{};
  Clock::time_point last_drop_{};
  std::chrono::milliseconds send_backoff_{0};
};

}  // namespace ferry::ipc::zmq_detail
