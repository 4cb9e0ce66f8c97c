#include "ferry/demos/demos.hpp"

namespace ferry::demos {

void register_all(coordinator::DemoRegistry& /*registry*/) {
  // Demos are added here as the layers they use land (see the demo tour issue).
}

}  // namespace ferry::demos
