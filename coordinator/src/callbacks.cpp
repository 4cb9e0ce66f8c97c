#include "callbacks.hpp"

#include <exception>

namespace ferry::detail {

CallbackRunner::CallbackRunner(std::function<void(const std::string&)> on_error)
    : on_error_(std::move(on_error)) {}

CallbackRunner::~CallbackRunner() {
  stop();
}

void CallbackRunner::post(std::function<void()> fn) {
  {
    std::unique_lock lk(m_);
    if (!stopped_) {
      if (!thread_.joinable()) {
        try {
          thread_ = std::thread([self = shared_from_this()] { self->run(); });
        } catch (const std::system_error&) {
          // No thread to be had (EAGAIN): run it here rather than lose it.
          lk.unlock();
          call(fn);
          return;
        }
      }
      queue_.push_back(std::move(fn));
      cv_.notify_one();
      return;
    }
  }
  call(fn);
}

void CallbackRunner::stop() {
  {
    std::lock_guard lk(m_);
    if (stopped_) return;
    stopped_ = true;
  }
  cv_.notify_one();
  if (!thread_.joinable()) return;
  // A callback that drops the last handle of its pool stops the pool from this thread.
  if (thread_.get_id() == std::this_thread::get_id()) {
    thread_.detach();
    return;
  }
  thread_.join();
}

void CallbackRunner::run() {
  std::unique_lock lk(m_);
  for (;;) {
    cv_.wait(lk, [&] { return stopped_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopped, and everything ran
    auto fn = std::move(queue_.front());
    queue_.pop_front();
    lk.unlock();
    call(fn);
    lk.lock();
  }
}

void CallbackRunner::call(std::function<void()>& fn) noexcept {
  try {
    fn();
  } catch (const std::exception& e) {
    if (on_error_) on_error_(e.what());
  } catch (...) {
    if (on_error_) on_error_("an exception that is not a std::exception");
  }
}

}  // namespace ferry::detail
