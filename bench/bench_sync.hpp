// Lock acquire/release rates: ferry::ipc::Lock against Boost.Interprocess interprocess_mutex
// (not robust) on the same workload, uncontended (one thread) and contended (two processes).
//
// The contended case re-executes /proc/self/exe with kSyncBenchPeerArg as argv[1], so the
// executable's main() must hand that over before parsing its own options:
//   if (argc > 1 && std::string_view(argv[1]) == ferry::bench::kSyncBenchPeerArg)
//     return ferry::bench::run_sync_bench_peer(argc, argv);
//
// The contended figures count both processes' operations over the wall time of the run; they
// measure contention only while both processes are on a CPU at once (on a loaded machine one
// may run mostly alone, and the figure approaches the uncontended rate).
//
// Threading: run from one thread; it starts and reaps its own peer processes.
#pragma once

#include <string>
#include <vector>

namespace ferry::bench {

struct SyncBenchResult {
  std::string name;  // sync.lock.* / baseline.boost-ipc-mutex.*
  double value = 0;
  std::string unit;  // "ops/s"
};

inline constexpr const char* kSyncBenchPeerArg = "--sync-bench-peer";

// quick: shorter runs (well under a second each). Results are appended in a fixed order.
void run_sync_bench(bool quick, std::vector<SyncBenchResult>& out);
std::vector<SyncBenchResult> run_sync_bench(bool quick);

// The peer side of the contended runs (argv[1] == kSyncBenchPeerArg). Returns an exit code.
int run_sync_bench_peer(int argc, char** argv);

}  // namespace ferry::bench
