// Internal to ipc/: the guarded zmq socket shared by ZmqChannel and ZmqRouter.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <thread>

#include <sys/stat.h>
#include <time.h>

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

// The wire, one frame per zmq message when it fits: the 20-byte header, then the payload. A
// payload larger than kChunkBytes goes as a bare header (its length field the whole payload's)
// followed by chunk messages: kChunkTag, then up to kChunkBytes payload bytes. The parts are
// separate messages, not one multipart message, because libzmq buffers a multipart message
// whole before the reader sees any of it. An empty message is an announcement or a probe, and
// may come between chunks. A header starts with 'F' (FRRY), a chunk with kChunkTag.
// So no message is longer than kMaxWireMessage, about ZMQ_MAXMSGSIZE on both ends: libzmq
// holds at most that much of one connection's message in progress, and the receiver decides
// on the declared length (max_frame, or the router's admission limit) before it keeps a byte.
inline constexpr std::size_t kChunkBytes = std::size_t{1} << 20;
inline constexpr std::uint8_t kChunkTag = 0x01;
inline constexpr std::size_t kMaxWireMessage = kHeaderSize + kChunkBytes;
// ZMQ_MAXMSGSIZE applies to the frame on the connection, which CURVE makes 33 bytes longer
// (command name, nonce, MAC, flags) than the message it carries.
inline constexpr std::size_t kMaxMsgSizeOption = kMaxWireMessage + 256;

// While the rest of a committed frame waits for room (see WireFrame), a receiving call retries
// it on this backoff: readiness for writing is not what a receiver waits for.
class Backoff {
 public:
  std::chrono::milliseconds next() noexcept {
    cur_ = std::clamp(cur_ * 2, std::chrono::milliseconds(1), std::chrono::milliseconds(16));
    return cur_;
  }
  void reset() noexcept { cur_ = std::chrono::milliseconds(0); }

 private:
  std::chrono::milliseconds cur_{0};
};

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
  //
  // The cost per frame on a busy stream is the data socket's own calls: attempt reads the
  // monitor only when monitor_due() says so (see there). What keeps waits correct: an attempt
  // that says not-ready has read the data socket to EAGAIN (receiving; that processes zmq's
  // commands, which re-arms ZMQ_FD) and has drained the monitor if it was due; a send side
  // still reads ZMQ_EVENTS (a send's EAGAIN does not process commands).
  template <class F>
  Status run(Side side, Deadline d, F&& attempt) {
    // A try form may be driven by an outside poller of wait_fd(), whose wake-ups we do not
    // see: it reads the monitor whenever it finds nothing to do.
    const bool outside = d.is_now();
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
        if (outside) monitor_dirty_ = true;
        if (waiting_[side].load(std::memory_order_relaxed)) waiting_[side].store(false);
        wake_at = Clock::time_point::max();
        st = attempt();
        // A send retries once (try form) if zmq's pending commands made room or brought an
        // event; reading ZMQ_EVENTS also re-arms the ZMQ_FDs before we poll them.
        // Not for a ROUTER: its POLLOUT means some peer has room, and its attempts read
        // ZMQ_EVENTS themselves (see RouterCore::attempt_send).
        if (not_ready(st) && side == kSend && !router_) {
          ready_now = pending(side) && wake_at == Clock::time_point::max();
        }
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
      if (wait(side, d, wake)) {
        std::lock_guard lk(mu_);
        monitor_dirty_ = true;
      }
    }
  }

  // Under the mutex: whether attempt() should read the monitor now. An empty read of it costs
  // a system call, so a busy stream looks only every kMonitorIntervalMs (a peer's death is still
  // seen within that while frames flow without pause); `idle` (the data socket is not ready, a
  // wait may follow) looks whenever the monitor may hold something: it signalled in our last
  // wait, ZMQ_EVENTS said so, a try form ran (an outside poller may have seen it signal), or it
  // was not drained since. A wait on its descriptor catches anything that comes later.
  bool monitor_due(bool idle) noexcept {
    if (idle && monitor_dirty_) return true;
    const std::int64_t now = coarse_ms();
    if (now < next_monitor_ms_) return false;
    next_monitor_ms_ = now + kMonitorIntervalMs;
    return true;
  }
  static constexpr std::int64_t kMonitorIntervalMs = 1;
  // CLOCK_MONOTONIC_COARSE in ms: a few instructions (no TSC read) per frame, at the cost of
  // the tick's resolution (1-4 ms), which is all a look every millisecond needs.
  static std::int64_t coarse_ms() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
  }

  // Under the mutex: the monitor's next event; nullopt once it is drained.
  std::optional<MonitorEvent> next_event();
  std::mutex& mutex() const noexcept { return mu_; }
  zmq::socket_t& data() noexcept { return data_; }
  std::size_t max_frame() const noexcept { return max_frame_; }
  std::chrono::milliseconds linger() const noexcept { return linger_; }
  const std::string& endpoint() const noexcept { return endpoint_; }
  int wait_fd() const noexcept { return epoll_fd_; }

  // Set by attempt(): retry no later than this.
  Clock::time_point wake_at = Clock::time_point::max();

 private:
  Socket() = default;
  static void drain(int fd) noexcept;
  void kick_other(Side side) noexcept;
  bool pending(Side side);
  // Waits for activity on the side's descriptors; true if the monitor's signalled.
  bool wait(Side side, Deadline d, Clock::time_point wake);
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
  bool router_ = false;
  int data_fd_ = -1;
  int monitor_fd_ = -1;
  int kick_[2] = {-1, -1};
  std::atomic<bool> waiting_[2] = {false, false};
  bool kicked_[2] = {false, false};   // under mu_: kick_[side] was written since its last drain
  bool monitor_dirty_ = true;         // under mu_: see monitor_due
  std::int64_t next_monitor_ms_ = 0;  // under mu_: a busy stream's next look (coarse_ms)
  Clock::time_point armed_ = Clock::time_point::max();  // under mu_: the timer's setting
  int epoll_fd_ = -1;
  int timer_fd_ = -1;  // routers only: wakes wait_fd() users for due probes
  std::size_t max_frame_ = 0;
  std::chrono::milliseconds linger_{0};
  std::string endpoint_;
  // The socket file of a bound ipc:// endpoint, identified so that closing removes only ours
  // (zmq leaves the file behind unless the address was a wildcard).
  std::string ipc_path_;
  dev_t ipc_dev_ = 0;
  ino_t ipc_ino_ = 0;
};

Status check_size(const Frame& f, std::size_t max_frame);

// The wire messages of one frame (header.length taken from the payload), built at once (one
// copy of the payload) and handed to zmq in order.
class WireFrame {
 public:
  explicit WireFrame(const Frame& f);
  bool done() const noexcept { return sent_ == 1 + chunks_.size(); }
  bool started() const noexcept { return sent_ > 0; }
  zmq::message_t& next() noexcept { return sent_ == 0 ? head_ : chunks_[sent_ - 1]; }
  void advance() noexcept { ++sent_; }
  // The messages not sent yet, appended to `to` (this frame is left done).
  void move_rest(std::deque<zmq::message_t>& to);

 private:
  zmq::message_t head_;
  std::vector<zmq::message_t> chunks_;
  std::size_t sent_ = 0;
};

// The outcome of a send whose attempts ended (deadline, or one try) after the frame's first
// message went out: the frame is committed (a peer cannot be told to drop half a frame), so
// keep() queues the rest, under the socket mutex, and the send is ok. Other outcomes stand.
template <class Keep>
Status committed(Status st, const WireFrame& w, std::mutex& mu, Keep&& keep) {
  if (st || !w.started() || !(not_ready(st) || st.code() == Errc::timeout)) return st;
  std::lock_guard lk(mu);
  keep();
  return {};
}

// Sends queued messages in order without waiting; true once none is left. Throws
// zmq::error_t as zmq does (EHOSTUNREACH from a ROUTER to a departed peer).
bool flush(zmq::socket_t& s, std::deque<zmq::message_t>& queue);

// One peer's incoming messages made into frames (the wire above). Bounded: nothing of a
// chunked frame is kept unless its declared length is within the limit.
class Inbound {
 public:
  // One non-empty message. ok with complete: `out` holds a frame. ok without: a part was
  // kept (or skipped). An error names what was wrong; the frame it belonged to is dropped,
  // and the rest of a refused chunked frame is skipped without another error.
  Status take(const zmq::message_t& m, std::size_t limit, Frame& out, bool& complete);

 private:
  enum class State { idle, assembling, skipping };
  State state_ = State::idle;
  FrameHeader header_;
  Bytes buf_;
  std::uint64_t left_ = 0;  // payload bytes still to come (assembling or skipping)
};

// A bound ROUTER that tracks its peers and finds departed ones (see zmq_router.hpp).
class RouterCore {
 public:
  enum class Got { frame, joined, departed };
  struct Event {
    Got got = Got::frame;
    PeerInfo peer;
    bool fresh = false;  // the first message from this peer
  };

  // unadmitted_max: the largest frame a peer may send before admit() (see ZmqOptions).
  // addresses: fill Event::peer.address (a copy per message, so only where it is wanted).
  RouterCore(std::unique_ptr<Socket> s, std::size_t unadmitted_max, bool addresses) noexcept
      : s_(std::move(s)), unadmitted_max_(unadmitted_max), addresses_(addresses) {}
  RouterCore(const RouterCore&) = delete;
  RouterCore& operator=(const RouterCore&) = delete;
  // Gives frames still queued here (see attempt_send) up to the linger time to go out.
  ~RouterCore();
  Socket& socket() noexcept { return *s_; }
  const Socket& socket() const noexcept { return *s_; }

  // Under the socket mutex (inside Socket::run): one step of receiving. ok with ev set: a frame
  // (in out), a peer joined, or a peer departed; an error for a malformed frame from ev.peer;
  // WouldBlock when nothing is there.
  Status attempt_recv(Event& ev, Frame& out);
  // Under the socket mutex: one try at sending to peer (QueueFull: try again later). The
  // messages of w are consumed as zmq takes them, so a retry goes on where this one stopped.
  Status attempt_send(const PeerId& peer, WireFrame& w);
  // Under the socket mutex: a frame whose first message went out but whose send ended before
  // the rest did: the rest is queued here and goes out before anything else to that peer.
  void keep_rest(const PeerId& peer, WireFrame& w);
  std::vector<PeerId> peers() const;  // under the socket mutex
  // Under the socket mutex. ChannelClosed if the peer is not (or no longer) known.
  Status admit(const PeerId& peer, bool admitted);

 private:
  bool pump_monitor();  // true if it read any event
  void probe_if_due();
  Status read(Event& ev, Frame& out);  // data only: a frame, an error, or WouldBlock at EAGAIN
  void mark_departed(const PeerId& peer);
  bool pop_departed(Event& ev, bool nothing_to_read);
  Status send_some(const PeerId& peer, WireFrame& w);  // one try, as attempt_send
  enum class SendOutcome { sent, full, unreachable };
  SendOutcome send_to(const PeerId& peer, zmq::message_t& body);
  bool flush_backlog();  // true when nothing is left queued
  void retry_soon();

  std::unique_ptr<Socket> s_;
  std::size_t unadmitted_max_;
  bool addresses_;
  std::set<PeerId> known_;
  // What is known of a peer from its first message until its departure is reported.
  struct PeerState {
    std::string address;
    bool admitted = false;
    Inbound in;
  };
  std::map<PeerId, PeerState> state_;
  std::map<PeerId, std::deque<zmq::message_t>> backlog_;  // see keep_rest
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
  Backoff backlog_backoff_;
};

}  // namespace ferry::ipc::zmq_detail
