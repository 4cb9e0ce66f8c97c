// ferry-coordinator: parse, register the demo tour, run.
#include "ferry/coordinator/cli.hpp"
#include "ferry/demos/demos.hpp"
#include "ferry/worker/runtime.hpp"

int main(int argc, char** argv) {
  // Local workers are copies of this executable: in one of them this runs the worker and exits.
  ferry::init(argc, argv);
  ferry::coordinator::DemoRegistry demos;
  ferry::demos::register_all(demos);
  return ferry::coordinator::run_cli(argc, argv, demos);
}
