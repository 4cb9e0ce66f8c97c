#include "ferry/ipc/pipe_channel.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <optional>
#include <vector>

#include "fd_limits.hpp"

namespace ferry::ipc {

namespace {

constexpr std::size_t kReadBuffer = 64 * 1024;
constexpr int kPipeSize = 1 << 20;
constexpr std::size_t kSmallFrame = 2048;

// Fallback when no keep-alive reader could be opened: blocks SIGPIPE in this thread for one
// write and swallows a SIGPIPE that write raised. Dispositions are never touched.
class SigpipeGuard {
 public:
  SigpipeGuard() noexcept {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    blocked_ = pthread_sigmask(SIG_BLOCK, &pipe_, &old_) == 0;
    // If SIGPIPE was already blocked, a pending one may be the host's: leave it alone.
    already_blocked_ = sigismember(&old_, SIGPIPE) == 1;
  }
  ~SigpipeGuard() {
    if (!blocked_) return;
    if (raised_ && !already_blocked_) {
      const timespec zero{0, 0};
      while (sigtimedwait(&pipe_, nullptr, &zero) < 0 && errno == EINTR) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  void raised() noexcept { raised_ = true; }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t pipe_{};
  sigset_t old_{};
  bool blocked_ = false;
  bool already_blocked_ = false;
  bool raised_ = false;
};

void set_flag(int fd, bool nonblocking) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return;
  const int want = nonblocking ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (want != flags) ::fcntl(fd, F_SETFL, want);
}

bool is_socket(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

}  // namespace

void PipeEnds::close() noexcept {
  if (read_fd >= 0) ::close(read_fd);
  if (write_fd >= 0 && write_fd != read_fd) ::close(write_fd);
  read_fd = write_fd = -1;
}

PipeChannel::PipeChannel(int read_fd, int write_fd, ChannelOptions opt)
    : read_fd_(read_fd),
      write_fd_(write_fd),
      socket_(is_socket(read_fd) && read_fd == write_fd),
      opt_(opt),
      buf_(kReadBuffer) {
  // Receives block in read(2)/recv(2) (one syscall when the peer is slower than us); try and
  // timed forms poll first. Pipe writes are non-blocking so a full pipe can be waited on
  // with a deadline; sockets take MSG_DONTWAIT per call instead.
  set_flag(read_fd_, false);
  if (!socket_) {
    set_flag(write_fd_, true);
    // Keep a reader on our outgoing pipe so a write can never raise SIGPIPE; a dead peer is
    // seen as hang-up on the incoming pipe instead (see wait_writable).
    keepalive_fd_ = ::open(("/proc/self/fd/" + std::to_string(write_fd_)).c_str(),
                           O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  }
}

PipeChannel::~PipeChannel() {
  if (keepalive_fd_ >= 0) ::close(keepalive_fd_);
  if (read_fd_ >= 0) ::close(read_fd_);
  if (write_fd_ >= 0 && write_fd_ != read_fd_) ::close(write_fd_);
}

Result<std::pair<std::unique_ptr<PipeChannel>, PipeEnds>> PipeChannel::make_pair(
    ChannelOptions opt) {
  int to_child[2];
  int to_parent[2];
  if (::pipe2(to_child, O_CLOEXEC) != 0) return fd_limits::os_error("pipe channel: pipe2", errno);
  if (::pipe2(to_parent, O_CLOEXEC) != 0) {
    const int err = errno;
    ::close(to_child[0]);
    ::close(to_child[1]);
    return fd_limits::os_error("pipe channel: pipe2", err);
  }
  // Bigger pipes let a burst of frames through without waking the reader per 64 KiB.
  ::fcntl(to_child[1], F_SETPIPE_SZ, kPipeSize);
  ::fcntl(to_parent[1], F_SETPIPE_SZ, kPipeSize);
  auto mine = std::make_unique<PipeChannel>(to_parent[0], to_child[1], opt);
  return std::pair{std::move(mine), PipeEnds{to_child[0], to_parent[1]}};
}

std::string PipeChannel::endpoint() const {
  return "pipe:" + std::to_string(read_fd_) + "," + std::to_string(write_fd_);
}

// Waits until the write side can take more, the deadline passes, or the peer is gone (its
// end of the incoming pipe hung up).
Status PipeChannel::wait_writable(Deadline d) {
  for (;;) {
    if (d.is_now()) return Errc::queue_full;
    pollfd p[2] = {{write_fd_, POLLOUT, 0}, {read_fd_, 0, 0}};
    const int n = ::poll(p, socket_ ? 1 : 2, d.poll_ms());
    if (n < 0) {
      if (errno == EINTR) continue;
      return system_error("poll", errno);
    }
    if (n == 0) {
      if (d.expired()) return Errc::timeout;
      continue;
    }
    if ((p[0].revents & (POLLERR | POLLHUP)) != 0 || (p[1].revents & POLLHUP) != 0) {
      closed_ = true;
      return Error{Errc::channel_closed, "the reading process closed the pipe or died"};
    }
    if ((p[0].revents & POLLOUT) != 0) return {};
  }
}

Status PipeChannel::wait_readable(Deadline d) {
  for (;;) {
    pollfd p{read_fd_, POLLIN, 0};
    const int n = ::poll(&p, 1, d.is_now() ? 0 : d.poll_ms());
    if (n > 0) return {};
    if (n == 0) {
      if (d.is_now()) return Errc::would_block;
      if (d.expired()) return Errc::timeout;
      continue;
    }
    if (errno != EINTR) return system_error("poll", errno);
  }
}

Status PipeChannel::write_all(::iovec* iov, int iovcnt, Deadline d) {
  if (closed_) return Error{Errc::channel_closed, "channel was closed"};
  std::optional<SigpipeGuard> guard;
  if (!socket_ && keepalive_fd_ < 0) guard.emplace();
  bool started = false;
  while (iovcnt > 0) {
    ssize_t n;
    if (socket_) {
      msghdr mh{};
      mh.msg_iov = iov;
      mh.msg_iovlen = static_cast<std::size_t>(std::min(iovcnt, IOV_MAX));
      const int flags = MSG_NOSIGNAL | (d.is_never() || started ? 0 : MSG_DONTWAIT);
      n = ::sendmsg(write_fd_, &mh, flags);
    } else {
      n = ::writev(write_fd_, iov, std::min(iovcnt, IOV_MAX));
    }
    if (n >= 0) {
      started = true;
      auto left = static_cast<std::size_t>(n);
      while (iovcnt > 0 && left >= iov->iov_len) {
        left -= iov->iov_len;
        ++iov;
        --iovcnt;
      }
      if (iovcnt > 0 && left > 0) {
        iov->iov_base = static_cast<char*>(iov->iov_base) + left;
        iov->iov_len -= left;
      }
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EPIPE) {
      if (guard) guard->raised();
      closed_ = true;
      return Error{Errc::channel_closed, "the reading process closed the pipe or died"};
    }
    if (errno != EAGAIN) return system_error("write", errno);
    // Full. Nothing written yet: honour the deadline. Part of a frame written: finish it.
    if (auto st = wait_writable(started ? Deadline::never() : d); !st) return st;
  }
  return {};
}

Status PipeChannel::send_until(const Frame& f, Deadline d) {
  if (f.payload.size() > opt_.max_frame) {
    return Error{Errc::frame_too_large, std::to_string(f.payload.size()) +
                                            " payload bytes exceed the maximum of " +
                                            std::to_string(opt_.max_frame)};
  }
  FrameHeader h = f.header;
  h.length = static_cast<std::uint32_t>(f.payload.size());
  // Small frames go out as one contiguous buffer: the kernel's single-segment path is
  // measurably cheaper than a two-segment writev for tiny messages.
  if (f.payload.size() <= kSmallFrame) {
    std::array<std::uint8_t, kHeaderSize + kSmallFrame> buf;
    encode_header(h, buf.data());
    if (!f.payload.empty())
      std::memcpy(buf.data() + kHeaderSize, f.payload.data(), f.payload.size());
    iovec iov{buf.data(), kHeaderSize + f.payload.size()};
    return write_all(&iov, 1, d);
  }
  HeaderBytes hb = encode_header(h);
  iovec iov[2] = {{hb.data(), hb.size()},
                  {const_cast<std::uint8_t*>(f.payload.data()), f.payload.size()}};
  return write_all(iov, 2, d);
}

Status PipeChannel::send_batch(std::span<const Frame> frames, Deadline d) {
  std::vector<HeaderBytes> headers(frames.size());
  std::vector<iovec> iov;
  iov.reserve(frames.size() * 2);
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const Frame& f = frames[i];
    if (f.payload.size() > opt_.max_frame) return Errc::frame_too_large;
    FrameHeader h = f.header;
    h.length = static_cast<std::uint32_t>(f.payload.size());
    headers[i] = encode_header(h);
    iov.push_back({headers[i].data(), kHeaderSize});
    if (!f.payload.empty()) {
      iov.push_back({const_cast<std::uint8_t*>(f.payload.data()), f.payload.size()});
    }
  }
  return write_all(iov.data(), static_cast<int>(iov.size()), d);
}

bool PipeChannel::has_buffered_frame() const noexcept {
  if (end_ - begin_ < kHeaderSize) return false;
  std::uint32_t len;
  std::memcpy(&len, buf_.data() + begin_ + 8, sizeof len);
  return end_ - begin_ >= kHeaderSize + len;
}

ssize_t PipeChannel::read_some(void* into, std::size_t n, Deadline d, Status& st) {
  for (;;) {
    if (!d.is_never()) {
      if (st = wait_readable(d); !st) return -1;
    }
    const ssize_t r = ::read(read_fd_, into, n);
    if (r > 0) return r;
    if (r == 0) {
      closed_ = true;
      st = Error{Errc::channel_closed, "the writing process closed the pipe or died"};
      return -1;
    }
    if (errno == EINTR || errno == EAGAIN) continue;
    st = system_error("read", errno);
    return -1;
  }
}

Status PipeChannel::fill(Deadline d) {
  if (begin_ == end_) {
    begin_ = end_ = 0;
  } else if (end_ == buf_.size()) {
    std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  Status st;
  const ssize_t n = read_some(buf_.data() + end_, buf_.size() - end_, d, st);
  if (n < 0) return st;
  end_ += static_cast<std::size_t>(n);
  return {};
}

Status PipeChannel::recv_until(Frame& out, Deadline d) {
  if (closed_ && begin_ == end_) return Error{Errc::channel_closed, "channel was closed"};
  // Header first: its checks run before the payload is read or room is reserved for it.
  while (end_ - begin_ < kHeaderSize) {
    if (auto st = fill(d); !st) return st;
    // Having started a frame, finish it: a deadline cannot leave half a frame consumed.
    d = Deadline::never();
  }
  auto h = decode_header(ByteView(buf_.data() + begin_, kHeaderSize), opt_.max_frame);
  if (!h) {
    closed_ = true;  // the stream can no longer be trusted
    begin_ = end_ = 0;
    return std::move(h).error();
  }
  begin_ += kHeaderSize;
  out.header = *h;
  out.payload.resize(h->length);
  std::size_t got = std::min<std::size_t>(h->length, end_ - begin_);
  if (got > 0) std::memcpy(out.payload.data(), buf_.data() + begin_, got);
  begin_ += got;
  // A large remainder is read straight into the payload.
  while (got < h->length) {
    Status st;
    const ssize_t n = read_some(out.payload.data() + got, h->length - got, Deadline::never(), st);
    if (n < 0) {
      if (st.code() == Errc::channel_closed) {
        st = Error{Errc::channel_closed, "the writing process died in the middle of a frame"};
      }
      return st;
    }
    got += static_cast<std::size_t>(n);
  }
  return {};
}

}  // namespace ferry::ipc
