// The pool's callback thread (internal): runs Future::then continuations and on_done
// callbacks, in the order they became runnable, away from the threads that complete tasks (a
// reader thread must never run user code: a callback that submits and waits would stall the
// results it waits for).
//
// Threading: post() from any thread. stop() runs what is queued, then joins; a post after stop
// (or from a callback while stopping) runs in the posting thread. The thread starts at the
// first post, so pools without callbacks have none. Hold it in a shared_ptr: the thread
// keeps it alive, so a callback may drop the pool's last handle.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace ferry::detail {

class CallbackRunner : public std::enable_shared_from_this<CallbackRunner> {
 public:
  // on_error: told the what() of a callback's escaping exception (the runner goes on).
  explicit CallbackRunner(std::function<void(const std::string&)> on_error);
  ~CallbackRunner();
  CallbackRunner(const CallbackRunner&) = delete;
  CallbackRunner& operator=(const CallbackRunner&) = delete;

  void post(std::function<void()> fn);
  void stop();

 private:
  void run();
  void call(std::function<void()>& fn) noexcept;

  std::function<void(const std::string&)> on_error_;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopped_ = false;
  std::thread thread_;
};

}  // namespace ferry::detail
