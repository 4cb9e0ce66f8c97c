// Shared state of one submitted task, between a Pool and its Futures (internal: included by
// the public templates, not for users; names here may change).
//
// Threading: the completion fields are guarded by m (done is also readable without it); the
// pool writes the rest before the task is submitted and only reads it afterwards.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "ferry/coordinator/errors.hpp"
#include "ferry/shared/codec.hpp"

namespace ferry::detail {

class PoolCore;
class ObjectBlock;
struct TaskState;

// Where finished tasks are announced, in completion order (as_completed, imap_unordered).
class CompletionQueue {
 public:
  void push(std::shared_ptr<TaskState> t);
  std::shared_ptr<TaskState> pop();  // waits
  // Null if nothing finished before t.
  std::shared_ptr<TaskState> pop_until(std::chrono::steady_clock::time_point t);

 private:
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<TaskState>> done_;
};

struct TaskState : std::enable_shared_from_this<TaskState> {
  // What to run: set by the submitter, read-only once submitted.
  std::uint64_t id = 0;
  std::uint32_t function = 0;
  bool batch = false;
  bool ref_args = false;    // args are RefOr-encoded (msg::TaskHeader::ref_args)
  std::uint32_t items = 1;  // batch: number of items in the chunk
  std::int64_t first_item = -1;
  Bytes args;
  // Its own limits (ferry::with), where they differ from the pool's options.
  std::optional<unsigned> max_retries;
  std::optional<std::chrono::milliseconds> timeout;
  // A remote actor's call: the (reserved) worker it runs on, never elsewhere; 0: any worker.
  std::uint32_t pin = 0;
  // When its last attempt was sent to a worker (the pool's lock guards it): for the duration
  // histogram of the status page.
  std::chrono::steady_clock::time_point dispatched{};
  // Objects (Pool::put) its arguments refer to: kept alive until its outcome is final, so a
  // retry still finds them. Set before it is submitted (or under m), released by complete.
  std::vector<std::shared_ptr<const void>> keep;

  // Completion (guarded by m). done is also readable without the lock.
  std::mutex m;
  std::condition_variable cv;
  std::atomic<bool> done{false};
  Bytes value;
  // A value made in this process (Future::then), held as the result type itself.
  std::shared_ptr<const void> local;
  // The value kept in the object store (a result a local worker passed as a shared-memory
  // object): value is then empty, readers decode from the object's bytes, and a task graph's
  // dependant taking this value as it is gets it by name, not read in and encoded again.
  std::shared_ptr<ObjectBlock> value_object;
  std::optional<FailureInfo> failure;

  // First completion wins; later ones are dropped. True if this one won; then *count (if
  // given) is incremented before any waiter wakes, and the listeners run (in this thread,
  // outside m: they must be brief and must not block).
  bool complete(Bytes v, std::optional<FailureInfo> f, std::atomic<std::uint64_t>* count = nullptr);
  // As complete, with a local value.
  bool complete_local(std::shared_ptr<const void> v);
  // As complete, with a value held by an object of the store (value_object).
  bool complete_object(std::shared_ptr<ObjectBlock> b, std::atomic<std::uint64_t>* count);
  // Announces completion to q now if done, else when it completes.
  void notify_into(std::shared_ptr<CompletionQueue> q);
  // Calls l once when it completes (at once, in this thread, if it has). Returns an id for
  // unlisten (0 if l ran already).
  using Listener = std::function<void(const std::shared_ptr<TaskState>&)>;
  std::uint64_t listen(Listener l);
  void unlisten(std::uint64_t id);
  void wait();
  bool wait_until(std::chrono::steady_clock::time_point t);

 private:
  bool finish(Bytes v, std::shared_ptr<const void> local, std::optional<FailureInfo> f,
              std::atomic<std::uint64_t>* count, std::shared_ptr<ObjectBlock> object = nullptr);
  std::vector<std::pair<std::uint64_t, Listener>> listeners_;  // guarded by m
  std::uint64_t next_listener_ = 1;
};

// Runs fn on the pool's callback thread (Future::then, on_done), or here if the pool is gone.
void post_callback(const std::weak_ptr<PoolCore>& core, std::function<void()> fn);

bool cancel_task(const std::weak_ptr<PoolCore>& core, const std::shared_ptr<TaskState>& t);

}  // namespace ferry::detail
