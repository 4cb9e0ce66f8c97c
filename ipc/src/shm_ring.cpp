#include "ferry/ipc/shm_ring.hpp"

#include <algorithm>
#include <cstring>
#include <new>
#include <string>
#include <utility>

#include "shm_util.hpp"

namespace ferry::ipc {

namespace {

enum RecordKind : std::uint32_t {
  kPad = 1,
  kWhole = 2,
  kFirst = 3,
  kMiddle = 4,
  kLast = 5,
  kAbort = 6,
};

constexpr std::uint64_t kRecordHeader = 8;
// Always left free by ordinary records, so an abort record can be written without waiting.
constexpr std::uint64_t kAbortReserve = 8;

constexpr std::uint64_t round8(std::uint64_t n) noexcept {
  return (n + 7) & ~std::uint64_t{7};
}
constexpr std::uint64_t record_bytes(std::uint64_t body) noexcept {
  return kRecordHeader + round8(body);
}

void put_header(std::uint8_t* at, std::uint32_t size, std::uint32_t kind) noexcept {
  std::memcpy(at, &size, 4);
  std::memcpy(at + 4, &kind, 4);
}

// The wait every blocking ring call goes through: bounded spin, then futex sleeps of at most
// liveness_period, asking the probe about the peer in between. `ready` must use seq_cst loads:
// it pairs with the other side's seq_cst store + sleeper-flag load (Dekker), so either we see
// its progress or it sees our flag and wakes us.
//
// The spin adapts (`spin` is this ring end's current budget, at most RingOptions::spin): a
// wait that ended within RingOptions::spin doubles it, one that lasted longer halves it. When
// both ends share one core, spinning only delays the peer it waits for (measured: shm apply
// p50 125 us with a fixed 50 us spin, 37 us with 5 us), so there it shrinks to kMinSpin; on
// free cores answers come within the spin and it stays at the maximum.
template <class Ready>
Status wait_on(std::atomic<std::uint32_t>& seq, std::atomic<std::uint32_t>& sleeping, Ready&& ready,
               Deadline d, PeerProbe& peer, const RingOptions& o, std::chrono::nanoseconds& spin) {
  if (ready()) return {};
  if (peer.closed()) return ready() ? Status{} : Status{Errc::channel_closed};
  if (d.is_now()) return Errc::would_block;
  constexpr std::chrono::nanoseconds kMinSpin = std::chrono::microseconds(1);
  const auto floor = std::min(o.spin, kMinSpin);
  const auto grow = [&] { spin = std::min(o.spin, std::max(2 * spin, floor)); };
  const auto t0 = Clock::now();
  if (shm_detail::spin_until(ready, spin, d)) {
    grow();
    return {};
  }
  auto last_check = Clock::now() - o.liveness_period;
  Status result;
  for (;;) {
    sleeping.store(1, std::memory_order_seq_cst);
    const std::uint32_t s = seq.load(std::memory_order_seq_cst);
    if (ready()) break;
    if (peer.closed()) {
      if (!ready()) result = Errc::channel_closed;
      break;
    }
    const auto now = Clock::now();
    if (now - last_check >= o.liveness_period) {
      last_check = now;
      if (peer.dead()) {
        if (!ready()) result = Errc::channel_closed;
        break;
      }
    }
    if (!d.is_never() && now >= d.when()) {
      if (!ready()) result = Errc::timeout;
      break;
    }
    os::futex_wait(seq, s, d, o.liveness_period);
  }
  sleeping.store(0, std::memory_order_seq_cst);
  if (result) {
    if (Clock::now() - t0 <= o.spin) {
      grow();
    } else {
      spin = std::max(spin / 2, floor);
    }
  }
  return result;
}

}  // namespace

bool valid_ring_capacity(std::size_t capacity) noexcept {
  return capacity >= 4096 && capacity <= (std::size_t{1} << 30) && (capacity & (capacity - 1)) == 0;
}

RingControl* init_ring(void* mem, std::size_t capacity) noexcept {
  auto* r = new (mem) RingControl{};
  r->capacity = capacity;
  return r;
}

void wake_ring(RingControl& ring) noexcept {
  os::bump_and_wake(ring.data_seq, 1);
  os::bump_and_wake(ring.space_seq, 1);
}

// ---------------------------------------------------------------------------------------------
// Producer

RingProducer::RingProducer(RingControl* ring, const RingOptions& opt) noexcept
    : ring_(ring),
      data_(reinterpret_cast<std::uint8_t*>(ring) + sizeof(RingControl)),
      cap_(ring->capacity),
      head_(ring->head.load(std::memory_order_acquire)),
      published_head_(head_),
      tail_cache_(ring->tail.load(std::memory_order_acquire)),
      opt_(opt),
      spin_(opt.spin) {}

std::size_t RingProducer::max_loan() const noexcept {
  return static_cast<std::size_t>(cap_ / 2 - kRecordHeader - kHeaderSize);
}

std::uint8_t* RingProducer::try_reserve(std::size_t body, std::uint32_t kind) noexcept {
  const std::uint64_t rec = record_bytes(body);
  std::uint64_t pos = head_ & (cap_ - 1);
  const std::uint64_t to_end = cap_ - pos;
  const std::uint64_t pad = rec > to_end ? to_end : 0;
  const std::uint64_t keep = kind == kAbort ? 0 : kAbortReserve;
  const std::uint64_t need = pad + rec + keep;
  if (cap_ - (head_ - tail_cache_) < need) {
    tail_cache_ = ring_->tail.load(std::memory_order_acquire);
    if (cap_ - (head_ - tail_cache_) < need) return nullptr;
  }
  if (pad != 0) {
    put_header(data_ + pos, static_cast<std::uint32_t>(pad - kRecordHeader), kPad);
    pos = 0;
  }
  put_header(data_ + pos, static_cast<std::uint32_t>(body), kind);
  pending_ = pad + rec;
  return data_ + pos + kRecordHeader;
}

void RingProducer::commit() noexcept {
  head_ += pending_;
  pending_ = 0;
  if (!holding_) publish_head();
}

void RingProducer::publish_head() noexcept {
  if (published_head_ == head_) return;
  published_head_ = head_;
  // seq_cst store, then the flag load: pairs with the consumer's flag store + head load.
  ring_->head.store(head_, std::memory_order_seq_cst);
  if (ring_->data_sleeping.load(std::memory_order_seq_cst) != 0) {
    os::bump_and_wake(ring_->data_seq, 1);
  }
}

Status RingProducer::wait_space(std::size_t body, Deadline d, PeerProbe& peer) {
  const std::uint64_t rec = record_bytes(body);
  auto ready = [&] {
    tail_cache_ = ring_->tail.load(std::memory_order_seq_cst);
    const std::uint64_t to_end = cap_ - (head_ & (cap_ - 1));
    const std::uint64_t need = (rec > to_end ? to_end : 0) + rec + kAbortReserve;
    return cap_ - (head_ - tail_cache_) >= need;
  };
  // Frames held back by send_batch must be visible before we wait for the consumer to make
  // room, or it would wait for them while we wait for it.
  publish_head();
  return wait_on(ring_->space_seq, ring_->space_sleeping, ready, d, peer, opt_, spin_);
}

Status RingProducer::write_record(std::uint32_t kind, const std::uint8_t* hdr, std::size_t hdr_len,
                                  const std::uint8_t* part, std::size_t len, Deadline d,
                                  PeerProbe& peer) {
  const std::size_t body_len = hdr_len + len;
  std::uint8_t* body = try_reserve(body_len, kind);
  if (body == nullptr) {
    if (auto st = wait_space(body_len, d, peer); !st) return st;
    body = try_reserve(body_len, kind);
    if (body == nullptr) return Error{Errc::system_error, "ring space vanished"};
  }
  if (hdr_len != 0) std::memcpy(body, hdr, hdr_len);
  if (len != 0) std::memcpy(body + hdr_len, part, len);
  commit();
  return {};
}

void RingProducer::write_abort() noexcept {
  // kAbortReserve bytes are always free after an ordinary record, and an 8-byte record never
  // needs a pad (the room to the end is a non-zero multiple of 8), so this cannot fail.
  if (try_reserve(0, kAbort) != nullptr) commit();
}

Status RingProducer::send(const FrameHeader& h, ByteView payload, Deadline d, PeerProbe& peer) {
  if (loan_body_ != nullptr) return Error{Errc::invalid_argument, "publish() the loan first"};
  const std::size_t n = payload.size();
  if (n > opt_.max_frame) {
    return Error{Errc::frame_too_large, "payload of " + std::to_string(n) +
                                            " bytes exceeds the maximum frame of " +
                                            std::to_string(opt_.max_frame)};
  }
  if (peer.closed()) return Errc::channel_closed;
  FrameHeader hh = h;
  hh.length = static_cast<std::uint32_t>(n);
  std::uint8_t hb[kHeaderSize];
  encode_header(hh, hb);

  const std::uint64_t total = kHeaderSize + n;
  const std::uint64_t chunk = cap_ / 4 - kRecordHeader;  // body bytes per record
  if (total <= chunk) {
    auto st = write_record(kWhole, hb, kHeaderSize, payload.data(), n, d, peer);
    if (st.code() == Errc::would_block) return Errc::queue_full;
    return st;
  }
  if (d.is_now()) {
    // The try form sends a chunked frame only if all of it fits now (one pad at most).
    const std::uint64_t chunks = (total + chunk - 1) / chunk;
    const std::uint64_t bound = total + chunks * (kRecordHeader + 8) + cap_ / 4 + kAbortReserve;
    tail_cache_ = ring_->tail.load(std::memory_order_acquire);
    if (cap_ - (head_ - tail_cache_) < bound) return Errc::queue_full;
  }
  std::size_t off = 0;
  bool first = true;
  while (first || off < n) {
    const std::size_t room = static_cast<std::size_t>(chunk) - (first ? kHeaderSize : 0);
    const std::size_t len = std::min(room, n - off);
    const bool last = off + len == n;
    const std::uint32_t kind = first ? kFirst : (last ? kLast : kMiddle);
    auto st = write_record(kind, first ? hb : nullptr, first ? kHeaderSize : 0,
                           payload.data() + off, len, d, peer);
    if (!st) {
      if (!first) write_abort();
      if (st.code() == Errc::would_block) return Errc::queue_full;
      return st;
    }
    off += len;
    first = false;
  }
  return {};
}

Status RingProducer::send_batch(std::span<const Frame> frames, Deadline d, PeerProbe& peer) {
  // One head store and at most one wake-up for the lot (the consumer sees them together).
  holding_ = true;
  Status st;
  for (const Frame& f : frames) {
    st = send(f.header, f.payload, d, peer);
    if (!st) break;
  }
  holding_ = false;
  publish_head();
  return st;
}

Result<std::span<std::uint8_t>> RingProducer::loan(std::size_t size, Deadline d, PeerProbe& peer) {
  if (loan_body_ != nullptr) return Error{Errc::invalid_argument, "a loan is already out"};
  if (size > max_loan()) {
    return Error{Errc::invalid_argument,
                 "loan of " + std::to_string(size) +
                     " bytes exceeds max_loan() = " + std::to_string(max_loan())};
  }
  if (size > opt_.max_frame) return Error{Errc::frame_too_large, "loan exceeds the max frame"};
  if (peer.closed()) return Errc::channel_closed;
  const std::size_t body_len = kHeaderSize + size;
  std::uint8_t* body = try_reserve(body_len, kWhole);
  if (body == nullptr) {
    if (auto st = wait_space(body_len, d, peer); !st) {
      if (st.code() == Errc::would_block) return Errc::queue_full;
      return std::move(st).error();
    }
    body = try_reserve(body_len, kWhole);
    if (body == nullptr) return Error{Errc::system_error, "ring space vanished"};
  }
  loan_body_ = body;
  loan_size_ = size;
  return std::span<std::uint8_t>(body + kHeaderSize, size);
}

Status RingProducer::publish(std::size_t used, MessageKind kind, std::uint64_t request_id) {
  if (loan_body_ == nullptr) return Error{Errc::invalid_argument, "no loan to publish"};
  if (used > loan_size_) return Error{Errc::invalid_argument, "published more than was loaned"};
  FrameHeader h;
  h.kind = kind;
  h.length = static_cast<std::uint32_t>(used);
  h.request_id = request_id;
  encode_header(h, loan_body_);
  put_header(loan_body_ - kRecordHeader, static_cast<std::uint32_t>(kHeaderSize + used), kWhole);
  pending_ -= record_bytes(kHeaderSize + loan_size_) - record_bytes(kHeaderSize + used);
  loan_body_ = nullptr;
  loan_size_ = 0;
  commit();
  return {};
}

// ---------------------------------------------------------------------------------------------
// Consumer

RingConsumer::RingConsumer(RingControl* ring, const RingOptions& opt) noexcept
    : ring_(ring),
      data_(reinterpret_cast<const std::uint8_t*>(ring) + sizeof(RingControl)),
      cap_(ring->capacity),
      tail_(ring->tail.load(std::memory_order_acquire)),
      published_(tail_),
      head_cache_(tail_),
      opt_(opt),
      spin_(opt.spin) {}

RingConsumer::Peek RingConsumer::peek(std::uint32_t& kind, std::uint32_t& size,
                                      const std::uint8_t*& body) noexcept {
  for (;;) {
    if (head_cache_ == tail_) {
      head_cache_ = ring_->head.load(std::memory_order_acquire);
      if (head_cache_ == tail_) return Peek::empty;
    }
    // The producer is another process: check everything it wrote before trusting it.
    const std::uint64_t avail = head_cache_ - tail_;
    if (avail > cap_ || avail < kRecordHeader) return Peek::corrupt;
    const std::uint64_t pos = tail_ & (cap_ - 1);
    const std::uint64_t to_end = cap_ - pos;
    std::memcpy(&size, data_ + pos, 4);
    std::memcpy(&kind, data_ + pos + 4, 4);
    const std::uint64_t rec = record_bytes(size);
    if (size > cap_ || rec > to_end || rec > avail) return Peek::corrupt;
    if (kind == kPad) {
      consume(size);
      continue;
    }
    body = data_ + pos + kRecordHeader;
    return Peek::record;
  }
}

void RingConsumer::consume(std::uint32_t size) noexcept {
  tail_ += record_bytes(size);
  if (tail_ - published_ >= cap_ / 8 || tail_ == head_cache_) publish_tail();
}

void RingConsumer::publish_tail() noexcept {
  published_ = tail_;
  ring_->tail.store(tail_, std::memory_order_seq_cst);
  if (ring_->space_sleeping.load(std::memory_order_seq_cst) != 0) {
    os::bump_and_wake(ring_->space_seq, 1);
  }
}

Status RingConsumer::wait_data(Deadline d, PeerProbe& peer) {
  if (published_ != tail_) publish_tail();
  auto ready = [&] { return ring_->head.load(std::memory_order_seq_cst) != tail_; };
  return wait_on(ring_->data_seq, ring_->data_sleeping, ready, d, peer, opt_, spin_);
}

Status RingConsumer::fail(Error e) noexcept {
  broken_ = true;
  in_frame_ = false;
  return e;
}

Status RingConsumer::next_record(std::uint32_t& kind, std::uint32_t& size,
                                 const std::uint8_t*& body, Deadline d, PeerProbe& peer) {
  for (;;) {
    switch (peek(kind, size, body)) {
      case Peek::record:
        return {};
      case Peek::corrupt:
        return fail(Error{Errc::malformed_payload, "corrupt record in the shared-memory ring"});
      case Peek::empty:
        break;
    }
    if (auto st = wait_data(d, peer); !st) return st;
  }
}

Status RingConsumer::recv(Frame& out, Deadline d, PeerProbe& peer) {
  if (broken_) return Errc::channel_closed;
  if (view_held_) return Error{Errc::invalid_argument, "release() the view first"};
  if (in_frame_) std::swap(out, partial_);
  for (;;) {
    std::uint32_t kind = 0, size = 0;
    const std::uint8_t* body = nullptr;
    if (auto st = next_record(kind, size, body, d, peer); !st) {
      if (in_frame_) std::swap(out, partial_);
      return st;
    }
    switch (kind) {
      case kWhole:
      case kFirst: {
        if (in_frame_) return fail(Error{Errc::malformed_payload, "new frame inside a frame"});
        if (size < kHeaderSize) return fail(Error{Errc::truncated, "record shorter than a header"});
        auto h = decode_header(ByteView(body, kHeaderSize), opt_.max_frame);
        if (!h) return fail(std::move(h).error());
        const std::size_t part = size - kHeaderSize;
        if (part > h->length) {
          return fail(Error{Errc::trailing_bytes, "record longer than its frame's length"});
        }
        if (kind == kWhole && part != h->length) {
          return fail(Error{Errc::truncated, "frame shorter than its declared length"});
        }
        out.header = *h;
        out.payload.resize(h->length);
        if (part != 0) std::memcpy(out.payload.data(), body + kHeaderSize, part);
        consume(size);
        if (kind == kWhole) return {};
        in_frame_ = true;
        got_ = part;
        break;
      }
      case kMiddle:
      case kLast: {
        if (!in_frame_) return fail(Error{Errc::malformed_payload, "chunk outside a frame"});
        if (got_ + size > out.payload.size()) {
          return fail(Error{Errc::trailing_bytes, "chunks longer than the frame's length"});
        }
        if (size != 0) std::memcpy(out.payload.data() + got_, body, size);
        got_ += size;
        consume(size);
        if (kind == kLast) {
          in_frame_ = false;
          if (got_ != out.payload.size()) {
            return fail(Error{Errc::truncated, "frame shorter than its declared length"});
          }
          return {};
        }
        break;
      }
      case kAbort:
        in_frame_ = false;  // the sender gave up on this frame
        consume(size);
        break;
      default:
        return fail(Error{Errc::malformed_payload, "unknown ring record kind"});
    }
  }
}

Result<FrameView> RingConsumer::recv_view(Deadline d, PeerProbe& peer) {
  if (broken_) return Errc::channel_closed;
  if (view_held_) return Error{Errc::invalid_argument, "release() the view first"};
  while (!in_frame_) {
    std::uint32_t kind = 0, size = 0;
    const std::uint8_t* body = nullptr;
    if (auto st = next_record(kind, size, body, d, peer); !st) return std::move(st).error();
    if (kind == kAbort) {
      consume(size);
      continue;
    }
    if (kind != kWhole) break;  // chunked: assemble below
    if (size < kHeaderSize)
      return fail(Error{Errc::truncated, "record shorter than a header"}).error();
    auto h = decode_header(ByteView(body, kHeaderSize), opt_.max_frame);
    if (!h) return fail(std::move(h).error()).error();
    if (size - kHeaderSize != h->length) {
      return fail(Error{Errc::truncated, "frame length does not match its record"}).error();
    }
    view_held_ = true;
    view_size_ = size;
    return FrameView{*h, ByteView(body + kHeaderSize, h->length)};
  }
  if (auto st = recv(view_buf_, d, peer); !st) return std::move(st).error();
  view_held_ = true;
  view_size_ = 0;
  return FrameView{view_buf_.header, ByteView(view_buf_.payload)};
}

void RingConsumer::release() noexcept {
  if (!view_held_) return;
  view_held_ = false;
  if (view_size_ != 0) consume(view_size_);
  view_size_ = 0;
}

}  // namespace ferry::ipc
