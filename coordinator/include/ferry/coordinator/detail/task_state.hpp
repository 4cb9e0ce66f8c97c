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
#include <memory>
#include <mutex>
#include <optional>

#include "ferry/coordinator/errors.hpp"
#include "ferry/shared/codec.hpp"

namespace ferry::detail {

class PoolCore;
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
  std::uint32_t items = 1;  // batch: number of items in the chunk
  std::int64_t first_item = -1;
  Bytes args;
  // When its last attempt was sent to a worker (the pool's lock guards it): for the duration
  // histogram of the status page.
  std::chrono::steady_clock::time_point dispatched{};

  // Completion (guarded by m). done is also readable without the lock.
  std::mutex m;
  std::condition_variable cv;
  std::atomic<bool> done{false};
  Bytes value;
  std::optional<FailureInfo> failure;
  std::shared_ptr<CompletionQueue> sink;

  // First completion wins; later ones are dropped. True if this one won; then *count (if
  // given) is incremented before any waiter wakes.
  bool complete(Bytes v, std::optional<FailureInfo> f, std::atomic<std::uint64_t>* count = nullptr);
  // Announces completion to q now if done, else when it completes.
  void notify_into(std::shared_ptr<CompletionQueue> q);
  void wait();
  bool wait_until(std::chrono::steady_clock::time_point t);
};

bool cancel_task(const std::weak_ptr<PoolCore>& core, const std::shared_ptr<TaskState>& t);

}  // namespace ferry::detail
