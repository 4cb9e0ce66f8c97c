#include "tasks_a.hpp"

#include <unistd.h>

#include <numeric>

#include "ferry/shared/task.hpp"

namespace tasklib {

std::int64_t lib_triple(std::int64_t x) {
  return 3 * x;
}

std::int64_t lib_pid(std::int64_t) {
  return ::getpid();
}

Digest digest(std::string name, std::vector<std::int64_t> v) {
  return {std::move(name), std::accumulate(v.begin(), v.end(), std::int64_t{0}),
          static_cast<std::int64_t>(v.size())};
}

Digest merge(Digest a, Digest b) {
  return {a.name + "+" + b.name, a.sum + b.sum, a.count + b.count};
}

FERRY_TASK(lib_triple);
FERRY_TASK(lib_pid);
FERRY_TASK(digest);
FERRY_TASK(merge);

}  // namespace tasklib
