// ferry-bench: measures ferry's channels, pool and remote pool against peer baselines run in
// the same process invocation, and prints ratios (see BENCHMARKS.md).
#include <iostream>
#include <string>

#include "ferry/shared/cli_support.hpp"

int main(int argc, char** argv) {
  std::string suite = "all";
  bool quick = false;
  bool json = false;
  CLI::App app{"ferry-bench: ferry against its peers, measured in one run", "ferry-bench"};
  app.add_option("suite", suite, "channels | pool | remote | all")
      ->check(CLI::IsMember({"channels", "pool", "remote", "all"}));
  app.add_flag("--quick", quick, "short runs (under 30 s per suite)");
  app.add_flag("--json", json, "one JSON object per line: {name, value, unit}");
  if (auto code = ferry::cli::parse(app, argc, argv)) return *code;
  std::cerr << "ferry-bench: no suite is built yet\n";
  return ferry::cli::kExitFailed;
}
