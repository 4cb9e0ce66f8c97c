// Test task library A (libferry_test_tasks_a.so): what a user's own task library looks like.
#pragma once

#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace tasklib {

// A struct result (and argument), serialized with cereal.
struct Digest {
  std::string name;
  std::int64_t sum = 0;
  std::int64_t count = 0;
  template <class A>
  void serialize(A& ar) {
    ar(cereal::make_nvp("name", name), cereal::make_nvp("sum", sum),
       cereal::make_nvp("count", count));
  }
};

std::int64_t lib_triple(std::int64_t x);                       // 3x
std::int64_t lib_pid(std::int64_t ignored);                    // the worker's pid
Digest digest(std::string name, std::vector<std::int64_t> v);  // sum and count of v
Digest merge(Digest a, Digest b);                              // sums and counts added

}  // namespace tasklib
