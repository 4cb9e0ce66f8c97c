// Helpers of the ferry-bench CLI tests: run a suite with --quick --json, read its figures,
// check the expected ones are there and positive. The tests run on the caller's thread.
#pragma once

#include <doctest/doctest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "testing.hpp"

namespace bench_test {

// The path of prog on $PATH, or "" if it is not there.
inline std::string on_path(const std::string& prog) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const auto cand = (dir.empty() ? "." : dir) + "/" + prog;
    if (::access(cand.c_str(), X_OK) == 0) return cand;
  }
  return {};
}

// One figure of a --json line: value is the median of `runs` runs, min/max their spread.
struct Figure {
  double value = 0, min = 0, max = 0;
  int runs = 0;
};

struct BenchRun {
  ferry::testing::RunResult result;
  std::map<std::string, double> figures;  // name -> value, one per JSON line
};

// name -> value, min, max, runs of each JSON line of a run's output.
inline std::map<std::string, Figure> spread_of(const std::string& out) {
  std::map<std::string, Figure> spread;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    REQUIRE_MESSAGE(!j.is_discarded(), "not JSON: " << line);
    spread[j.at("name").get<std::string>()] = {j.at("value").get<double>(),
                                               j.at("min").get<double>(), j.at("max").get<double>(),
                                               j.at("runs").get<int>()};
  }
  return spread;
}

// `ferry-bench SUITE --quick --json [extra...]`: it must finish in time, exit 0 and print only
// JSON lines with a name, a value, a unit, min, max and runs.
inline BenchRun run_quick_json(const std::string& exe, const std::string& suite,
                               const std::vector<std::string>& extra = {},
                               std::chrono::seconds timeout = std::chrono::seconds(110)) {
  BenchRun b;
  std::vector<std::string> args{suite, "--quick", "--json"};
  args.insert(args.end(), extra.begin(), extra.end());
  b.result = ferry::testing::run(exe, args, timeout);
  REQUIRE_MESSAGE(!b.result.timed_out, b.result.err);
  REQUIRE_MESSAGE(b.result.status.code == 0, b.result.err);
  std::istringstream lines(b.result.out);
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    REQUIRE_MESSAGE(!j.is_discarded(), "not JSON: " << line);
    REQUIRE(j.contains("unit"));
    b.figures[j.at("name").get<std::string>()] = j.at("value").get<double>();
  }
  return b;
}

// Every expected figure is present and positive.
inline void check_positive(const std::map<std::string, double>& got,
                           const std::vector<std::string>& expected) {
  for (const auto& name : expected) {
    auto it = got.find(name);
    CHECK_MESSAGE(it != got.end(), "missing " << name);
    if (it != got.end()) CHECK_MESSAGE(it->second > 0, name << " = " << it->second);
  }
}

}  // namespace bench_test
