// ferry-coordinator's command line (parsed here so the executable's main stays thin).
#pragma once

#include "ferry/coordinator/demo.hpp"

namespace ferry::coordinator {

// Runs ferry-coordinator with argv; returns the process exit status
// (0 ok, 1 failures, 2 usage error, 130 interrupted).
int run_cli(int argc, char** argv, const DemoRegistry& demos);

}  // namespace ferry::coordinator
