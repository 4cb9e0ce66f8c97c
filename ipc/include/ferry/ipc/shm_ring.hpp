// A lock-free single-producer / single-consumer ring of variable-length records in shared
// memory, and the frame protocol on top of it (what ShmChannel uses in each direction).
//
// Memory: a RingControl (head, tail, two futex words; producer- and consumer-owned fields on
// separate cache lines) followed by `capacity` data bytes (a power of two). head and tail are
// byte counters that only grow; the producer owns head, the consumer owns tail. Records are
// 8-byte aligned: an 8-byte header {size, kind} and the body, never split at the wrap (a pad
// record fills the end instead). Nothing is locked, so a process killed at any instruction
// leaves no lock held; the survivor only ever waits on the other side's counter.
//
// Frames: a frame of up to capacity/4 bytes (20-byte header + payload) is one record; a larger
// one is chunked into first/middle/last records, so frames much larger than the ring go through
// (up to max_frame). A sender whose deadline passes mid-frame writes an abort record (room for
// it is always kept free) and returns Timeout; the receiver drops the partial frame.
//
// Fast path: no syscalls and no allocation. The producer caches tail and the consumer caches
// head, so the other side's cache line is read only when the ring looks full/empty. The
// consumer publishes tail lazily (every capacity/8 bytes, when it has caught up, or before it
// waits), which batches the cache-line transfers when the consumer is behind.
//
// Waiting: spin (with pause) for up to RingOptions::spin (adaptive: shorter while spinning has
// not been paying off), then sleep on the futex word (shared, not FUTEX_PRIVATE) with the
// deadline's remaining time, waking every liveness_period to ask the PeerProbe whether the
// peer died. The other side issues FUTEX_WAKE only when the sleeper flag
// is set, so a busy stream makes no syscalls.
//
// Threading: one thread uses a RingProducer and one thread a RingConsumer at a time; they may
// be in different processes. Ownership: both are non-owning views of memory owned elsewhere
// (a ShmChannel's mapping, or a test's buffer).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>

#include "ferry/ipc/deadline.hpp"
#include "ferry/shared/config.hpp"
#include "ferry/shared/error.hpp"
#include "ferry/shared/frame.hpp"

namespace ferry::ipc {

inline constexpr std::size_t kCacheLine = 64;

struct RingControl {
  // Producer's line: the consumer sleeps on data_seq while the ring is empty.
  alignas(kCacheLine) std::atomic<std::uint64_t> head{0};  // bytes published
  std::atomic<std::uint32_t> data_seq{0};
  std::atomic<std::uint32_t> data_sleeping{0};  // set by the consumer before it sleeps
  // Consumer's line: the producer sleeps on space_seq while the ring is full.
  alignas(kCacheLine) std::atomic<std::uint64_t> tail{0};  // bytes released
  std::atomic<std::uint32_t> space_seq{0};
  std::atomic<std::uint32_t> space_sleeping{0};
  // Read-only after init.
  alignas(kCacheLine) std::uint64_t capacity = 0;
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

// Bytes one ring occupies (control block + data); ring memory must be 64-byte aligned.
constexpr std::size_t ring_footprint(std::size_t capacity) noexcept {
  return sizeof(RingControl) + capacity;
}
// capacity must be a power of two in [4 KiB, 1 GiB].
bool valid_ring_capacity(std::size_t capacity) noexcept;
// Constructs a ring in zeroed or reused memory.
RingControl* init_ring(void* mem, std::size_t capacity) noexcept;
// Wakes whoever sleeps on either side of the ring (after a close flag was set).
void wake_ring(RingControl& ring) noexcept;

// Tells a waiting ring end whether the other side is gone. closed() is called often and must
// be cheap (a flag); dead() may make syscalls and is called about every liveness_period.
class PeerProbe {
 public:
  virtual bool closed() noexcept = 0;
  virtual bool dead() noexcept = 0;

 protected:
  ~PeerProbe() = default;
};

struct RingOptions {
  std::size_t max_frame = kDefaultMaxFrame;
  std::chrono::nanoseconds spin = std::chrono::microseconds(50);
  std::chrono::nanoseconds liveness_period = std::chrono::milliseconds(50);
};

class RingProducer {
 public:
  RingProducer() = default;
  RingProducer(RingControl* ring, const RingOptions& opt) noexcept;

  // Sends one frame (header.length is taken from payload). Errors: FrameTooLarge (payload >
  // max_frame, nothing sent), QueueFull (try form, not enough room for the whole frame),
  // Timeout, ChannelClosed.
  Status send(const FrameHeader& h, ByteView payload, Deadline d, PeerProbe& peer);
  // Sends the frames in order as send() does, publishing them together: one store of head and
  // at most one wake-up instead of one per frame (earlier ones are published if the ring fills
  // up). Stops at the first error; the frames before it are sent.
  Status send_batch(std::span<const Frame> frames, Deadline d, PeerProbe& peer);

  // Zero-copy: room for a frame of `size` payload bytes inside the ring; write into the span,
  // then publish(). size <= max_loan(), else InvalidArgument. Only one loan at a time.
  Result<std::span<std::uint8_t>> loan(std::size_t size, Deadline d, PeerProbe& peer);
  // Publishes the loaned frame with `used` (<= loaned size) payload bytes.
  Status publish(std::size_t used, MessageKind kind, std::uint64_t request_id);
  std::size_t max_loan() const noexcept;
  std::size_t capacity() const noexcept { return cap_; }

 private:
  std::uint8_t* try_reserve(std::size_t body, std::uint32_t kind) noexcept;
  void commit() noexcept;
  void publish_head() noexcept;
  Status wait_space(std::size_t body, Deadline d, PeerProbe& peer);
  Status write_record(std::uint32_t kind, const std::uint8_t* hdr, std::size_t hdr_len,
                      const std::uint8_t* part, std::size_t len, Deadline d, PeerProbe& peer);
  void write_abort() noexcept;

  RingControl* ring_ = nullptr;
  std::uint8_t* data_ = nullptr;
  std::uint64_t cap_ = 0;
  std::uint64_t head_ = 0;            // our head, published on commit
  std::uint64_t published_head_ = 0;  // head as last stored for the consumer
  bool holding_ = false;              // in send_batch: commit() does not publish
  std::uint64_t tail_cache_ = 0;      // last tail we read
  std::uint64_t pending_ = 0;         // bytes of the reserved, unpublished record(s)
  std::uint8_t* loan_body_ = nullptr;
  std::size_t loan_size_ = 0;
  RingOptions opt_;
  std::chrono::nanoseconds spin_{};  // adaptive spin budget (see wait_on)
};

class RingConsumer {
 public:
  RingConsumer() = default;
  RingConsumer(RingControl* ring, const RingOptions& opt) noexcept;

  // Receives one frame into out, reusing out.payload's capacity. The header is checked with
  // decode_header(max_frame) before the payload is read; a malformed stream returns the named
  // error (FrameTooLarge, BadMagic, Truncated, ...) and the ring must not be used again.
  // Timeout in the middle of a chunked frame keeps the part received; the next call resumes.
  Status recv(Frame& out, Deadline d, PeerProbe& peer);

  // Zero-copy: the next frame as a view. A frame that sits in one record (any frame up to
  // capacity/4, and every loaned one) is viewed in place in the ring; a chunked frame is
  // assembled into a buffer owned by the consumer. Valid until release(), which must come
  // before the next recv/recv_view.
  Result<FrameView> recv_view(Deadline d, PeerProbe& peer);
  void release() noexcept;
  bool holding_view() const noexcept { return view_held_; }

 private:
  enum class Peek { record, empty, corrupt };
  Peek peek(std::uint32_t& kind, std::uint32_t& size, const std::uint8_t*& body) noexcept;
  void consume(std::uint32_t size) noexcept;
  void publish_tail() noexcept;
  Status wait_data(Deadline d, PeerProbe& peer);
  Status fail(Error e) noexcept;
  Status next_record(std::uint32_t& kind, std::uint32_t& size, const std::uint8_t*& body,
                     Deadline d, PeerProbe& peer);

  RingControl* ring_ = nullptr;
  const std::uint8_t* data_ = nullptr;
  std::uint64_t cap_ = 0;
  std::uint64_t tail_ = 0;        // our read position
  std::uint64_t published_ = 0;   // tail as last stored for the producer
  std::uint64_t head_cache_ = 0;  // last head we read
  RingOptions opt_;
  std::chrono::nanoseconds spin_{};  // adaptive spin budget (see wait_on)
  // A chunked frame in progress (kept across a Timeout).
  bool in_frame_ = false;
  std::size_t got_ = 0;
  Frame partial_;
  // recv_view state.
  bool view_held_ = false;
  std::uint32_t view_size_ = 0;  // body size of the in-place record; 0 if assembled
  Frame view_buf_;
  bool broken_ = false;
};

}  // namespace ferry::ipc
