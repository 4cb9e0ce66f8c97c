#include "ferry/ipc/zmq_channel.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <deque>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "fd_limits.hpp"
#include "zmq_detail.hpp"

namespace ferry::ipc {
namespace zmq_detail {

namespace {
// Never destroyed: a channel destroyed during static destruction must still find them.
std::mutex& context_mutex() {
  static auto* mu = new std::mutex;
  return *mu;
}
std::weak_ptr<zmq::context_t>& context_slot() {
  static auto* weak = new std::weak_ptr<zmq::context_t>;
  return *weak;
}
}  // namespace

std::shared_ptr<zmq::context_t> shared_context() {
  std::lock_guard lk(context_mutex());
  auto ctx = context_slot().lock();
  if (!ctx) {
    ctx = std::make_shared<zmq::context_t>(1);  // one I/O thread is plenty for a few peers
    context_slot() = ctx;
  }
  return ctx;
}

bool shared_context_alive() {
  std::lock_guard lk(context_mutex());
  return !context_slot().expired();
}

std::shared_ptr<ZapHandler> ZapHandler::acquire(const std::shared_ptr<zmq::context_t>& ctx) {
  static auto* mu = new std::mutex;
  static auto* weak = new std::weak_ptr<ZapHandler>;
  std::lock_guard lk(*mu);
  auto h = weak->lock();
  if (!h) {
    h = std::make_shared<ZapHandler>(ctx);
    *weak = h;
  }
  return h;
}

ZapHandler::ZapHandler(std::shared_ptr<zmq::context_t> ctx) : ctx_(std::move(ctx)) {
  std::promise<void> bound;
  auto ready = bound.get_future();
  thread_ = std::thread([this, &bound] { run(bound); });
  ready.get();  // the handler must be bound before any CURVE server accepts a connection
}

ZapHandler::~ZapHandler() {
  stop_ = true;
  thread_.join();
}

std::string ZapHandler::add(std::function<bool(std::string_view)> authorize) {
  std::lock_guard lk(m_);
  std::string domain = "ferry." + std::to_string(next_++);
  domains_[domain] = std::move(authorize);
  return domain;
}

void ZapHandler::remove(const std::string& domain) {
  std::lock_guard lk(m_);
  domains_.erase(domain);
}

void ZapHandler::run(std::promise<void>& bound) {
  zmq::socket_t rep(*ctx_, zmq::socket_type::rep);
  rep.set(zmq::sockopt::linger, 0);
  try {
    rep.bind("inproc://zeromq.zap.01");
    bound.set_value();
  } catch (...) {
    bound.set_exception(std::current_exception());
    return;
  }
  while (!stop_.load()) {
    zmq::pollitem_t item{rep.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(100)) <= 0) continue;
    std::vector<zmq::message_t> parts;
    for (;;) {
      zmq::message_t m;
      if (!rep.recv(m, zmq::recv_flags::dontwait)) break;
      const bool more = m.more();
      parts.push_back(std::move(m));
      if (!more) break;
    }
    // version, request id, domain, address, identity, mechanism, credentials...
    bool ok = false;
    if (parts.size() >= 7 && parts[5].to_string_view() == "CURVE" && parts[6].size() == 32) {
      char z85[41] = {};
      zmq_z85_encode(z85, static_cast<const std::uint8_t*>(parts[6].data()), 32);
      std::function<bool(std::string_view)> authorize;
      {
        std::lock_guard lk(m_);
        if (auto it = domains_.find(parts[2].to_string()); it != domains_.end()) {
          authorize = it->second;
        }
      }
      ok = authorize && authorize(z85);
    }
    const std::string request_id = parts.size() > 1 ? parts[1].to_string() : std::string();
    rep.send(zmq::buffer(std::string_view("1.0")), zmq::send_flags::sndmore);
    rep.send(zmq::buffer(request_id), zmq::send_flags::sndmore);
    rep.send(zmq::buffer(std::string_view(ok ? "200" : "400")), zmq::send_flags::sndmore);
    rep.send(zmq::buffer(std::string_view(ok ? "OK" : "key not authorized")),
             zmq::send_flags::sndmore);
    rep.send(zmq::buffer(std::string_view()), zmq::send_flags::sndmore);
    rep.send(zmq::buffer(std::string_view()), zmq::send_flags::none);
  }
}

Error zmq_error(std::string_view what, const zmq::error_t& e) {
  if (e.num() == EMFILE || e.num() == ENFILE) return fd_limits::os_error(what, e.num());
  return system_error(std::string(what) + ": " + e.what(), e.num());
}

namespace {
int to_ms(std::chrono::milliseconds d) {
  return static_cast<int>(std::clamp<std::chrono::milliseconds::rep>(d.count(), 0, INT_MAX));
}

// An IPv6 address in brackets ("tcp://[::1]:5555") needs ZMQ_IPV6, else zmq refuses it.
bool names_ipv6_host(const std::string& address) {
  if (address.rfind("tcp://", 0) != 0) return false;
  auto tcp = parse_tcp_address(address);
  return tcp && !tcp->host.empty() && tcp->host.front() == '[';
}

// The addresses of a host name, as zmq writes hosts: IPv4 first ("localhost" is 127.0.0.1
// before ::1), IPv6 in brackets.
std::vector<std::string> resolve_host(const std::string& name) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(name.c_str(), nullptr, &hints, &found) != 0) return {};
  std::vector<std::string> hosts;
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    const bool v6 = a->ai_family == AF_INET6;
    const void* raw =
        v6 ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in6*>(a->ai_addr)->sin6_addr)
           : &reinterpret_cast<const sockaddr_in*>(a->ai_addr)->sin_addr;
    if (::inet_ntop(a->ai_family, raw, text, sizeof text) == nullptr) continue;
    const std::string host = v6 ? "[" + std::string(text) + "]" : text;
    if (std::find(hosts.begin(), hosts.end(), host) != hosts.end()) continue;
    hosts.insert(v6 ? hosts.end() : hosts.begin(), host);
  }
  ::freeaddrinfo(found);
  return hosts;
}

// zmq binds to an address or an interface name, not a host name ("localhost" is ENODEV),
// so a name it refuses is resolved here and the first of its addresses that binds wins.
void bind_tcp(zmq::socket_t& d, const std::string& address) {
  try {
    d.bind(address);
    return;
  } catch (const zmq::error_t& e) {
    if (e.num() != ENODEV || address.rfind("tcp://", 0) != 0) throw;
    auto tcp = parse_tcp_address(address);
    if (!tcp || tcp->host == "*" || tcp->host.front() == '[') throw;
    const std::string port = tcp->port ? std::to_string(*tcp->port) : "*";
    for (const auto& host : resolve_host(tcp->host)) {
      try {
        d.set(zmq::sockopt::ipv6, host.front() == '[');
        d.bind("tcp://" + host + ":" + port);
        return;
      } catch (const zmq::error_t&) {
        // the next address; after the last, the error about the name as given
      }
    }
    throw;
  }
}

int make_eventfd() {
  const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) throw zmq::error_t();  // errno is what error_t reports
  return fd;
}
}  // namespace

Result<std::unique_ptr<Socket>> Socket::open(zmq::socket_type type, const std::string& address,
                                             Role role, const ChannelOptions& options,
                                             const ZmqOptions& zo) {
  // libzmq aborts the whole process when it cannot make an internal descriptor (its
  // mailboxes' eventfds, its pollers' epoll fds), so refuse while that can still be said.
  const std::size_t needed = kFdsPerSocket + (shared_context_alive() ? 0 : kFdsPerContext);
  if (auto st = fd_limits::check_headroom(
          std::string(role == Role::bind ? "bind " : "connect ") + address, needed);
      !st) {
    return std::move(st).error();
  }
  std::unique_ptr<Socket> s(new Socket());
  const bool router = type == zmq::socket_type::router;
  s->router_ = router;
  try {
    s->ctx_ = shared_context();
    s->max_frame_ = options.max_frame;
    s->linger_ = zo.linger;
    s->data_ = zmq::socket_t(*s->ctx_, type);
    auto& d = s->data_;
    // Bounded: closing waits at most this long for queued frames to reach a live peer.
    d.set(zmq::sockopt::linger, to_ms(zo.linger));
    d.set(zmq::sockopt::sndhwm, zo.send_hwm);
    d.set(zmq::sockopt::rcvhwm, zo.recv_hwm);
    // zmq drops a connection that announces a longer message before it buffers any of it;
    // ferry never sends one (larger frames go in chunks), so libzmq holds at most this much
    // of a connection's message in progress, whatever the peer claims.
    d.set(zmq::sockopt::maxmsgsize, static_cast<std::int64_t>(kMaxMsgSizeOption));
    d.set(zmq::sockopt::heartbeat_ivl, to_ms(zo.heartbeat_interval));
    d.set(zmq::sockopt::heartbeat_timeout, to_ms(zo.heartbeat_timeout));
    // Asks the peer to drop us too if it stops hearing from us.
    d.set(zmq::sockopt::heartbeat_ttl, std::min(to_ms(zo.heartbeat_timeout), 6553599));
    if (zo.curve_server) {
      s->zap_ = ZapHandler::acquire(s->ctx_);
      s->zap_domain_ = s->zap_->add(zo.curve_server->authorize);
      d.set(zmq::sockopt::zap_domain, s->zap_domain_);
      d.set(zmq::sockopt::curve_server, true);
      d.set(zmq::sockopt::curve_secretkey, zo.curve_server->keys.secret_key);
    } else if (zo.curve_client) {
      d.set(zmq::sockopt::curve_serverkey, zo.curve_client->server_public_key);
      d.set(zmq::sockopt::curve_publickey, zo.curve_client->keys.public_key);
      d.set(zmq::sockopt::curve_secretkey, zo.curve_client->keys.secret_key);
    }
    if (router) {
      // Sending to an unknown or departed peer is an error, not a silent drop; also how
      // departed peers are found (see zmq_router.hpp).
      d.set(zmq::sockopt::router_mandatory, true);
    } else {
      // Not IMMEDIATE: frames sent before the bind side is up are queued in order behind the
      // announcement. The channel never outlives its one connection (a drop closes it), so the
      // reconnect case IMMEDIATE guards against does not arise.
      d.set(zmq::sockopt::immediate, false);
    }
    static std::atomic<unsigned> counter{0};
    const std::string mon = "inproc://ferry.zmq.monitor." + std::to_string(counter++);
    if (zmq_socket_monitor(d.handle(), mon.c_str(), ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED) !=
        0) {
      throw zmq::error_t();
    }
    s->monitoring_ = true;
    s->monitor_ = zmq::socket_t(*s->ctx_, zmq::socket_type::pair);
    s->monitor_.set(zmq::sockopt::linger, 0);
    s->monitor_.connect(mon);  // before bind/connect, so no connection event is missed

    if (names_ipv6_host(address)) d.set(zmq::sockopt::ipv6, true);
    if (role == Role::bind) {
      bind_tcp(d, address);
      s->endpoint_ = d.get(zmq::sockopt::last_endpoint);
      struct stat st {};
      if (s->endpoint_.rfind("ipc://", 0) == 0 && ::stat(s->endpoint_.c_str() + 6, &st) == 0) {
        s->ipc_path_ = s->endpoint_.substr(6);
        s->ipc_dev_ = st.st_dev;
        s->ipc_ino_ = st.st_ino;
      }
    } else {
      d.connect(address);
      s->endpoint_ = address;
    }
    s->data_fd_ = d.get(zmq::sockopt::fd);
    s->monitor_fd_ = s->monitor_.get(zmq::sockopt::fd);
    s->kick_[kRecv] = make_eventfd();
    s->kick_[kSend] = make_eventfd();
    s->epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (s->epoll_fd_ < 0) throw zmq::error_t();
    if (router) {
      s->timer_fd_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
      if (s->timer_fd_ < 0) throw zmq::error_t();
    }
    for (int fd : {s->data_fd_, s->monitor_fd_, s->timer_fd_}) {
      if (fd < 0) continue;
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = fd;
      if (::epoll_ctl(s->epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) throw zmq::error_t();
    }
  } catch (const zmq::error_t& e) {
    return zmq_error((role == Role::bind ? "bind " : "connect ") + address, e);
  }
  return s;
}

Socket::~Socket() {
  if (monitoring_) zmq_socket_monitor(data_.handle(), nullptr, 0);
  monitor_.close();
  data_.close();
  if (zap_) zap_->remove(zap_domain_);
  struct stat st {};
  if (!ipc_path_.empty() && ::stat(ipc_path_.c_str(), &st) == 0 && st.st_dev == ipc_dev_ &&
      st.st_ino == ipc_ino_) {
    ::unlink(ipc_path_.c_str());
  }
  for (int fd : {kick_[0], kick_[1], epoll_fd_, timer_fd_}) {
    if (fd >= 0) ::close(fd);
  }
  // ctx_ is released after this body; the last holder's release terminates the context,
  // which waits (up to linger) for queued frames and closes every zmq descriptor.
}

std::optional<MonitorEvent> Socket::next_event() {
  zmq::message_t head;
  if (!monitor_.recv(head, zmq::recv_flags::dontwait)) {
    // Drained (the EAGAIN processed its commands, so its descriptor signals anything new).
    monitor_dirty_ = false;
    next_monitor_ms_ = coarse_ms() + kMonitorIntervalMs;
    return std::nullopt;
  }
  // The event's second part (the endpoint) arrives with the first: multipart is atomic.
  while (head.more()) {
    zmq::message_t rest;
    if (!monitor_.recv(rest, zmq::recv_flags::dontwait) || !rest.more()) break;
  }
  MonitorEvent e;
  if (head.size() >= 6) {
    std::memcpy(&e.event, head.data<std::uint8_t>(), 2);
    std::memcpy(&e.value, head.data<std::uint8_t>() + 2, 4);
  }
  return e;
}

void Socket::drain(int fd) noexcept {
  if (fd < 0) return;
  std::uint64_t v = 0;
  while (::read(fd, &v, sizeof v) > 0) {
  }
}

void Socket::kick_other(Side side) noexcept {
  const int other = 1 - side;
  if (!waiting_[other].load()) return;
  kicked_[other] = true;
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto n = ::write(kick_[other], &one, sizeof one);
}

bool Socket::pending(Side side) {
  // Reading ZMQ_EVENTS processes zmq's pending commands, which re-arms ZMQ_FD for the poll.
  const int ev = data_.get(zmq::sockopt::events);
  const int mev = monitor_.get(zmq::sockopt::events);
  if ((mev & ZMQ_POLLIN) != 0) {
    monitor_dirty_ = true;  // its descriptor will not signal what was just processed
    return true;
  }
  return (ev & (side == kRecv ? ZMQ_POLLIN : ZMQ_POLLOUT)) != 0;
}

bool Socket::wait(Side side, Deadline d, Clock::time_point wake) {
  long timeout = d.poll_ms();
  if (wake != Clock::time_point::max()) {
    auto ms = std::chrono::ceil<std::chrono::milliseconds>(wake - Clock::now()).count();
    ms = std::max<decltype(ms)>(ms, 0);
    timeout = timeout < 0 ? static_cast<long>(ms) : std::min<long>(timeout, static_cast<long>(ms));
  }
  // Descriptors only (no zmq sockets): polling a zmq socket would touch its state, which the
  // other thread may be using; ZMQ_FD is a plain descriptor.
  pollfd items[3] = {{data_fd_, POLLIN, 0}, {monitor_fd_, POLLIN, 0}, {kick_[side], POLLIN, 0}};
  // EINTR and errors: the caller's loop retries and rechecks d.
  const int n = ::poll(items, 3, static_cast<int>(std::min<long>(timeout, INT_MAX)));
  return n > 0 && items[1].revents != 0;
}

void Socket::arm_timer(Clock::time_point when) noexcept {
  itimerspec spec{};
  if (when != Clock::time_point::max()) {
    // steady_clock is CLOCK_MONOTONIC on Linux.
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(when.time_since_epoch());
    spec.it_value.tv_sec = static_cast<time_t>(std::max<std::int64_t>(ns.count() / 1000000000, 0));
    spec.it_value.tv_nsec = static_cast<long>(ns.count() % 1000000000);
    if (spec.it_value.tv_sec == 0 && spec.it_value.tv_nsec == 0) spec.it_value.tv_nsec = 1;
  }
  ::timerfd_settime(timer_fd_, TFD_TIMER_ABSTIME, &spec, nullptr);  // also clears expirations
}

Status check_size(const Frame& f, std::size_t max_frame) {
  if (f.payload.size() > max_frame || f.payload.size() > UINT32_MAX) {
    return Error{Errc::frame_too_large, "payload of " + std::to_string(f.payload.size()) +
                                            " bytes exceeds the maximum of " +
                                            std::to_string(max_frame)};
  }
  return {};
}

WireFrame::WireFrame(const Frame& f)
    : head_(kHeaderSize + (f.payload.size() <= kChunkBytes ? f.payload.size() : 0)) {
  const std::size_t n = f.payload.size();
  FrameHeader h = f.header;
  h.length = static_cast<std::uint32_t>(n);
  const bool whole = n <= kChunkBytes;
  encode_header(h, head_.data<std::uint8_t>());
  if (whole) {
    if (n != 0) std::memcpy(head_.data<std::uint8_t>() + kHeaderSize, f.payload.data(), n);
    return;
  }
  chunks_.reserve((n + kChunkBytes - 1) / kChunkBytes);
  for (std::size_t off = 0; off < n; off += kChunkBytes) {
    const std::size_t len = std::min(kChunkBytes, n - off);
    zmq::message_t& c = chunks_.emplace_back(1 + len);
    c.data<std::uint8_t>()[0] = kChunkTag;
    std::memcpy(c.data<std::uint8_t>() + 1, f.payload.data() + off, len);
  }
}

void WireFrame::move_rest(std::deque<zmq::message_t>& to) {
  for (; !done(); advance())
    to.push_back(std::move(next()));
}

bool flush(zmq::socket_t& s, std::deque<zmq::message_t>& queue) {
  while (!queue.empty()) {
    if (!s.send(queue.front(), zmq::send_flags::dontwait)) return false;
    queue.pop_front();
  }
  return true;
}

namespace {
std::uint32_t declared_length(const std::uint8_t* header) noexcept {
  std::uint32_t n = 0;
  std::memcpy(&n, header + 8, sizeof n);  // little-endian on the wire, as on every host we take
  return n;
}
}  // namespace

Status Inbound::take(const zmq::message_t& m, std::size_t limit, Frame& out, bool& complete) {
  complete = false;
  const auto* p = m.data<std::uint8_t>();
  const std::size_t n = m.size();
  if (p[0] == kChunkTag) {
    const std::size_t len = n - 1;
    switch (state_) {
      case State::idle:
        return Error{Errc::malformed_payload, "a chunk outside a chunked frame"};
      case State::skipping:
        left_ -= std::min<std::uint64_t>(left_, len);
        if (left_ == 0) state_ = State::idle;
        return {};
      case State::assembling:
        break;
    }
    if (len > left_) {
      state_ = State::idle;
      buf_ = Bytes();
      return Error{Errc::trailing_bytes, "chunks longer than the frame's declared length of " +
                                             std::to_string(header_.length) + " bytes"};
    }
    buf_.insert(buf_.end(), p + 1, p + n);
    left_ -= len;
    if (left_ != 0) return {};
    out.header = header_;
    out.payload = std::move(buf_);
    buf_ = Bytes();
    state_ = State::idle;
    complete = true;
    return {};
  }
  if (state_ == State::assembling) {
    state_ = State::idle;
    buf_ = Bytes();
    return Error{Errc::malformed_payload,
                 "a new frame began " + std::to_string(left_) +
                     " bytes before the end of the chunked frame in progress"};
  }
  state_ = State::idle;  // a skipped frame ends where the next one starts
  if (n == kHeaderSize) {
    // A bare header: a chunked frame starts, unless its payload is empty. Its length is
    // checked against the limit here, before anything of it is kept.
    auto h = decode_header(ByteView(p, n), limit);
    if (!h) {
      if (h.code() != Errc::bad_magic) {
        state_ = State::skipping;  // its chunks go unread, and unreported
        left_ = declared_length(p);
        if (left_ == 0) state_ = State::idle;
      }
      return std::move(h).error();
    }
    if (h->length != 0) {
      header_ = *h;
      buf_.clear();
      buf_.reserve(h->length);
      left_ = h->length;
      state_ = State::assembling;
      return {};
    }
  }
  auto view = decode_frame(ByteView(p, n), limit);
  if (!view) return std::move(view).error();
  out.header = view->header;
  out.payload.assign(view->payload.begin(), view->payload.end());
  complete = true;
  return {};
}

}  // namespace zmq_detail

using namespace zmq_detail;

struct ZmqChannel::Impl {
  virtual ~Impl() = default;
  virtual Status send_until(const Frame& f, Deadline d) = 0;
  virtual Status recv_until(Frame& out, Deadline d) = 0;
  virtual const Socket& socket() const noexcept = 0;
};

namespace {

Error closed_error(const char* why) {
  return Error{Errc::channel_closed, why};
}

Error multipart_error() {
  return Error{Errc::malformed_payload, "multi-part zmq message; a ferry frame is one part"};
}

// Connect side: a DEALER with one connection; a dropped connection closes the channel.
class DealerChannel final : public ZmqChannel::Impl {
 public:
  explicit DealerChannel(std::unique_ptr<Socket> s) : s_(std::move(s)) {
    // The announcement: lets the bind side learn our routing identity before we send a frame.
    zmq::message_t hello;
    if (!s_->data().send(hello, zmq::send_flags::dontwait)) throw zmq::error_t();
  }

  ~DealerChannel() override {
    // The rest of a committed frame gets the linger time to go out, as zmq's queue does.
    if (backlog_.empty()) return;
    try {
      (void)s_->run(kSend, Deadline::after(s_->linger()), [&]() -> Status {
        pump();
        if (closed_ || flush(s_->data(), backlog_)) return {};
        return Errc::queue_full;
      });
    } catch (const zmq::error_t&) {
    }
  }

  Status send_until(const Frame& f, Deadline d) override {
    if (auto st = check_size(f, s_->max_frame()); !st) return st;
    WireFrame w(f);
    auto st = s_->run(kSend, d, [&]() -> Status {
      if (broken_) return closed_error("the peer sent a malformed frame earlier");
      if (s_->monitor_due(false)) pump();
      if (closed_) return closed_error("peer closed the connection or died");
      if (flush(s_->data(), backlog_)) {
        for (; !w.done(); w.advance()) {
          if (!s_->data().send(w.next(), zmq::send_flags::dontwait)) break;
        }
        if (w.done()) return {};
      }
      // No room: a wait may follow, so the monitor now (a departed peer is not waited for).
      if (s_->monitor_due(true)) pump();
      if (closed_) return closed_error("peer closed the connection or died");
      return Errc::queue_full;
    });
    return committed(std::move(st), w, s_->mutex(), [&] { w.move_rest(backlog_); });
  }

  Status recv_until(Frame& out, Deadline d) override {
    return s_->run(kRecv, d, [&]() -> Status {
      if (broken_) return closed_error("the peer sent a malformed frame earlier");
      if (s_->monitor_due(false)) pump();
      // A committed frame's rest must not wait for the next send (there may be none).
      if (!closed_ && !backlog_.empty()) {
        if (flush(s_->data(), backlog_)) {
          retry_.reset();
        } else {
          s_->wake_at = Clock::now() + retry_.next();
        }
      }
      auto st = read(out);
      if (!not_ready(st)) return st;
      // Nothing queued: the monitor now, and if it says the peer is gone, the data once more,
      // so that frames the peer sent before it went away are delivered before the drop is
      // reported (they are queued before the event that reports it).
      if (!closed_ && s_->monitor_due(true)) {
        pump();
        if (closed_) st = read(out);
      }
      if (!not_ready(st)) return st;
      if (closed_) return closed_error("peer closed the connection or died");
      return Errc::would_block;
    });
  }

  const Socket& socket() const noexcept override { return *s_; }

 private:
  void pump() {
    while (auto e = s_->next_event()) {
      if (e->event == ZMQ_EVENT_DISCONNECTED) closed_ = true;
    }
  }

  // Reads until a whole frame (ok), an error (the stream is broken), or nothing is left
  // (WouldBlock, after a recv that said EAGAIN).
  Status read(Frame& out) {
    for (;;) {
      zmq::message_t m;
      if (!s_->data().recv(m, zmq::recv_flags::dontwait)) return Errc::would_block;
      if (m.more()) {
        while (m.more() && s_->data().recv(m, zmq::recv_flags::dontwait)) {
        }
        broken_ = true;
        return multipart_error();
      }
      if (m.size() == 0) continue;  // the bind side's liveness probe
      bool complete = false;
      auto st = in_.take(m, s_->max_frame(), out, complete);
      if (!st) {
        broken_ = true;  // the stream can no longer be trusted
        return st;
      }
      if (complete) return {};
    }
  }

  std::unique_ptr<Socket> s_;
  Inbound in_;
  std::deque<zmq::message_t> backlog_;  // the rest of a committed frame (see committed())
  Backoff retry_;
  bool closed_ = false;
  bool broken_ = false;
};

// Bind side: a ROUTER that talks to its most recently connected peer. Every peer may send
// frames up to max_frame (there is no admission step on a point-to-point channel).
class RouterChannel final : public ZmqChannel::Impl {
 public:
  explicit RouterChannel(std::unique_ptr<Socket> s)
      : core_(std::move(s), std::numeric_limits<std::size_t>::max(), false) {}

  Status send_until(const Frame& f, Deadline d) override {
    if (auto st = check_size(f, core_.socket().max_frame()); !st) return st;
    WireFrame w(f);
    // A chunked frame's peer, once its first message went: the rest goes there, whoever
    // connects meanwhile. (No copy per frame otherwise: a one-message frame goes whole or not.)
    std::optional<PeerId> to;
    auto sent = core_.socket().run(kSend, d, [&]() -> Status {
      if (broken_) return closed_error("the peer sent a malformed frame earlier");
      if (!current_) {
        // No peer yet: receive until one announces itself, keeping frames for recv.
        Frame tmp;
        for (;;) {
          auto st = step(tmp);
          if (not_ready(st)) break;
          if (!st) return st;
          early_.push_back(std::move(tmp));
        }
      }
      if (closed_) return closed_error("peer closed the connection or died");
      if (!current_) return Error{Errc::queue_full, "no peer has connected yet"};
      const bool first = !w.started();
      auto st = core_.attempt_send(first ? *current_ : *to, w);
      if (first && w.started() && !w.done()) to = current_;
      if (st.code() == Errc::channel_closed) closed_ = true;
      return st;
    });
    return committed(std::move(sent), w, core_.socket().mutex(), [&] { core_.keep_rest(*to, w); });
  }

  Status recv_until(Frame& out, Deadline d) override {
    return core_.socket().run(kRecv, d, [&]() -> Status {
      if (!early_.empty()) {
        out = std::move(early_.front());
        early_.pop_front();
        return {};
      }
      if (broken_) return closed_error("the peer sent a malformed frame earlier");
      auto st = step(out);
      if (st.code() == Errc::would_block && closed_) {
        return closed_error("peer closed the connection or died");
      }
      return st;
    });
  }

  const Socket& socket() const noexcept override { return core_.socket(); }

 private:
  // Receives until a frame (ok) or nothing is left (WouldBlock); tracks the current peer.
  Status step(Frame& out) {
    for (;;) {
      RouterCore::Event ev;
      auto st = core_.attempt_recv(ev, out);
      if (not_ready(st)) return st;
      if (ev.fresh && !closed_) current_ = ev.peer.id;
      if (!st) {
        broken_ = true;
        return st;
      }
      switch (ev.got) {
        case RouterCore::Got::joined:
          continue;
        case RouterCore::Got::departed:
          if (current_ && ev.peer.id == *current_) closed_ = true;
          continue;
        case RouterCore::Got::frame:
          return {};
      }
    }
  }

  RouterCore core_;
  std::optional<PeerId> current_;
  std::deque<Frame> early_;
  bool closed_ = false;
  bool broken_ = false;
};

Status check_scheme(const Endpoint& e) {
  if (e.scheme != Scheme::zmq_ipc && e.scheme != Scheme::zmq_tcp) {
    return Error{Errc::invalid_argument,
                 "'" + e.str() + "' is not a ZeroMQ endpoint (ipc:// or tcp://)"};
  }
  return {};
}

template <class F>
Status guarded(F&& f) {
  try {
    return f();
  } catch (const zmq::error_t& e) {
    return zmq_error("zmq", e);
  }
}

}  // namespace

ZmqChannel::ZmqChannel(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
ZmqChannel::~ZmqChannel() = default;

Result<std::unique_ptr<ZmqChannel>> ZmqChannel::bind(const Endpoint& endpoint,
                                                     const ChannelOptions& options,
                                                     const ZmqOptions& zmq) {
  if (auto st = check_scheme(endpoint); !st) return std::move(st).error();
  auto s = Socket::open(zmq::socket_type::router, endpoint.address, Role::bind, options, zmq);
  if (!s) return std::move(s).error();
  return std::unique_ptr<ZmqChannel>(
      new ZmqChannel(std::make_unique<RouterChannel>(std::move(*s))));
}

Result<std::unique_ptr<ZmqChannel>> ZmqChannel::connect(const Endpoint& endpoint,
                                                        const ChannelOptions& options,
                                                        const ZmqOptions& zmq) {
  if (auto st = check_scheme(endpoint); !st) return std::move(st).error();
  auto s = Socket::open(zmq::socket_type::dealer, endpoint.address, Role::connect, options, zmq);
  if (!s) return std::move(s).error();
  try {
    return std::unique_ptr<ZmqChannel>(
        new ZmqChannel(std::make_unique<DealerChannel>(std::move(*s))));
  } catch (const zmq::error_t& e) {
    return zmq_error("connect " + endpoint.address, e);
  }
}

Status ZmqChannel::send_until(const Frame& f, Deadline d) {
  return guarded([&] { return impl_->send_until(f, d); });
}

Status ZmqChannel::recv_until(Frame& out, Deadline d) {
  return guarded([&] { return impl_->recv_until(out, d); });
}

std::string ZmqChannel::endpoint() const {
  return impl_->socket().endpoint();
}

int ZmqChannel::wait_fd() const noexcept {
  return impl_->socket().wait_fd();
}

Result<ChannelPtr> open_zmq_channel(const Endpoint& endpoint, Role role,
                                    const ChannelOptions& options) {
  return open_zmq_channel(endpoint, role, options, ZmqOptions{});
}

Result<ChannelPtr> open_zmq_channel(const Endpoint& endpoint, Role role,
                                    const ChannelOptions& options, const ZmqOptions& zmq) {
  auto c = role == Role::bind ? ZmqChannel::bind(endpoint, options, zmq)
                              : ZmqChannel::connect(endpoint, options, zmq);
  if (!c) return std::move(c).error();
  return ChannelPtr(std::move(*c));
}

}  // namespace ferry::ipc
