// ShmChannel: a Channel over two lock-free SPSC rings (one per direction, see shm_ring.hpp)
// in one shared-memory segment, /dev/shm/ferry.<session>.<NAME>.
//
//   auto a = ShmChannel::create("job7");           // one side: makes the segment
//   child gets a->endpoint()  == "shm://ferry.<session>.job7"
//   auto b = ShmChannel::open(endpoint);           // the other side: maps it
//
// Lifetime of the name: the creator owns the segment. As soon as it sees that the opener has
// attached (on its next call, or in wait_for_peer()), it unlinks the name: both sides keep
// their mappings, and from then on nothing is left in /dev/shm even if either side is
// SIGKILLed. The destructor unlinks in any case. What remains is a creator killed before the
// peer attached; its name carries the coordinator's session, so sweep_stale_shm() removes it
// at the next start. The opener never unlinks and does not mind the name being gone after it
// mapped the segment. Only one opener can attach.
//
// Peer death: each side records its pid and start time in the segment. A waiting call wakes
// every 50 ms to check the other side with a pidfd (a zombie counts as dead), so a SIGKILLed
// peer is reported as ChannelClosed well within a second. Frames already in the ring are still
// delivered first. A send to a dead peer can succeed until the ring is full. close() (and the
// destructor) set a closed flag and wake the peer, whose recv drains and then gets
// ChannelClosed.
//
// Space: create() reserves the whole segment (both rings) in /dev/shm at once, so a full
// /dev/shm is Errc::no_space from create(), naming the segment and its size, never a SIGBUS
// later; the memory is committed from then on. (ShmQueue and the sync primitives do the same.)
// prepare() + Pending::finish() are create() in two steps, for a creator that starts the
// opener's process in between: the name exists (and only its header page is reserved) after
// prepare(); finish() reserves the rest, with the same NoSpace. An opener that comes before
// finish() waits for it without touching the rings; if the creator gives up (a failed
// finish(), the Pending dropped) or dies, open() fails and the name is gone.
//
// Large frames: up to max_frame (default 64 MiB) regardless of ring size; bigger than a
// quarter of the ring they are streamed through it in chunks (the try form then refuses with
// QueueFull unless the whole frame fits at once).
//
// Zero copy: loan(n) returns n writable bytes inside the ring (n <= max_loan(), about half the
// ring); write the payload there and publish(used, kind, id) it. On the other side
// recv_view() returns the frame as a view into the ring (a chunked frame is assembled into a
// buffer the channel owns); it stays valid until release(), which must precede the next recv.
//
// Threading: one sending thread (send*, loan, publish) and one receiving thread (recv*,
// recv_view, release) at a time, as for every Channel; close() may be called from any thread.
// A channel belongs to the process that created/opened it (its pid is the liveness key).
// Ownership: move-only via unique_ptr; owns its mapping and pidfd; the creator owns the name.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "ferry/ipc/channel.hpp"

namespace ferry::ipc {

struct ShmOptions {
  std::size_t ring_bytes = std::size_t{1} << 20;  // per direction; power of two, 4 KiB..1 GiB
  std::size_t max_frame = kDefaultMaxFrame;       // larger incoming frames: FrameTooLarge
  // Longest spin before sleeping; each ring end shortens it while spinning does not pay off.
  std::chrono::nanoseconds spin = std::chrono::microseconds(50);
  bool unlink_when_attached = true;  // creator unlinks the name once the peer has mapped it
};

class ShmChannel final : public Channel {
 public:
  class Pending;

  // Creates ferry.<session>.<name> (AlreadyExists if present). ring_bytes applies here; the
  // opener takes the sizes from the segment.
  static Result<std::unique_ptr<ShmChannel>> create(std::string_view name,
                                                    const ShmOptions& opt = {});
  // create()'s first step (see above): the segment is named and sized, its rings not reserved.
  static Result<Pending> prepare(std::string_view name, const ShmOptions& opt = {});
  // Opens "shm://<full segment name>" or a bare NAME of the current session. A channel still
  // being made (between prepare() and finish()) is waited for, at most kMakingWait; its
  // creator giving up or dying meanwhile is ChannelClosed.
  static Result<std::unique_ptr<ShmChannel>> open(std::string_view name_or_endpoint,
                                                  const ShmOptions& opt = {});
  static constexpr std::chrono::seconds kMakingWait{10};
  ~ShmChannel() override;

  Status send_until(const Frame& f, Deadline d) override;
  Status recv_until(Frame& out, Deadline d) override;
  // One publish and at most one wake-up of the peer for all the frames.
  Status send_batch(std::span<const Frame> frames, Deadline d) override;
  std::string endpoint() const override;  // "shm://ferry.<session>.<name>"

  // Creator: waits until the opener has attached (and unlinks the name, see above).
  Status wait_for_peer(Deadline d);
  // Orderly close: the peer drains what was sent, then gets ChannelClosed. Idempotent.
  void close() noexcept;

  Result<std::span<std::uint8_t>> loan(std::size_t size, Deadline d = Deadline::never());
  Status publish(std::size_t used, MessageKind kind = MessageKind::data,
                 std::uint64_t request_id = 0);
  std::size_t max_loan() const noexcept;

  Result<FrameView> recv_view_until(Deadline d);
  Result<FrameView> try_recv_view() { return recv_view_until(Deadline::now()); }
  Result<FrameView> recv_view() { return recv_view_until(Deadline::never()); }
  template <class Rep, class Period>
  Result<FrameView> recv_view_for(std::chrono::duration<Rep, Period> d) {
    return recv_view_until(Deadline::after(d));
  }
  void release() noexcept;

  const std::string& segment_name() const noexcept;
  bool is_creator() const noexcept;
  // True if p points into this channel's mapping (lets tests check that a view is zero-copy).
  bool in_segment(const void* p) const noexcept;

  struct Impl;

 private:
  explicit ShmChannel(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

// A channel between prepare() and finish(). Move-only; owns the name until finish().
class ShmChannel::Pending {
 public:
  Pending(Pending&&) noexcept;
  Pending& operator=(Pending&&) noexcept;
  // Not finished: the name is removed and an opener waiting for it gets ChannelClosed.
  ~Pending();

  std::string endpoint() const;  // what the opener is given, as ShmChannel::endpoint()
  // Reserves the rings and returns the channel. NoSpace as create(); on any failure the name
  // is removed and a waiting opener told. Call once.
  Result<std::unique_ptr<ShmChannel>> finish();

 private:
  friend class ShmChannel;
  Pending(std::unique_ptr<Impl> impl, const ShmOptions& opt) noexcept;
  void abandon() noexcept;
  std::unique_ptr<Impl> impl_;
  ShmOptions opt_;
};

}  // namespace ferry::ipc
