// Typed channels users see: values of T serialized with cereal over a byte-frame Channel.
//
//   ferry::Channel<T>  any endpoint (pipe:, shm://, ipc://, tcp://)
//   ferry::Pipe<T>     a duplex pair between a parent and the children it spawns
//   ferry::Queue<T>    many producers and consumers on one host, in shared memory
//                      (its contract is in queue.hpp; the rest of this comment is about the
//                      other two)
//
// A handle serializes as its endpoint string, so it can be passed to a task as an argument;
// the receiving process opens it (as the connecting side) when it is loaded.
// Errors: send/recv return ferry::Status / ferry::Result<T> (Timeout, WouldBlock, QueueFull,
// ChannelClosed, or the decoding error of a value that does not decode as T).
//
// Threading: like Channel — one sender and one receiver thread at a time.
// Ownership: a handle owns its channel; move-only.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cereal/types/string.hpp>
#include <cerrno>
#include <memory>
#include <string>
#include <utility>

#include "ferry/ipc/factory.hpp"
#include "ferry/ipc/pipe_channel.hpp"
#include "ferry/ipc/queue.hpp"
#include "ferry/shared/codec.hpp"

namespace ferry {

template <class T>
class Channel {
 public:
  Channel() = default;
  explicit Channel(ipc::ChannelPtr ch) : ch_(std::move(ch)) {}

  static Result<Channel> open(std::string_view endpoint, ipc::Role role,
                              ipc::ChannelOptions opt = {}) {
    auto ch = ipc::open_channel(endpoint, role, opt);
    if (!ch) return std::move(ch).error();
    return Channel(std::move(*ch));
  }

  bool is_open() const noexcept { return ch_ != nullptr; }
  std::string endpoint() const { return ch_ ? ch_->endpoint() : endpoint_; }
  ipc::Channel& raw() noexcept { return *ch_; }

  Status send_until(const T& value, ipc::Deadline d) {
    if (auto st = ensure_open(); !st) return st;
    out_.header = FrameHeader{};
    out_.header.kind = MessageKind::data;
    out_.payload.clear();
    encode_into(out_.payload, value);
    return ch_->send_until(out_, d);
  }
  Result<T> recv_until(ipc::Deadline d) {
    if (auto st = ensure_open(); !st) return std::move(st).error();
    if (auto st = ch_->recv_until(in_, d); !st) return std::move(st).error();
    if (in_.header.kind != MessageKind::data) {
      return Error{Errc::bad_kind,
                   "expected a Data frame, got " + std::string(kind_name(in_.header.kind))};
    }
    return decode_value<T>(in_.payload);
  }

  Status send(const T& v) { return send_until(v, ipc::Deadline::never()); }
  Status try_send(const T& v) { return send_until(v, ipc::Deadline::now()); }
  template <class Rep, class Period>
  Status send_for(const T& v, std::chrono::duration<Rep, Period> d) {
    return send_until(v, ipc::Deadline::after(d));
  }
  Result<T> recv() { return recv_until(ipc::Deadline::never()); }
  Result<T> try_recv() { return recv_until(ipc::Deadline::now()); }
  template <class Rep, class Period>
  Result<T> recv_for(std::chrono::duration<Rep, Period> d) {
    return recv_until(ipc::Deadline::after(d));
  }

  // Serialized as the endpoint; loading remembers it and opens on first use (connect side).
  template <class A>
  void save(A& ar) const {
    ar(endpoint());
  }
  template <class A>
  void load(A& ar) {
    ar(endpoint_);
    ch_.reset();
  }

 private:
  Status ensure_open() {
    if (ch_) return {};
    if (endpoint_.empty()) return Error{Errc::invalid_argument, "channel handle is empty"};
    auto ch = ipc::open_channel(endpoint_, ipc::Role::connect);
    if (!ch) return std::move(ch).error();
    ch_ = std::move(*ch);
    return {};
  }

  ipc::ChannelPtr ch_;
  std::string endpoint_;
  Frame out_;
  Frame in_;
};

// A duplex pipe between a parent and a child it spawns (multiprocessing.Pipe).
template <class T>
struct Pipe {
  static constexpr int kChildFdFloor = 64;

  Channel<T> parent;      // used in this process
  std::string child_end;  // endpoint for the child: "pipe:R,W", descriptors inherited

  // Makes the pair. The child's descriptors are left inheritable so that a child started
  // with posix_spawn/exec sees them at the same numbers; close_child_end() after spawning.
  // They are moved to kChildFdFloor or above: spawners dup2 their own descriptors onto low
  // fixed numbers (a Pool's pipe transport gives each worker its channel at 3 and 4), which
  // would silently replace a child end that happened to sit there.
  static Result<Pipe> create(ipc::ChannelOptions opt = {}) {
    auto pair = ipc::PipeChannel::make_pair(opt);
    if (!pair) return std::move(pair).error();
    auto& [mine, ends] = *pair;
    for (int* fd : {&ends.read_fd, &ends.write_fd}) {
      const int high = ::fcntl(*fd, F_DUPFD, kChildFdFloor);  // the copy is not close-on-exec
      if (high < 0) {
        const int err = errno;
        ends.close();
        return system_error("fcntl(F_DUPFD)", err);
      }
      ::close(*fd);
      *fd = high;
    }
    Pipe p;
    p.parent = Channel<T>(std::move(mine));
    p.child_end = "pipe:" + std::to_string(ends.read_fd) + "," + std::to_string(ends.write_fd);
    p.ends_ = ends;
    return p;
  }
  // Closes this process's copies of the child's descriptors (call once the child started).
  void close_child_end() noexcept { ends_.close(); }
  Pipe() = default;
  Pipe(Pipe&& o) noexcept
      : parent(std::move(o.parent)), child_end(std::move(o.child_end)), ends_(o.ends_) {
    o.ends_ = {};
  }
  Pipe& operator=(Pipe&& o) noexcept {
    if (this != &o) {
      close_child_end();
      parent = std::move(o.parent);
      child_end = std::move(o.child_end);
      ends_ = std::exchange(o.ends_, {});
    }
    return *this;
  }
  ~Pipe() { close_child_end(); }

 private:
  ipc::PipeEnds ends_;
};

}  // namespace ferry
