// ferry-worker: parse and run the worker runtime.
#include "ferry/worker/cli.hpp"

int main(int argc, char** argv) {
  return ferry::worker::run_cli(argc, argv);
}
