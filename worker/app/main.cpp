// ferry-worker: parse and run the worker runtime. A pool that spawns ferry-worker as its
// worker program hands it the endpoint in the environment (ferry::init handles that case).
#include "ferry/worker/cli.hpp"
#include "ferry/worker/runtime.hpp"

int main(int argc, char** argv) {
  ferry::init(argc, argv);
  return ferry::worker::run_cli(argc, argv);
}
