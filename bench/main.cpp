// ferry-bench: measures ferry's channels, pool and remote pool against peer baselines run in
// the same invocation, and prints ratios (see BENCHMARKS.md). Thin: parse, call the suites.
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
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
  // `ferry-bench plot RUN.json OUTDIR`: a step of its own, after a run, with its own options.
  if (argc >= 2 && std::string(argv[1]) == "plot")
    return ferry::bench::plot_main(argc - 1, argv + 1);
  std::string suite = "all";
  bool quick = false;
  bool json = false;
  int repeat = 1;
  std::string json_file;
  CLI::App app{"ferry-bench: ferry against its peers, measured in one run", "ferry-bench"};
  app.footer("ferry-bench plot RUN.json OUTDIR: SVG charts of a --json run (ferry-bench plot -h)");
  app.add_option("suite", suite, "channels | sync | pool | remote | all")
      ->check(CLI::IsMember({"channels", "sync", "pool", "remote", "all"}));
  app.add_flag("--quick", quick, "short runs (under 30 s per suite)");
  app.add_flag("--json", json,
               "one JSON object per line: {name, value, unit, min, max, runs}, printed at the end");
  app.add_option("--repeat", repeat,
                 "run the suites N times; each figure is the median of its runs, with min/max")
      ->check(CLI::Range(1, 100));
  app.add_option("--json-file", json_file,
                 "also write the --json lines to this file (for `ferry-bench plot`), whatever "
                 "is printed");
  if (auto code = ferry::cli::parse(app, argc, argv)) return *code;

  ferry::bench::Config cfg{quick, self_path()};
  std::vector<ferry::bench::Report> runs;
  int status = ferry::cli::kExitOk;
  for (int run = 0; run < repeat && status == ferry::cli::kExitOk; ++run) {
    if (repeat > 1) std::fprintf(stderr, "ferry-bench: run %d of %d\n", run + 1, repeat);
    auto& report = runs.emplace_back();
    try {
      if (suite == "channels" || suite == "all") ferry::bench::run_channels(cfg, report);
      if (suite == "sync" || suite == "all") {
        for (auto& r : ferry::bench::run_sync_bench(quick))
          report.add(r.name, r.value, r.unit);
      }
      if (suite == "pool" || suite == "all") ferry::bench::run_pool(cfg, report);
      if (suite == "remote" || suite == "all") ferry::bench::run_remote(cfg, report);
    } catch (const std::exception& e) {
      // The figures measured so far are still printed: a late failure keeps the early ones.
      std::fprintf(stderr, "ferry-bench: %s\n", e.what());
      status = ferry::cli::kExitFailed;
    }
  }
  const auto report = ferry::bench::Report::combine(runs);
  if (!json_file.empty()) {
    std::FILE* f = std::fopen(json_file.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "ferry-bench: cannot write %s: %s\n", json_file.c_str(),
                   std::strerror(errno));
      status = ferry::cli::kExitFailed;
    } else {
      report.print_json(f);
      std::fclose(f);
    }
  }
  if (json) {
    report.print_json();
    return status;
  }
  report.print_table();
  ferry::bench::print_channel_targets(report);
  ferry::bench::print_pool_targets(report);
  ferry::bench::print_remote_targets(report);
  return status;
}
