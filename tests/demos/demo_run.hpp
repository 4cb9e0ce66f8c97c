// Helpers of the demo-tour tests: run `ferry-coordinator ... demo NAME` and pick numbers out of
// what it printed.
//
// The coordinator is started with FERRY_SESSION set to this test process's session, so every
// segment it makes is named ferry.<our session>.* and LeakCheck sees any it leaves behind.
#pragma once

#include <doctest/doctest.h>
#include <stdlib.h>

#include <chrono>
#include <regex>
#include <string>
#include <vector>

#include "ferry/shared/session.hpp"
#include "testing.hpp"

namespace demo_test {

inline ferry::testing::RunResult run_demo(const std::string& name,
                                          std::vector<std::string> options = {"-w", "2"}) {
  ::setenv(ferry::kSessionEnv, ferry::SessionId::current().str().c_str(), 1);
  options.push_back("demo");
  options.push_back(name);
  auto r = ferry::testing::run(FERRY_COORDINATOR_EXE, options, std::chrono::seconds(90));
  INFO("demo " << name << " printed:\n" << r.out << "\nand on stderr:\n" << r.err);
  CHECK_FALSE(r.timed_out);
  CHECK(r.status.code == 0);
  CHECK(r.out.find("[FAIL]") == std::string::npos);
  return r;
}

// Every match of pattern in text, each as its captured groups (group 1 first).
inline std::vector<std::vector<std::string>> matches(const std::string& text,
                                                     const std::string& pattern) {
  std::vector<std::vector<std::string>> out;
  const std::regex re(pattern);
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator();
       ++it) {
    std::vector<std::string> groups;
    for (std::size_t i = 1; i < it->size(); ++i)
      groups.push_back((*it)[i].str());
    out.push_back(std::move(groups));
  }
  return out;
}

// The numbers captured by the first match of pattern (empty if it does not match).
inline std::vector<long long> numbers(const std::string& text, const std::string& pattern) {
  std::vector<long long> out;
  const auto m = matches(text, pattern);
  if (m.empty()) return out;
  for (const auto& g : m.front())
    out.push_back(std::stoll(g));
  return out;
}

inline std::size_t count_of(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1))
    ++n;
  return n;
}

// The tour, in order (as `demo list` and `demo all` show it).
inline const std::vector<std::string> kTour{
    "countdown",    "race",        "lock",           "rlock",        "deadlock", "semaphore",
    "event",        "condition",   "barrier",        "local-data",   "pipe",     "queue",
    "ghostbusters", "channel",     "pool",           "cpu-bound",    "io-bound", "cooperative",
    "supervisor",   "distributed", "pipeline-graph", "object-store", "actors"};

}  // namespace demo_test
