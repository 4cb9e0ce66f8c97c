// ferry-coordinator: parse, register the demo tour, run.
#include "ferry/coordinator/cli.hpp"
#include "ferry/demos/demos.hpp"
#include "ferry/worker/runtime.hpp"

#include <iostream>

int main(int argc, char** argv) {
  try {
    // Local workers are copies of this executable: in one of them this runs the worker and
    // exits.
    ferry::init(argc, argv);
    ferry::coordinator::DemoRegistry demos;
    ferry::demos::register_all(demos);
    return ferry::coordinator::run_cli(argc, argv, demos);
  } catch (const std::exception& e) {
    // Out of memory or threads: a message and a failure status, not an abort.
    std::cerr << "ferry-coordinator: " << e.what() << "\n";
    return 1;
  }
}
