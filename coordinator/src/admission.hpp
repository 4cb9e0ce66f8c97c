// The one admission path for local and remote workers (internal): a worker's Hello and Offer
// are checked against what this pool runs, and answered with a Welcome (which maps the pool's
// task numbers to the worker's) or the reason for refusing it.
//
// Threading: pure.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "ferry/shared/messages.hpp"

namespace ferry::detail {

struct AdmissionPolicy {
  std::vector<msg::TaskOffer> tasks;  // the pool's tasks, by its task number
  std::uint32_t init_function = msg::Welcome::kNoFunction;
  Bytes init_args;
  std::chrono::milliseconds heartbeat_interval{500};
  std::chrono::milliseconds heartbeat_timeout{3000};
  // Local workers only: results above this many bytes come back as shared-memory objects
  // named object_prefix(worker id) + a number (0: never).
  std::uint64_t object_threshold = 0;
  std::string object_prefix_base;  // "ferry.<session>.res<pool>-w"
  std::string object_prefix(std::uint32_t worker_id) const {
    return object_prefix_base + std::to_string(worker_id) + "-";
  }
};

struct Admission {
  std::optional<msg::Welcome> welcome;  // admitted
  std::string reason;                   // refused: names both sides' values
  std::vector<bool> serves;             // admitted: by pool task number
  // Tasks it offers under a name the pool has, with another signature (never sent to it):
  // the pool's task number, and a line naming the task and both signatures.
  std::vector<std::pair<std::uint32_t, std::string>> mismatches;
};

// The reason to refuse a Hello at once (another protocol version), before its Offer.
std::optional<std::string> version_mismatch(const msg::Hello& hello);

Admission admit(const AdmissionPolicy& p, const msg::Hello& hello, const msg::Offer& offer,
                std::uint32_t worker_id, bool remote);

}  // namespace ferry::detail
