// Test main: a peer when started with --ferry-test-peer, otherwise the doctest runner.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <sys/prctl.h>

#include <cstdio>

#include "ferry/worker/runtime.hpp"

namespace ferry::testing {
int run_peer_if_requested(int argc, char** argv, bool& was_peer);
}

namespace {
// How many test cases the run selected (-1: no run, e.g. --list-test-cases). ctest starts one
// test case per process by name; a name the filter cannot match (doctest_discover_tests
// splits names at ';') would otherwise run nothing and pass.
int g_selected = -1;

struct SelectedCount : doctest::IReporter {
  explicit SelectedCount(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats& s) override {
    g_selected = static_cast<int>(s.numTestCasesPassingFilters);
  }
  void test_case_start(const doctest::TestCaseData&) override {}
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};
REGISTER_LISTENER("ferry-selected-count", 1, SelectedCount);
}  // namespace

int main(int argc, char** argv) {
  // A pool's self-exec worker: runs the worker loop and exits.
  ferry::init(argc, argv);
  bool was_peer = false;
  const int peer_rc = ferry::testing::run_peer_if_requested(argc, argv, was_peer);
  if (was_peer) return peer_rc;
  // Orphaned grandchildren are re-parented to us, so leftover checks can see and reap them.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  doctest::Context ctx(argc, argv);
  const int rc = ctx.run();
  if (rc == 0 && g_selected == 0) {
    std::fprintf(stderr, "ferry tests: no test case matched the filter (';' in a test name?)\n");
    return 1;
  }
  return rc;
}
