// ferry::Queue<T>: a typed, bounded, many-producer / many-consumer queue between processes
// on one host (Python's multiprocessing.Queue), over the shared-memory ShmQueue. Items are
// serialized with cereal, as for Channel<T> (typed.hpp).
//
//   auto q = ferry::Queue<Job>::create("jobs", 64, 4096);   // 64 items of <= 4096 bytes each
//   q->put(job);  ...  auto j = q->get_for(1s);
//
// Errors are values: put/get come as try_ (Deadline::now), blocking and _for/_until forms.
// put: QueueFull (try form), Timeout, ChannelClosed (closed), FrameTooLarge (the item encodes
// to more than max_item_bytes; nothing is queued). get: WouldBlock (try form), Timeout,
// ChannelClosed (closed and drained), or the decoding error of an item that is not a T (that
// item is consumed).
//
// Delivery: AT MOST ONCE, FIFO per producer. Every item is handed to at most one get() and
// is never re-delivered. A consumer process that dies (e.g. SIGKILL) after claiming an item
// and before its get() returned loses that item: ShmQueue reports it by its sequence number
// (put returns each item's number) in lost() (the last 1024; lost_count() counts all). A
// producer that dies inside put() publishes nothing (abandoned_count()). Nothing is locked,
// so a dead process never blocks the others; at-least-once would need acknowledgements
// and re-queueing, which the queue does not do.
//
// Ownership: the handle from create() owns the segment /dev/shm/ferry.<session>.<name> and
// removes the name when destroyed (handles already open keep working; new opens fail with
// NotFound). Destroying it does not close() the queue: close() first if consumers block in
// get(). A handle serializes (cereal) as its endpoint "shm://ferry.<session>.<name>"; loading
// opens the queue (throwing ferry::Exception if it cannot), so a Queue can be a task argument
// and be used in the worker. Move-only.
// Threading: one handle may be used by many threads at once (put/get keep no per-handle
// state). A handle belongs to the process that created or opened it: a fork()ed child opens
// its own from endpoint() (claims are tagged with the opener's pid).
#pragma once

#include <cereal/types/string.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ferry/ipc/deadline.hpp"
#include "ferry/ipc/shm_queue.hpp"
#include "ferry/shared/codec.hpp"

namespace ferry {

template <class T>
class Queue {
 public:
  Queue() = default;  // empty: every call fails with InvalidArgument

  // capacity: items, a power of two in [2, 2^20]; max_item_bytes: the largest encoded item.
  static Result<Queue> create(std::string_view name, std::size_t capacity,
                              std::size_t max_item_bytes = std::size_t{64} << 10) {
    ipc::ShmQueueOptions opt;
    opt.capacity = capacity;
    opt.slot_bytes = max_item_bytes;
    auto q = ipc::ShmQueue::create(name, opt);
    if (!q) return std::move(q).error();
    return Queue(std::move(*q));
  }
  // handle: an endpoint() from any process of the host, or a name of this session.
  static Result<Queue> open(std::string_view handle) {
    auto q = ipc::ShmQueue::open(handle);
    if (!q) return std::move(q).error();
    return Queue(std::move(*q));
  }

  bool is_open() const noexcept { return q_ != nullptr; }
  std::string endpoint() const { return q_ ? q_->endpoint() : std::string(); }
  std::size_t capacity() const noexcept { return q_ ? q_->capacity() : 0; }
  std::size_t max_item_bytes() const noexcept { return q_ ? q_->slot_bytes() : 0; }

  // Returns the item's sequence number (what lost() reports).
  Result<std::uint64_t> put_until(const T& value, ipc::Deadline d) {
    if (!q_) return empty();
    const Bytes item = encode_value(value);
    if (item.size() > q_->slot_bytes()) {
      return Error{Errc::frame_too_large, "item encodes to " + std::to_string(item.size()) +
                                              " bytes; this queue takes items of at most " +
                                              std::to_string(q_->slot_bytes())};
    }
    return q_->push_until(item, d);
  }
  Result<std::uint64_t> put(const T& v) { return put_until(v, ipc::Deadline::never()); }
  Result<std::uint64_t> try_put(const T& v) { return put_until(v, ipc::Deadline::now()); }
  template <class Rep, class Period>
  Result<std::uint64_t> put_for(const T& v, std::chrono::duration<Rep, Period> d) {
    return put_until(v, ipc::Deadline::after(d));
  }

  // seq, if given, receives the item's sequence number.
  Result<T> get_until(ipc::Deadline d, std::uint64_t* seq = nullptr) {
    if (!q_) return empty();
    auto slot = q_->begin_pop(d);
    if (!slot) return std::move(slot).error();
    // Decoded in place: the slot stays claimed by this process until commit_pop.
    Result<T> value = decode_value<T>(slot->bytes);
    if (seq != nullptr) *seq = slot->seq;
    if (auto st = q_->commit_pop(*slot); !st) return std::move(st).error();
    return value;
  }
  Result<T> get(std::uint64_t* seq = nullptr) { return get_until(ipc::Deadline::never(), seq); }
  Result<T> try_get(std::uint64_t* seq = nullptr) { return get_until(ipc::Deadline::now(), seq); }
  template <class Rep, class Period>
  Result<T> get_for(std::chrono::duration<Rep, Period> d, std::uint64_t* seq = nullptr) {
    return get_until(ipc::Deadline::after(d), seq);
  }

  // Every put fails with ChannelClosed from now on; gets drain what is queued, then fail so.
  void close() noexcept {
    if (q_) q_->close();
  }
  bool closed() const noexcept { return q_ && q_->closed(); }

  // Items whose consumer died mid-get, by sequence number (see Delivery above).
  std::vector<std::uint64_t> lost() { return q_ ? q_->lost() : std::vector<std::uint64_t>{}; }
  std::uint64_t lost_count() noexcept { return q_ ? q_->lost_count() : 0; }
  std::uint64_t abandoned_count() noexcept { return q_ ? q_->abandoned_count() : 0; }

  ipc::ShmQueue& raw() noexcept { return *q_; }

  template <class A>
  void save(A& ar) const {
    ar(endpoint());
  }
  template <class A>
  void load(A& ar) {
    std::string ep;
    ar(ep);
    auto opened = open(ep);
    if (!opened) throw Exception(std::move(opened).error());
    *this = std::move(*opened);
  }

 private:
  explicit Queue(std::unique_ptr<ipc::ShmQueue> q) noexcept : q_(std::move(q)) {}
  static Error empty() { return Error{Errc::invalid_argument, "queue handle is empty"}; }

  std::unique_ptr<ipc::ShmQueue> q_;
};

}  // namespace ferry
