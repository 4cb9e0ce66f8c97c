// The demo tour (see README "Demos"): every classic concurrency lesson done with processes.
#pragma once

#include "ferry/coordinator/demo.hpp"

namespace ferry::demos {

// Adds every demo, in tour order.
void register_all(coordinator::DemoRegistry& registry);

}  // namespace ferry::demos
