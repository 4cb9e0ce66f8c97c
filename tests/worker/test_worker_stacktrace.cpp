// Stack traces of tasks that throw: recorded where the exception is thrown (the worker's
// __cxa_throw), symbolized in the worker (function, and file:line where there is debug
// info), carried in RemoteError, for single tasks and for items of chunked maps, in this
// program's own tasks and in a task library's.
#include <doctest/doctest.h>

#include <stdexcept>
#include <string>

#include "ferry/ferry.hpp"
#include "tasks_throw.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;

namespace {

[[gnu::noinline]] void own_throw_here(std::int64_t x) {
  if (x < 0) throw std::invalid_argument("negative " + std::to_string(x));  // kOwnThrowLine
}
constexpr int kOwnThrowLine = __LINE__ - 2;

std::int64_t negative_fails(std::int64_t x) {
  own_throw_here(x);
  return x;
}
FERRY_TASK(negative_fails);

bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

// Every pool of this binary names the library: libraries load before the first pool of a
// process starts, and the test cases may run in one process.
ferry::PoolOptions with_library(unsigned workers) {
  ferry::PoolOptions o;
  o.workers = workers;
  o.task_libraries = {FERRY_TASKS_THROW};
  return o;
}

// The first frame's line: where the exception was thrown.
std::string first_frame(const std::string& stack) {
  return stack.substr(0, stack.find('\n'));
}

ferry::FailureInfo failure_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ferry::RemoteError& e) {
    return e.info();
  }
  FAIL("no RemoteError");
  return {};
}

void check_names(const std::string& stack, std::string_view function, std::string_view file,
                 int line) {
  INFO("stack:\n" << stack);
  const std::string top = first_frame(stack);
  CHECK(top.rfind("#0 ", 0) == 0);
  CHECK(contains(top, function));
#ifdef FERRY_TEST_DEBUG_INFO
  CHECK(contains(top, std::string(file) + ":" + std::to_string(line)));
#else
  (void)file;
  (void)line;
#endif
  // The task's caller chain ends where ferry's machinery begins.
  CHECK_FALSE(contains(stack, "ferry::worker::"));
  CHECK_FALSE(contains(stack, "ferry::task_detail::"));
}

}  // namespace

TEST_SUITE("worker.stacktrace") {
  TEST_CASE("a task that throws from a named function: RemoteError's trace names it") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool(with_library(1));
      auto f = failure_of([&] { (void)pool.submit(negative_fails, -5).get(); });
      CHECK(f.type == "std::invalid_argument");
      check_names(f.stack, "own_throw_here", "test_worker_stacktrace.cpp", kOwnThrowLine);
      // The caller is in the trace too (the frame under the throw site).
      CHECK(contains(f.stack, "negative_fails"));
      // A task that succeeds afterwards on the same worker is unaffected.
      CHECK(pool.submit(negative_fails, 4).get() == 4);
    }
    leaks.verify();
  }

  TEST_CASE("an item of a chunked map that throws carries its own trace") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool(with_library(2));
      auto f = failure_of([&] {
        (void)pool.map(negative_fails, std::vector<std::int64_t>{1, 2, -3, 4}, 4);
      });
      CHECK(f.item == 2);
      check_names(f.stack, "own_throw_here", "test_worker_stacktrace.cpp", kOwnThrowLine);
    }
    leaks.verify();
  }

  TEST_CASE("a task library's throw is recorded and symbolized too") {
    ft::LeakCheck leaks;
    {
      ferry::Pool pool(with_library(1));
      auto one = failure_of([&] { (void)pool.submit(tasklib_throw::lib_odd_fails, 7).get(); });
      CHECK(one.type == "std::domain_error");
      check_names(one.stack, "tasklib_throw::lib_throw_here", "tasks_throw.cpp",
                  tasklib_throw::kThrowLine);
      // In a chunk the catch is inside the library (its own copy of ferry's task code).
      auto item = failure_of([&] {
        (void)pool.map(tasklib_throw::lib_odd_fails, std::vector<std::int64_t>{2, 4, 9}, 3);
      });
      CHECK(item.item == 2);
      check_names(item.stack, "tasklib_throw::lib_throw_here", "tasks_throw.cpp",
                  tasklib_throw::kThrowLine);
    }
    leaks.verify();
  }

  TEST_CASE("a task that crashes its worker leaves the crash's stack on the worker's stderr") {
    ft::LeakCheck leaks;
    // Through ferry-coordinator: a local worker's stderr lines reach the coordinator's.
    auto r = ft::run(FERRY_COORDINATOR_EXE,
                     {"-w", "1", "--max-retries", "0", "--tasks", FERRY_TASKS_THROW, "map",
                      "lib_segfaults", "--items", "7"},
                     60s);
    INFO("stderr:\n" << r.err);
    CHECK(r.status.code == 1);
    CHECK(contains(r.err, ") died: "));  // reported as the worker's death, as before
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    MESSAGE("sanitizer build: the sanitizer's own report stands in for ferry's crash trace");
#else
    CHECK(contains(r.err, "died: signal 11 (SIGSEGV)"));  // still dies of its signal
    CHECK(contains(r.err, "crashed: signal 11 (SIGSEGV) at address 0x0; stack:"));
    const auto at = r.err.find("] #0 ");
    REQUIRE(at != std::string::npos);
    const std::string top = r.err.substr(at, r.err.find('\n', at) - at);
    CHECK(contains(top, "tasklib_throw::lib_fault_here"));
#ifdef FERRY_TEST_DEBUG_INFO
    CHECK(contains(top, "tasks_throw.cpp:" + std::to_string(tasklib_throw::kFaultLine)));
#endif
    CHECK(contains(r.err, "] #1 tasklib_throw::lib_segfaults("));
    CHECK_FALSE(contains(r.err, "raw addresses"));  // symbolized in time
#endif
    leaks.verify();
  }
}
