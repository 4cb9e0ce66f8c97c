#include "ferry/ipc/pipe_channel.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <vector>

namespace ferry::ipc {

namespace {

constexpr std::size_t kReadBuffer = 64 * 1024;

// Blocks SIGPIPE in this thread for one write and swallows a SIGPIPE the write raised, so a
// dead reader is EPIPE and never kills the host process (whose dispositions we leave alone).
class SigpipeGuard {
 public:
  SigpipeGuard() noexcept {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    blocked_ = pthread_sigmask(SIG_BLOCK, &pipe_, &old_) == 0;
  }
  ~SigpipeGuard() {
    if (!blocked_) return;
    if (raised_ && !was_pending_) {
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
  bool was_pending_ = false;
  bool blocked_ = false;
  bool raised_ = false;
};

// Waits for fd to be ready for `events`; Timeout when the deadline passes first.
Status wait_ready(int fd, short events, Deadline d) {
  for (;;) {
    if (d.is_now()) return Errc::would_block;
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, d.poll_ms());
    if (r > 0) return {};
    if (r == 0) {
      if (d.expired()) return Errc::timeout;
      continue;
    }
    if (errno != EINTR) return system_error("poll", errno);
  }
}

void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

}  // namespace

PipeChannel::PipeChannel(int read_fd, int write_fd, ChannelOptions opt)
    : read_fd_(read_fd), write_fd_(write_fd), opt_(opt), buf_(kReadBuffer) {
  set_nonblocking(read_fd_);
  set_nonblocking(write_fd_);
}

PipeChannel::~PipeChannel() {
  if (read_fd_ >= 0) ::close(read_fd_);
  if (write_fd_ >= 0 && write_fd_ != read_fd_) ::close(write_fd_);
}

Result<std::pair<std::unique_ptr<PipeChannel>, PipeEnds>> PipeChannel::make_pair(
    ChannelOptions opt) {
  int to_child[2];
  int to_parent[2];
  if (::pipe2(to_child, O_CLOEXEC) != 0) return system_error("pipe2", errno);
  if (::pipe2(to_parent, O_CLOEXEC) != 0) {
    const int err = errno;
    ::close(to_child[0]);
    ::close(to_child[1]);
    return system_error("pipe2", err);
  }
  auto mine = std::make_unique<PipeChannel>(to_parent[0], to_child[1], opt);
  return std::pair{std::move(mine), PipeEnds{to_child[0], to_parent[1]}};
}

std::string PipeChannel::endpoint() const {
  return "pipe:" + std::to_string(read_fd_) + "," + std::to_string(write_fd_);
}

Status PipeChannel::write_all(::iovec* iov, int iovcnt, std::size_t total, Deadline d) {
  if (closed_) return Error{Errc::channel_closed, "channel was closed"};
  std::size_t written = 0;
  SigpipeGuard guard;
  while (written < total) {
    const ssize_t n = ::writev(write_fd_, iov, std::min(iovcnt, IOV_MAX));
    if (n > 0) {
      written += static_cast<std::size_t>(n);
      // Advance the iovec array past what was written.
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
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EPIPE) {
      guard.raised();
      closed_ = true;
      return Error{Errc::channel_closed, "the reading process closed the pipe or died"};
    }
    if (n < 0 && errno != EAGAIN) return system_error("writev", errno);
    // Pipe full. Nothing written yet: honour the deadline. Part of a frame written: finish it.
    const Deadline wait = written == 0 ? d : Deadline::never();
    if (auto st = wait_ready(write_fd_, POLLOUT, wait); !st) {
      if (st.code() == Errc::would_block) return Errc::queue_full;
      return st;
    }
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
  const HeaderBytes hb = encode_header(h);
  iovec iov[2] = {{const_cast<std::uint8_t*>(hb.data()), hb.size()},
                  {const_cast<std::uint8_t*>(f.payload.data()), f.payload.size()}};
  return write_all(iov, f.payload.empty() ? 1 : 2, hb.size() + f.payload.size(), d);
}

Status PipeChannel::send_batch(std::span<const Frame> frames, Deadline d) {
  std::vector<HeaderBytes> headers(frames.size());
  std::vector<iovec> iov;
  iov.reserve(frames.size() * 2);
  std::size_t total = 0;
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
    total += kHeaderSize + f.payload.size();
  }
  // writev takes at most IOV_MAX entries; write_all advances through the array.
  iovec* p = iov.data();
  int left = static_cast<int>(iov.size());
  while (left > 0) {
    const int n = std::min(left, IOV_MAX);
    std::size_t bytes = 0;
    for (int i = 0; i < n; ++i)
      bytes += p[i].iov_len;
    if (auto st = write_all(p, n, bytes, d); !st) return st;
    p += n;
    left -= n;
    d = Deadline::never();  // later chunks complete what the first started
  }
  (void)total;
  return {};
}

bool PipeChannel::has_buffered_frame() const noexcept {
  if (end_ - begin_ < kHeaderSize) return false;
  std::uint32_t len;
  std::memcpy(&len, buf_.data() + begin_ + 8, sizeof len);
  return end_ - begin_ >= kHeaderSize + len;
}

Status PipeChannel::fill(Deadline d) {
  if (begin_ == end_) {
    begin_ = end_ = 0;
  } else if (end_ == buf_.size()) {
    std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  for (;;) {
    const ssize_t n = ::read(read_fd_, buf_.data() + end_, buf_.size() - end_);
    if (n > 0) {
      end_ += static_cast<std::size_t>(n);
      return {};
    }
    if (n == 0) {
      closed_ = true;
      return Error{Errc::channel_closed, "the writing process closed the pipe or died"};
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return system_error("read", errno);
    if (auto st = wait_ready(read_fd_, POLLIN, d); !st) return st;
  }
}

Status PipeChannel::recv_until(Frame& out, Deadline d) {
  // Header first: its checks run before the payload is read or room is reserved for it.
  while (end_ - begin_ < kHeaderSize) {
    if (auto st = fill(d); !st) return st;
    // Having started a frame, finish it: a deadline cannot leave half a frame consumed.
    if (end_ - begin_ > 0) d = Deadline::never();
  }
  auto h = decode_header(ByteView(buf_.data() + begin_, kHeaderSize), opt_.max_frame);
  if (!h) {
    closed_ = true;  // the stream can no longer be trusted
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
    const ssize_t n = ::read(read_fd_, out.payload.data() + got, h->length - got);
    if (n > 0) {
      got += static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0) {
      closed_ = true;
      return Error{Errc::channel_closed, "the writing process died in the middle of a frame"};
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return system_error("read", errno);
    if (auto st = wait_ready(read_fd_, POLLIN, Deadline::never()); !st) return st;
  }
  return {};
}

}  // namespace ferry::ipc
