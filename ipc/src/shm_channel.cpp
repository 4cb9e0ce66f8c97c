#include "ferry/ipc/shm_channel.hpp"

#include <unistd.h>

#include <climits>
#include <new>
#include <utility>

#include "ferry/ipc/shm_ring.hpp"
#include "shm_util.hpp"

namespace ferry::ipc {

namespace {

constexpr std::uint64_t kChannelMagic = 0x314e4843594d4853ULL;  // "SHMYCHN1"
constexpr std::uint32_t kChannelVersion = 2;                    // 2: SegHeader::made
constexpr std::size_t kHeaderBytes = 256;

// SegHeader::made: the rings are reserved and initialised (or the creator gave up).
constexpr std::uint32_t kMaking = 0, kMade = 1, kAbandoned = 2;

// The segment: this header, then ring 0 (creator -> opener), then ring 1 (opener -> creator).
struct SegHeader {
  std::atomic<std::uint64_t> magic;  // stored once the fields below it are (rings: see made)
  std::uint32_t version;
  std::uint32_t header_bytes;
  std::uint64_t ring_bytes;
  std::uint64_t total_bytes;
  std::atomic<std::int32_t> pid[2];  // [0] creator, [1] opener
  std::atomic<std::uint64_t> start_ticks[2];
  std::atomic<std::uint32_t> closed[2];
  std::atomic<std::uint32_t> attached;  // futex word: 1 once the opener has mapped the segment
  std::atomic<std::uint32_t> made;      // futex word: kMaking, kMade or kAbandoned
};
static_assert(sizeof(SegHeader) <= kHeaderBytes);

constexpr std::size_t ring_offset(int which, std::size_t ring_bytes) noexcept {
  return kHeaderBytes + static_cast<std::size_t>(which) * ring_footprint(ring_bytes);
}
constexpr std::size_t segment_bytes(std::size_t ring_bytes) noexcept {
  return ring_offset(2, ring_bytes);
}

RingOptions ring_options(const ShmOptions& o) {
  RingOptions r;
  r.max_frame = o.max_frame;
  r.spin = o.spin;
  return r;
}

bool transport_fault(Errc c) noexcept {
  switch (c) {
    case Errc::ok:
    case Errc::would_block:
    case Errc::timeout:
    case Errc::queue_full:
    case Errc::channel_closed:
    case Errc::invalid_argument:
      return false;
    default:
      return true;
  }
}

}  // namespace

struct ShmChannel::Impl final : PeerProbe {
  os::ShmObject seg;
  SegHeader* hdr = nullptr;
  int side = 0;  // 0 creator, 1 opener
  RingProducer tx;
  RingConsumer rx;
  std::string endpoint;
  shm_detail::PeerWatch watch;
  std::atomic<bool> unlinked{false};
  bool unlink_when_attached = true;

  bool closed() noexcept override {
    return hdr->closed[0].load(std::memory_order_acquire) != 0 ||
           hdr->closed[1].load(std::memory_order_acquire) != 0;
  }
  bool dead() noexcept override {
    const int peer = 1 - side;
    if (hdr->attached.load(std::memory_order_acquire) == 0) return false;
    return watch.dead(hdr->pid[peer].load(std::memory_order_acquire),
                      hdr->start_ticks[peer].load(std::memory_order_acquire));
  }

  void maybe_unlink() noexcept {
    if (side != 0 || !unlink_when_attached || unlinked.load(std::memory_order_relaxed)) return;
    if (hdr->attached.load(std::memory_order_acquire) == 0) return;
    if (!unlinked.exchange(true)) seg.unlink();
  }

  void close() noexcept {
    if (hdr->closed[side].exchange(1) != 0) return;
    wake_ring(*ring(0));
    wake_ring(*ring(1));
    os::bump_and_wake(hdr->attached, INT_MAX);
  }

  RingControl* ring(int which) const noexcept {
    return reinterpret_cast<RingControl*>(seg.data() + ring_offset(which, hdr->ring_bytes));
  }
};

namespace {

// An opener that comes between prepare() and finish() waits here, reading only the header
// (the one page the creator reserved before publishing the name's magic).
Status wait_made(SegHeader& h, const std::string& name) {
  const auto until = Deadline::after(ShmChannel::kMakingWait);
  for (;;) {
    const std::uint32_t v = h.made.load(std::memory_order_acquire);
    if (v == kMade) return {};
    const auto pid = h.pid[0].load(std::memory_order_acquire);
    if (v != kMaking || h.closed[0].load(std::memory_order_acquire) != 0) {
      return Error{Errc::channel_closed, "channel " + name + " was given up by its creator"};
    }
    if (!os::process_alive(pid, h.start_ticks[0].load(std::memory_order_acquire))) {
      return Error{Errc::channel_closed, "the creator of channel " + name + " (pid " +
                                             std::to_string(pid) + ") died before making it"};
    }
    if (until.expired()) {
      return Error{Errc::timeout, "channel " + name + " is still being made by pid " +
                                      std::to_string(pid) + " after " +
                                      std::to_string(ShmChannel::kMakingWait.count()) + " s"};
    }
    // Woken by finish() or abandon(); the slice bounds how late a dead creator is noticed.
    os::futex_wait(h.made, v, until, std::chrono::milliseconds(50));
  }
}

// The segment with its header written and its name published; `reserve_all` false reserves
// only the header's page (Pending::finish() the rest).
Result<std::unique_ptr<ShmChannel::Impl>> make_segment(std::string_view name, const ShmOptions& opt,
                                                       bool reserve_all) {
  if (!valid_ring_capacity(opt.ring_bytes)) {
    return Error{Errc::invalid_argument, "ring_bytes must be a power of two in [4 KiB, 1 GiB]"};
  }
  auto full = shm_detail::new_segment_name(name);
  if (!full) return std::move(full).error();
  auto seg = os::ShmObject::create(*full, segment_bytes(opt.ring_bytes),
                                   reserve_all ? SIZE_MAX : kHeaderBytes);
  if (!seg) return std::move(seg).error();

  auto impl = std::make_unique<ShmChannel::Impl>();
  impl->seg = std::move(*seg);
  auto* h = new (impl->seg.data()) SegHeader{};
  h->version = kChannelVersion;
  h->header_bytes = kHeaderBytes;
  h->ring_bytes = opt.ring_bytes;
  h->total_bytes = segment_bytes(opt.ring_bytes);
  h->start_ticks[0].store(os::self_start_ticks());
  h->pid[0].store(static_cast<std::int32_t>(::getpid()));
  h->made.store(kMaking);
  impl->hdr = h;
  h->magic.store(kChannelMagic, std::memory_order_release);

  impl->side = 0;
  impl->unlink_when_attached = opt.unlink_when_attached;
  impl->endpoint = "shm://" + *full;
  return impl;
}

}  // namespace

ShmChannel::ShmChannel(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}

ShmChannel::~ShmChannel() {
  if (!impl_) return;
  impl_->close();
  if (impl_->side == 0 && !impl_->unlinked.exchange(true)) impl_->seg.unlink();
}

Result<std::unique_ptr<ShmChannel>> ShmChannel::create(std::string_view name,
                                                       const ShmOptions& opt) {
  // Reserved in one go: nothing is left pending between the steps.
  auto impl = make_segment(name, opt, true);
  if (!impl) return std::move(impl).error();
  return Pending(std::move(*impl), opt).finish();
}

Result<ShmChannel::Pending> ShmChannel::prepare(std::string_view name, const ShmOptions& opt) {
  auto impl = make_segment(name, opt, false);
  if (!impl) return std::move(impl).error();
  return Pending(std::move(*impl), opt);
}

ShmChannel::Pending::Pending(std::unique_ptr<Impl> impl, const ShmOptions& opt) noexcept
    : impl_(std::move(impl)), opt_(opt) {}

ShmChannel::Pending::Pending(Pending&& o) noexcept = default;

ShmChannel::Pending& ShmChannel::Pending::operator=(Pending&& o) noexcept {
  if (this != &o) {
    abandon();
    impl_ = std::move(o.impl_);
    opt_ = o.opt_;
  }
  return *this;
}

ShmChannel::Pending::~Pending() {
  abandon();
}

void ShmChannel::Pending::abandon() noexcept {
  if (!impl_) return;
  SegHeader& h = *impl_->hdr;
  h.closed[0].store(1, std::memory_order_release);
  h.made.store(kAbandoned, std::memory_order_release);
  os::futex_wake_all(h.made);
  impl_->seg.unlink();
  impl_.reset();
}

std::string ShmChannel::Pending::endpoint() const {
  return impl_ ? impl_->endpoint : std::string();
}

Result<std::unique_ptr<ShmChannel>> ShmChannel::Pending::finish() {
  if (!impl_) return Error{Errc::invalid_argument, "shm channel: finish() without a pending one"};
  if (auto st = impl_->seg.reserve_rest(); !st) {
    abandon();
    return std::move(st).error();
  }
  std::uint8_t* base = impl_->seg.data();  // all of it is mapped now, at a new address
  impl_->hdr = reinterpret_cast<SegHeader*>(base);
  init_ring(base + ring_offset(0, opt_.ring_bytes), opt_.ring_bytes);
  init_ring(base + ring_offset(1, opt_.ring_bytes), opt_.ring_bytes);
  impl_->tx = RingProducer(impl_->ring(0), ring_options(opt_));
  impl_->rx = RingConsumer(impl_->ring(1), ring_options(opt_));
  SegHeader& h = *impl_->hdr;
  // Allocated before the opener is told, so nothing can fail after that (operator new runs
  // before impl_ is moved from: a throw leaves this Pending to abandon the segment).
  std::unique_ptr<ShmChannel> ch(new ShmChannel(std::move(impl_)));
  h.made.store(kMade, std::memory_order_release);
  os::futex_wake_all(h.made);
  return ch;
}

Result<std::unique_ptr<ShmChannel>> ShmChannel::open(std::string_view name_or_endpoint,
                                                     const ShmOptions& opt) {
  auto full = shm_detail::segment_name_of(name_or_endpoint);
  if (!full) return std::move(full).error();
  auto seg = os::ShmObject::open(*full);
  if (!seg) return std::move(seg).error();
  if (seg->size() < kHeaderBytes) {
    return Error{Errc::invalid_argument, "/dev/shm/" + *full + " is too small for a channel"};
  }
  auto* h = reinterpret_cast<SegHeader*>(seg->data());
  if (h->magic.load(std::memory_order_acquire) != kChannelMagic) {
    return Error{Errc::invalid_argument, "/dev/shm/" + *full + " is not a ferry shm channel"};
  }
  if (h->version != kChannelVersion || h->header_bytes != kHeaderBytes ||
      !valid_ring_capacity(h->ring_bytes) || h->total_bytes != segment_bytes(h->ring_bytes) ||
      h->total_bytes > seg->size()) {
    return Error{Errc::invalid_argument, "/dev/shm/" + *full + " has an unexpected layout"};
  }
  if (auto st = wait_made(*h, *full); !st) return std::move(st).error();
  std::int32_t expected = 0;
  if (!h->pid[1].compare_exchange_strong(expected, static_cast<std::int32_t>(::getpid()))) {
    return Error{Errc::already_exists,
                 "channel " + *full + " is already open in pid " + std::to_string(expected)};
  }
  h->start_ticks[1].store(os::self_start_ticks());
  h->attached.store(1, std::memory_order_release);
  os::futex_wake_all(h->attached);

  auto impl = std::make_unique<Impl>();
  impl->seg = std::move(*seg);
  impl->hdr = h;
  impl->side = 1;
  impl->endpoint = "shm://" + *full;
  impl->tx = RingProducer(impl->ring(1), ring_options(opt));
  impl->rx = RingConsumer(impl->ring(0), ring_options(opt));
  return std::unique_ptr<ShmChannel>(new ShmChannel(std::move(impl)));
}

Status ShmChannel::send_until(const Frame& f, Deadline d) {
  impl_->maybe_unlink();
  return impl_->tx.send(f.header, f.payload, d, *impl_);
}

Status ShmChannel::send_batch(std::span<const Frame> frames, Deadline d) {
  impl_->maybe_unlink();
  return impl_->tx.send_batch(frames, d, *impl_);
}

Status ShmChannel::recv_until(Frame& out, Deadline d) {
  impl_->maybe_unlink();
  auto st = impl_->rx.recv(out, d, *impl_);
  // The stream can no longer be trusted after a malformed frame: close it for both sides.
  if (transport_fault(st.code())) impl_->close();
  return st;
}

std::string ShmChannel::endpoint() const {
  return impl_->endpoint;
}

Status ShmChannel::wait_for_peer(Deadline d) {
  auto& attached = impl_->hdr->attached;
  for (;;) {
    const std::uint32_t v = attached.load(std::memory_order_acquire);
    if (v != 0) {
      impl_->maybe_unlink();
      return {};
    }
    if (impl_->closed()) return Errc::channel_closed;
    if (d.is_now()) return Errc::would_block;
    if (d.expired()) return Errc::timeout;
    os::futex_wait(attached, v, d, std::chrono::milliseconds(50));
  }
}

void ShmChannel::close() noexcept {
  impl_->close();
}

Result<std::span<std::uint8_t>> ShmChannel::loan(std::size_t size, Deadline d) {
  impl_->maybe_unlink();
  return impl_->tx.loan(size, d, *impl_);
}

Status ShmChannel::publish(std::size_t used, MessageKind kind, std::uint64_t request_id) {
  return impl_->tx.publish(used, kind, request_id);
}

std::size_t ShmChannel::max_loan() const noexcept {
  return impl_->tx.max_loan();
}

Result<FrameView> ShmChannel::recv_view_until(Deadline d) {
  impl_->maybe_unlink();
  auto r = impl_->rx.recv_view(d, *impl_);
  if (!r && transport_fault(r.code())) impl_->close();
  return r;
}

void ShmChannel::release() noexcept {
  impl_->rx.release();
}

const std::string& ShmChannel::segment_name() const noexcept {
  return impl_->seg.name();
}

bool ShmChannel::is_creator() const noexcept {
  return impl_->side == 0;
}

bool ShmChannel::in_segment(const void* p) const noexcept {
  const auto* b = impl_->seg.data();
  const auto* q = static_cast<const std::uint8_t*>(p);
  return q >= b && q < b + impl_->seg.size();
}

}  // namespace ferry::ipc
