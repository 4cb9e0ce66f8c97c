#include "ferry/ipc/shm_queue.hpp"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cstring>
#include <new>
#include <utility>

#include "shm_util.hpp"

namespace ferry::ipc {

namespace {

constexpr std::uint64_t kQueueMagic = 0x3155455559524546ULL;  // "FERYQUE1"
constexpr std::uint32_t kQueueVersion = 1;
constexpr std::size_t kLostLog = 1024;
constexpr std::size_t kProcs = 256;
constexpr auto kLivenessPeriod = std::chrono::milliseconds(50);

// Slot word: lap (38 bits) | pid (24 bits) | state (2 bits). pid_max is at most 2^22.
enum SlotState : std::uint64_t { kEmpty = 0, kWriting = 1, kFull = 2, kReading = 3 };
constexpr unsigned kPidShift = 2;
constexpr unsigned kLapShift = 26;
constexpr std::uint64_t kPidMask = (std::uint64_t{1} << 24) - 1;

constexpr std::uint64_t pack(std::uint64_t lap, SlotState st, std::uint64_t pid) noexcept {
  return (lap << kLapShift) | ((pid & kPidMask) << kPidShift) | st;
}
constexpr std::uint64_t lap_of(std::uint64_t w) noexcept {
  return w >> kLapShift;
}
constexpr SlotState state_of(std::uint64_t w) noexcept {
  return static_cast<SlotState>(w & 3);
}
constexpr pid_t pid_of(std::uint64_t w) noexcept {
  return static_cast<pid_t>((w >> kPidShift) & kPidMask);
}

struct ProcEntry {
  std::atomic<std::int32_t> pid;
  std::atomic<std::uint64_t> start_ticks;
};

struct QueueHeader {
  std::atomic<std::uint64_t> magic;  // stored last by the creator
  std::uint32_t version;
  std::uint32_t reserved;
  std::uint64_t capacity;
  std::uint64_t slot_bytes;
  std::uint64_t stride;
  std::uint64_t slots_offset;
  std::uint64_t total_bytes;
  std::atomic<std::uint32_t> closed;
  alignas(64) std::atomic<std::uint64_t> tail;  // next push position
  alignas(64) std::atomic<std::uint64_t> head;  // next pop position
  alignas(64) std::atomic<std::uint32_t> not_empty_seq;
  std::atomic<std::uint32_t> pop_waiters;
  alignas(64) std::atomic<std::uint32_t> not_full_seq;
  std::atomic<std::uint32_t> push_waiters;
  alignas(64) std::atomic<std::uint64_t> lost_count;
  std::atomic<std::uint64_t> abandoned_count;
  std::atomic<std::uint64_t> lost_log[kLostLog];  // seq + 1; 0 = being written
  // Processes that opened the queue, with start times, so a recycled pid is not taken for
  // the claimer that died.
  ProcEntry procs[kProcs];
};

struct alignas(64) SlotHeader {
  std::atomic<std::uint64_t> word;
  std::uint32_t len;
};

constexpr std::size_t round_up(std::size_t n, std::size_t a) noexcept {
  return (n + a - 1) / a * a;
}

// Moves a counter from p to p + 1 if it is still at p (a failed CAS must not clobber p).
void advance(std::atomic<std::uint64_t>& counter, std::uint64_t p) noexcept {
  counter.compare_exchange_strong(p, p + 1);
}

}  // namespace

struct ShmQueue::Impl {
  os::ShmObject seg;
  QueueHeader* hdr = nullptr;
  std::uint8_t* slots = nullptr;
  std::uint64_t cap = 0;
  unsigned cap_shift = 0;
  std::uint64_t stride = 0;
  std::uint64_t slot_bytes = 0;
  std::uint64_t me = 0;
  bool creator = false;
  std::string endpoint;
  std::chrono::nanoseconds spin{};

  SlotHeader& slot(std::uint64_t i) const noexcept {
    return *reinterpret_cast<SlotHeader*>(slots + i * stride);
  }
  std::uint8_t* slot_data(std::uint64_t i) const noexcept {
    return slots + i * stride + sizeof(SlotHeader);
  }

  void register_self() noexcept {
    const auto pid = static_cast<std::int32_t>(me);
    const auto ticks = os::self_start_ticks();
    for (auto& e : hdr->procs) {
      std::int32_t cur = e.pid.load();
      if (cur == pid) {
        e.start_ticks.store(ticks);
        return;
      }
    }
    for (int pass = 0; pass < 2; ++pass) {
      for (auto& e : hdr->procs) {
        std::int32_t cur = e.pid.load();
        const bool free = cur == 0 || (pass == 1 && !os::process_alive(cur, 0));
        if (free && e.pid.compare_exchange_strong(cur, pid)) {
          e.start_ticks.store(ticks);
          return;
        }
      }
    }
    // Table full of live processes: liveness falls back to the pid alone.
  }

  bool claimer_dead(pid_t pid) const noexcept {
    if (pid <= 0) return true;
    if (static_cast<std::uint64_t>(pid) == me) return false;
    std::uint64_t ticks = 0;
    for (const auto& e : hdr->procs) {
      if (e.pid.load(std::memory_order_relaxed) == pid) {
        ticks = e.start_ticks.load(std::memory_order_relaxed);
        break;
      }
    }
    return !os::process_alive(pid, ticks);
  }

  // Takes back slot i whose claimer (in word w) is dead. True if this call did it.
  bool reclaim(std::uint64_t i, std::uint64_t w) noexcept {
    const auto st = state_of(w);
    if (st != kWriting && st != kReading) return false;
    const std::uint64_t lap = lap_of(w);
    if (!slot(i).word.compare_exchange_strong(w, pack(lap + 1, kEmpty, 0))) return false;
    const std::uint64_t seq = (lap << cap_shift) + i;
    if (st == kReading) {
      const std::uint64_t k = hdr->lost_count.fetch_add(1);
      hdr->lost_log[k % kLostLog].store(seq + 1);
    } else {
      hdr->abandoned_count.fetch_add(1);
    }
    // The counters may be stuck at seq if the claimer died before advancing them.
    advance(hdr->head, seq);
    advance(hdr->tail, seq);
    os::bump_and_wake(hdr->not_full_seq, INT_MAX);
    os::bump_and_wake(hdr->not_empty_seq, INT_MAX);
    return true;
  }

  // One attempt to claim the slot at the push position. check_dead: also take back slots
  // held by dead claimers (costs syscalls, so only when about to wait).
  bool try_claim_push(bool check_dead, std::uint64_t& pos) noexcept {
    for (;;) {
      const std::uint64_t p = hdr->tail.load(std::memory_order_seq_cst);
      const std::uint64_t i = p & (cap - 1);
      const std::uint64_t lap = p >> cap_shift;
      std::uint64_t w = slot(i).word.load(std::memory_order_seq_cst);
      const std::uint64_t wl = lap_of(w);
      const auto st = state_of(w);
      if (wl == lap && st == kEmpty) {
        if (slot(i).word.compare_exchange_strong(w, pack(lap, kWriting, me))) {
          advance(hdr->tail, p);
          pos = p;
          return true;
        }
        continue;
      }
      if (wl >= lap) {  // position p is already claimed: help move the counter on
        advance(hdr->tail, p);
        continue;
      }
      // The slot still holds the previous lap: full, unless its claimer is dead.
      if (check_dead && (st == kWriting || st == kReading) && claimer_dead(pid_of(w))) {
        reclaim(i, w);
        continue;
      }
      return false;
    }
  }

  bool try_claim_pop(bool check_dead, std::uint64_t& pos) noexcept {
    for (;;) {
      const std::uint64_t q = hdr->head.load(std::memory_order_seq_cst);
      const std::uint64_t i = q & (cap - 1);
      const std::uint64_t lap = q >> cap_shift;
      std::uint64_t w = slot(i).word.load(std::memory_order_seq_cst);
      const std::uint64_t wl = lap_of(w);
      const auto st = state_of(w);
      if (wl == lap) {
        if (st == kFull) {
          if (slot(i).word.compare_exchange_strong(w, pack(lap, kReading, me))) {
            advance(hdr->head, q);
            pos = q;
            return true;
          }
          continue;
        }
        if (st == kReading) {
          advance(hdr->head, q);
          continue;
        }
        if (st == kWriting && check_dead && claimer_dead(pid_of(w))) {
          reclaim(i, w);
          continue;
        }
        return false;  // not pushed yet, or being written
      }
      if (wl > lap) {  // consumed or skipped already
        advance(hdr->head, q);
        continue;
      }
      if (check_dead && (st == kReading || st == kWriting) && claimer_dead(pid_of(w))) {
        reclaim(i, w);
        continue;
      }
      return false;
    }
  }

  template <class Claim>
  Status wait_claim(Claim&& claim, std::atomic<std::uint32_t>& seq,
                    std::atomic<std::uint32_t>& waiters, bool is_pop, Deadline d) {
    if (claim(false)) return {};
    auto gone = [&] { return hdr->closed.load(std::memory_order_acquire) != 0; };
    if (d.is_now()) {
      if (claim(true)) return {};
      if (is_pop && gone()) return Errc::channel_closed;
      return is_pop ? Errc::would_block : Errc::queue_full;
    }
    if (shm_detail::spin_until([&] { return claim(false); }, spin, d)) return {};
    waiters.fetch_add(1, std::memory_order_seq_cst);
    Status result;
    for (;;) {
      const std::uint32_t s = seq.load(std::memory_order_seq_cst);
      if (claim(true)) break;
      if (is_pop && gone()) {
        result = Errc::channel_closed;
        break;
      }
      const auto now = Clock::now();
      if (!d.is_never() && now >= d.when()) {
        result = Errc::timeout;
        break;
      }
      os::futex_wait(seq, s, d, kLivenessPeriod);
    }
    waiters.fetch_sub(1, std::memory_order_seq_cst);
    return result;
  }
};

ShmQueue::ShmQueue(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}

ShmQueue::~ShmQueue() {
  if (impl_ && impl_->creator) impl_->seg.unlink();
}

Result<std::unique_ptr<ShmQueue>> ShmQueue::create(std::string_view name,
                                                   const ShmQueueOptions& opt) {
  if (opt.capacity < 2 || opt.capacity > (std::size_t{1} << 20) ||
      !std::has_single_bit(opt.capacity)) {
    return Error{Errc::invalid_argument, "queue capacity must be a power of two in [2, 2^20]"};
  }
  if (opt.slot_bytes == 0 || opt.slot_bytes > (std::size_t{1} << 30)) {
    return Error{Errc::invalid_argument, "slot_bytes must be in [1, 1 GiB]"};
  }
  auto full = shm_detail::new_segment_name(name);
  if (!full) return std::move(full).error();
  const std::size_t stride = round_up(sizeof(SlotHeader) + opt.slot_bytes, 64);
  const std::size_t slots_offset = round_up(sizeof(QueueHeader), 4096);
  const std::size_t total = slots_offset + stride * opt.capacity;
  auto seg = os::ShmObject::create(*full, total);
  if (!seg) return std::move(seg).error();

  auto impl = std::make_unique<Impl>();
  impl->seg = std::move(*seg);
  auto* h = new (impl->seg.data()) QueueHeader{};
  h->version = kQueueVersion;
  h->capacity = opt.capacity;
  h->slot_bytes = opt.slot_bytes;
  h->stride = stride;
  h->slots_offset = slots_offset;
  h->total_bytes = total;
  for (std::size_t i = 0; i < opt.capacity; ++i) {
    // Slot i starts at lap 0, EMPTY (zeroed memory is exactly that).
    new (impl->seg.data() + slots_offset + i * stride) SlotHeader{};
  }
  impl->creator = true;
  impl->hdr = h;
  impl->spin = opt.spin;
  impl->endpoint = "shm://" + *full;
  impl->slots = impl->seg.data() + slots_offset;
  impl->cap = opt.capacity;
  impl->cap_shift = static_cast<unsigned>(std::countr_zero(opt.capacity));
  impl->stride = stride;
  impl->slot_bytes = opt.slot_bytes;
  impl->me = static_cast<std::uint64_t>(::getpid());
  impl->register_self();
  h->magic.store(kQueueMagic, std::memory_order_release);
  return std::unique_ptr<ShmQueue>(new ShmQueue(std::move(impl)));
}

Result<std::unique_ptr<ShmQueue>> ShmQueue::open(std::string_view name_or_endpoint) {
  auto full = shm_detail::segment_name_of(name_or_endpoint);
  if (!full) return std::move(full).error();
  auto seg = os::ShmObject::open(*full);
  if (!seg) return std::move(seg).error();
  if (seg->size() < sizeof(QueueHeader)) {
    return Error{Errc::invalid_argument, "/dev/shm/" + *full + " is too small for a queue"};
  }
  auto* h = reinterpret_cast<QueueHeader*>(seg->data());
  if (h->magic.load(std::memory_order_acquire) != kQueueMagic || h->version != kQueueVersion) {
    return Error{Errc::invalid_argument, "/dev/shm/" + *full + " is not a ferry shm queue"};
  }
  const bool ok =
      h->capacity >= 2 && std::has_single_bit(h->capacity) &&
      h->stride >= sizeof(SlotHeader) + h->slot_bytes && h->slots_offset >= sizeof(QueueHeader) &&
      h->total_bytes == h->slots_offset + h->stride * h->capacity && h->total_bytes <= seg->size();
  if (!ok) return Error{Errc::invalid_argument, "/dev/shm/" + *full + " has a bad layout"};
  auto impl = std::make_unique<Impl>();
  impl->seg = std::move(*seg);
  impl->hdr = h;
  impl->spin = ShmQueueOptions{}.spin;
  impl->endpoint = "shm://" + *full;
  impl->slots = impl->seg.data() + h->slots_offset;
  impl->cap = h->capacity;
  impl->cap_shift = static_cast<unsigned>(std::countr_zero(h->capacity));
  impl->stride = h->stride;
  impl->slot_bytes = h->slot_bytes;
  impl->me = static_cast<std::uint64_t>(::getpid());
  impl->register_self();
  return std::unique_ptr<ShmQueue>(new ShmQueue(std::move(impl)));
}

std::string ShmQueue::endpoint() const {
  return impl_->endpoint;
}
std::size_t ShmQueue::capacity() const noexcept {
  return static_cast<std::size_t>(impl_->cap);
}
std::size_t ShmQueue::slot_bytes() const noexcept {
  return static_cast<std::size_t>(impl_->slot_bytes);
}

Result<ShmQueue::PushSlot> ShmQueue::begin_push(std::size_t size, Deadline d) {
  auto& im = *impl_;
  if (size > im.slot_bytes) {
    return Error{Errc::invalid_argument, "message of " + std::to_string(size) +
                                             " bytes exceeds the queue's slot size of " +
                                             std::to_string(im.slot_bytes)};
  }
  if (closed()) return Errc::channel_closed;
  std::uint64_t pos = 0;
  auto claim = [&](bool check_dead) { return im.try_claim_push(check_dead, pos); };
  if (auto st = im.wait_claim(claim, im.hdr->not_full_seq, im.hdr->push_waiters, false, d); !st)
    return std::move(st).error();
  const std::uint64_t i = pos & (im.cap - 1);
  im.slot(i).len = static_cast<std::uint32_t>(size);
  return PushSlot{pos, std::span<std::uint8_t>(im.slot_data(i), size)};
}

Status ShmQueue::commit_push(const PushSlot& s) {
  auto& im = *impl_;
  const std::uint64_t i = s.seq & (im.cap - 1);
  const std::uint64_t lap = s.seq >> im.cap_shift;
  im.slot(i).len = static_cast<std::uint32_t>(s.bytes.size());
  std::uint64_t w = pack(lap, kWriting, im.me);
  if (!im.slot(i).word.compare_exchange_strong(w, pack(lap, kFull, 0))) {
    return Error{Errc::broken, "the queue slot was taken back before the push completed"};
  }
  if (im.hdr->pop_waiters.load(std::memory_order_seq_cst) != 0) {
    os::bump_and_wake(im.hdr->not_empty_seq, 1);
  }
  return {};
}

Result<ShmQueue::PopSlot> ShmQueue::begin_pop(Deadline d) {
  auto& im = *impl_;
  std::uint64_t pos = 0;
  auto claim = [&](bool check_dead) { return im.try_claim_pop(check_dead, pos); };
  if (auto st = im.wait_claim(claim, im.hdr->not_empty_seq, im.hdr->pop_waiters, true, d); !st)
    return std::move(st).error();
  const std::uint64_t i = pos & (im.cap - 1);
  const std::uint32_t len = im.slot(i).len;
  PopSlot s{pos, ByteView(im.slot_data(i), std::min<std::uint64_t>(len, im.slot_bytes))};
  if (len > im.slot_bytes) {
    (void)commit_pop(s);
    return Error{Errc::malformed_payload, "queue slot claims more bytes than it holds"};
  }
  return s;
}

Status ShmQueue::commit_pop(const PopSlot& s) {
  auto& im = *impl_;
  const std::uint64_t i = s.seq & (im.cap - 1);
  const std::uint64_t lap = s.seq >> im.cap_shift;
  std::uint64_t w = pack(lap, kReading, im.me);
  if (!im.slot(i).word.compare_exchange_strong(w, pack(lap + 1, kEmpty, 0))) {
    return Error{Errc::broken, "the queue slot was taken back before the pop completed"};
  }
  if (im.hdr->push_waiters.load(std::memory_order_seq_cst) != 0) {
    os::bump_and_wake(im.hdr->not_full_seq, 1);
  }
  return {};
}

Result<std::uint64_t> ShmQueue::push_until(ByteView msg, Deadline d) {
  auto s = begin_push(msg.size(), d);
  if (!s) return std::move(s).error();
  if (!msg.empty()) std::memcpy(s->bytes.data(), msg.data(), msg.size());
  if (auto st = commit_push(*s); !st) return std::move(st).error();
  return s->seq;
}

Status ShmQueue::pop_until(Bytes& out, Deadline d, std::uint64_t* seq) {
  auto s = begin_pop(d);
  if (!s) return std::move(s).error();
  out.assign(s->bytes.begin(), s->bytes.end());
  if (seq != nullptr) *seq = s->seq;
  return commit_pop(*s);
}

void ShmQueue::close() noexcept {
  impl_->hdr->closed.store(1, std::memory_order_seq_cst);
  os::bump_and_wake(impl_->hdr->not_empty_seq, INT_MAX);
  os::bump_and_wake(impl_->hdr->not_full_seq, INT_MAX);
}

bool ShmQueue::closed() const noexcept {
  return impl_->hdr->closed.load(std::memory_order_acquire) != 0;
}

std::size_t ShmQueue::recover() noexcept {
  auto& im = *impl_;
  std::size_t n = 0;
  for (std::uint64_t i = 0; i < im.cap; ++i) {
    const std::uint64_t w = im.slot(i).word.load(std::memory_order_seq_cst);
    const auto st = state_of(w);
    if ((st == kWriting || st == kReading) && im.claimer_dead(pid_of(w)) && im.reclaim(i, w)) ++n;
  }
  return n;
}

std::uint64_t ShmQueue::lost_count() noexcept {
  recover();
  return impl_->hdr->lost_count.load();
}

std::vector<std::uint64_t> ShmQueue::lost() {
  recover();
  const std::uint64_t n = impl_->hdr->lost_count.load();
  std::vector<std::uint64_t> out;
  for (std::uint64_t k = n > kLostLog ? n - kLostLog : 0; k < n; ++k) {
    const std::uint64_t v = impl_->hdr->lost_log[k % kLostLog].load();
    if (v != 0) out.push_back(v - 1);
  }
  return out;
}

std::uint64_t ShmQueue::abandoned_count() noexcept {
  recover();
  return impl_->hdr->abandoned_count.load();
}

}  // namespace ferry::ipc
