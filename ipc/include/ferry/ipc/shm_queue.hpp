// ShmQueue: a bounded multi-producer / multi-consumer queue of byte messages in one
// shared-memory segment (/dev/shm/ferry.<session>.<NAME>), for ferry::Queue<T>. Any number of
// processes (and threads) push and pop; a process SIGKILLed in the middle of a push or a pop
// does not wedge the others.
//
// Design: a Vyukov-style ring of `capacity` slots of `slot_bytes` each, with a push counter
// (tail) and a pop counter (head). Position p lives in slot p % capacity at lap p / capacity.
// Each slot has one 64-bit state word {lap, state, pid}: EMPTY -> WRITING(pid) -> FULL ->
// READING(pid) -> EMPTY of the next lap. A process claims a slot with one CAS on that word
// that also records its pid, and only then advances the shared counter (anyone who sees a
// claimed slot at the counter helps advance it). So at every instant the claimer of an
// unfinished slot is written in the slot itself: when a waiter finds a slot stuck in WRITING
// or READING and its pid is dead (kill(0), /proc state and start time; a zombie is dead), it
// takes the slot back with a CAS:
//   - READING(dead consumer): the message was claimed but its consumer died before it
//     finished. The slot is freed and the message's sequence number (its position p) goes to
//     the lost() log.
//   - WRITING(dead producer): nothing was published; the slot is skipped (abandoned()).
// Nothing is ever locked, so there is no lock a dead process could hold.
//
// Delivery guarantee: AT MOST ONCE. A message is given to exactly one consumer; it is never
// re-delivered. If that consumer dies between claiming the message and finishing the pop
// (pop_commit() in the two-phase form), the message is reported lost with its sequence number
// (push returns each message's sequence number). A consumer that dies after pop returned has
// received the message. So every pushed message is either popped exactly once or listed in
// lost() (the log keeps the last 1024 sequence numbers; lost_count() counts all).
//
// Limits: a message is at most slot_bytes (default 64 KiB); a bigger one is refused with
// InvalidArgument (the typed layer may split it). FIFO per producer; across producers, order
// of claiming. A slow (alive) producer in the middle of a push holds up consumers at its slot
// until it finishes, as in every Vyukov queue.
//
// Waiting: try / blocking / timed forms. Blocked calls spin briefly, then sleep on a futex
// word in the segment, waking at least every 50 ms to look for dead claimers. close() makes
// every push fail with ChannelClosed and pops drain, then fail with ChannelClosed.
//
// Lifetime: the creator owns the segment and unlinks it in its destructor; openers never
// unlink. A SIGKILLed creator leaves the name, which carries the coordinator's session, to
// sweep_stale_shm(). Opening by name after the creator is gone is NotFound.
//
// Threading: one ShmQueue handle may be used by many threads at once (all shared state is in
// the segment). A handle belongs to the process that opened it: a fork()ed child opens its
// own (claims carry the opener's pid). Ownership: move-only via unique_ptr; owns its mapping.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/ipc/deadline.hpp"
#include "ferry/shared/error.hpp"
#include "ferry/shared/frame.hpp"

namespace ferry::ipc {

struct ShmQueueOptions {
  std::size_t capacity = 128;                      // slots; power of two, 2..2^20
  std::size_t slot_bytes = std::size_t{64} << 10;  // largest message
  std::chrono::nanoseconds spin = std::chrono::microseconds(20);
};

class ShmQueue {
 public:
  // A slot claimed by begin_push / begin_pop; pass it back to the matching commit.
  struct PushSlot {
    std::uint64_t seq = 0;
    std::span<std::uint8_t> bytes;  // write the message here (size as asked)
  };
  struct PopSlot {
    std::uint64_t seq = 0;
    ByteView bytes;  // the message, in the segment; valid until pop_commit
  };

  // Reserves capacity * slot_bytes (plus headers) in /dev/shm at once: NoSpace if it is full.
  static Result<std::unique_ptr<ShmQueue>> create(std::string_view name,
                                                  const ShmQueueOptions& opt = {});
  static Result<std::unique_ptr<ShmQueue>> open(std::string_view name_or_endpoint);
  ShmQueue(const ShmQueue&) = delete;
  ShmQueue& operator=(const ShmQueue&) = delete;
  ~ShmQueue();

  std::string endpoint() const;  // "shm://ferry.<session>.<name>"
  std::size_t capacity() const noexcept;
  std::size_t slot_bytes() const noexcept;

  // Push: returns the message's sequence number. Errors: InvalidArgument (too big),
  // QueueFull (try form), Timeout, ChannelClosed (closed).
  Result<std::uint64_t> push_until(ByteView msg, Deadline d);
  Result<std::uint64_t> try_push(ByteView msg) { return push_until(msg, Deadline::now()); }
  Result<std::uint64_t> push(ByteView msg) { return push_until(msg, Deadline::never()); }
  template <class Rep, class Period>
  Result<std::uint64_t> push_for(ByteView msg, std::chrono::duration<Rep, Period> d) {
    return push_until(msg, Deadline::after(d));
  }

  // Pop into out (reusing its capacity); seq, if given, receives the sequence number.
  // Errors: WouldBlock (try form), Timeout, ChannelClosed (closed and drained).
  Status pop_until(Bytes& out, Deadline d, std::uint64_t* seq = nullptr);
  Status try_pop(Bytes& out, std::uint64_t* seq = nullptr) {
    return pop_until(out, Deadline::now(), seq);
  }
  Status pop(Bytes& out, std::uint64_t* seq = nullptr) {
    return pop_until(out, Deadline::never(), seq);
  }
  template <class Rep, class Period>
  Status pop_for(Bytes& out, std::chrono::duration<Rep, Period> d, std::uint64_t* seq = nullptr) {
    return pop_until(out, Deadline::after(d), seq);
  }

  // Two-phase forms (zero copy): the slot is claimed by this process until the commit.
  Result<PushSlot> begin_push(std::size_t size, Deadline d);
  Status commit_push(const PushSlot& s);
  Result<PopSlot> begin_pop(Deadline d);
  Status commit_pop(const PopSlot& s);

  void close() noexcept;
  bool closed() const noexcept;

  // Takes back every slot whose claimer is dead (normally done lazily by waiters) and
  // returns how many it took back.
  std::size_t recover() noexcept;
  // Messages lost because their consumer died mid-pop (after recover()).
  std::uint64_t lost_count() noexcept;
  std::vector<std::uint64_t> lost();
  // Pushes abandoned by a producer that died mid-push (nothing was published).
  std::uint64_t abandoned_count() noexcept;

  struct Impl;

 private:
  explicit ShmQueue(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::ipc
