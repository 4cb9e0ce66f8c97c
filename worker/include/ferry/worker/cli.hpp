// ferry-worker's command line (parsed here so the executable's main stays thin).
#pragma once

namespace ferry::worker {

// Runs ferry-worker with argv; returns the process exit status.
int run_cli(int argc, char** argv);

}  // namespace ferry::worker
