// The demo tour's registry: each demo is a named lesson with a driver that returns an exit
// status (0 when its invariant held). The demos/ folder fills a registry; ferry-coordinator's
// `demo list | demo NAME | demo all` runs from it.
//
// Threading: build the registry before running; running is single-threaded at this level.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "ferry/coordinator/options.hpp"

namespace ferry::coordinator {

struct Demo {
  std::string name;
  std::string lesson;  // one line: what it teaches and what to look at
  std::function<int(const Options&)> run;
};

class DemoRegistry {
 public:
  void add(Demo d) { demos_.push_back(std::move(d)); }
  const std::vector<Demo>& all() const noexcept { return demos_; }
  const Demo* find(const std::string& name) const noexcept {
    for (const auto& d : demos_) {
      if (d.name == name) return &d;
    }
    return nullptr;
  }

 private:
  std::vector<Demo> demos_;
};

}  // namespace ferry::coordinator
