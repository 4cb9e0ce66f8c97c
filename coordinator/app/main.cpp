// ferry-coordinator: parse, register the demo tour, run.
#include "ferry/coordinator/cli.hpp"
#include "ferry/demos/demos.hpp"

int main(int argc, char** argv) {
  ferry::coordinator::DemoRegistry demos;
  ferry::demos::register_all(demos);
  return ferry::coordinator::run_cli(argc, argv, demos);
}
