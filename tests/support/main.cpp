// Test main: a peer when started with --ferry-test-peer, otherwise the doctest runner.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <sys/prctl.h>

#include "ferry/worker/runtime.hpp"

namespace ferry::testing {
int run_peer_if_requested(int argc, char** argv, bool& was_peer);
}

int main(int argc, char** argv) {
  // A pool's self-exec worker: runs the worker loop and exits.
  ferry::init(argc, argv);
  bool was_peer = false;
  const int peer_rc = ferry::testing::run_peer_if_requested(argc, argv, was_peer);
  if (was_peer) return peer_rc;
  // Orphaned grandchildren are re-parented to us, so leftover checks can see and reap them.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
