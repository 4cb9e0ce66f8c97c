// The one admission path for local and remote workers (internal): a worker's Hello is checked
// against what this pool runs, and answered with a Welcome or the reason for refusing it.
//
// Threading: pure.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "ferry/shared/messages.hpp"

namespace ferry::detail {

struct AdmissionPolicy {
  std::uint64_t registry_hash = 0;
  std::size_t task_count = 0;
  std::uint32_t init_function = msg::Welcome::kNoFunction;
  Bytes init_args;
  std::chrono::milliseconds heartbeat_interval{500};
  std::chrono::milliseconds heartbeat_timeout{3000};
};

struct Admission {
  std::optional<msg::Welcome> welcome;  // admitted
  std::string reason;                   // refused: names both sides' values
};

Admission admit(const AdmissionPolicy& p, const msg::Hello& hello, std::uint32_t worker_id,
                bool remote);

}  // namespace ferry::detail
