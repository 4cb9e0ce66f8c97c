// ferry-bench: measures ferry's channels, pool and remote pool against peer baselines run in
// the same invocation, and prints ratios (see BENCHMARKS.md). Thin: parse, call the suites.
#include <unistd.h>

#include <array>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_sync.hpp"
#include "ferry/shared/cli_support.hpp"
#include "ferry/worker/runtime.hpp"
#include "harness.hpp"

namespace {
std::string self_path() {
  std::array<char, 4096> buf{};
  const auto n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  return n > 0 ? std::string(buf.data(), static_cast<std::size_t>(n)) : std::string("ferry-bench");
}
}  // namespace

int main(int argc, char** argv) {
  // The pool suite's workers are this executable: in a worker, this runs the worker and exits.
  ferry::init(argc, argv);
  if (argc > 1 && std::string(argv[1]) == ferry::bench::kSyncBenchPeerArg) {
    return ferry::bench::run_sync_bench_peer(argc, argv);
  }
  if (argc >= 3 && std::string(argv[1]) == "--bench-peer") {
    const std::vector<std::string> args(argv + 2, argv + argc);
    return args[0] == "primes" ? ferry::bench::primes_peer(args) : ferry::bench::channel_peer(args);
  }
  std::string suite = "all";
  bool quick = false;
  bool json = false;
  CLI::App app{"ferry-bench: ferry against its peers, measured in one run", "ferry-bench"};
  app.add_option("suite", suite, "channels | sync | pool | remote | all")
      ->check(CLI::IsMember({"channels", "sync", "pool", "remote", "all"}));
  app.add_flag("--quick", quick, "short runs (under 30 s per suite)");
  app.add_flag("--json", json, "one JSON object per line: {name, value, unit}");
  if (auto code = ferry::cli::parse(app, argc, argv)) return *code;

  ferry::bench::Config cfg{quick, self_path()};
  ferry::bench::Report report(json);
  try {
    if (suite == "channels" || suite == "all") ferry::bench::run_channels(cfg, report);
    if (suite == "sync" || suite == "all") {
      for (auto& r : ferry::bench::run_sync_bench(quick))
        report.add(r.name, r.value, r.unit);
    }
    if (suite == "pool" || suite == "all") ferry::bench::run_pool(cfg, report);
    if (suite == "remote" || suite == "all") ferry::bench::run_remote(cfg, report);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ferry-bench: %s\n", e.what());
    return ferry::cli::kExitFailed;
  }
  report.print_table();
  if (!json) {
    ferry::bench::print_pool_targets(report);
    ferry::bench::print_remote_targets(report);
  }
  return ferry::cli::kExitOk;
}
