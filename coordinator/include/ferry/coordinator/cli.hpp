// ferry-coordinator's command line (parsed here so the executable's main stays thin).
#pragma once

#include "ferry/coordinator/demo.hpp"

namespace ferry::coordinator {

// Runs ferry-coordinator with argv; returns the process exit status
// (0 ok, 1 failures, 2 usage error, 130 interrupted). A program embeds the command line this
// way to offer `map`/`tasks` over its own tasks (call ferry::init first: its local workers
// are copies of the program):  return ferry::coordinator::run_cli(argc, argv);
int run_cli(int argc, char** argv, const DemoRegistry& demos = DemoRegistry{});

}  // namespace ferry::coordinator
