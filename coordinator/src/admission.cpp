#include "admission.hpp"

#include <unordered_map>

#include "ferry/shared/session.hpp"

namespace ferry::detail {

std::optional<std::string> version_mismatch(const msg::Hello& hello) {
  if (hello.protocol_version == kProtocolVersion) return std::nullopt;
  return "protocol version mismatch: worker speaks " + std::to_string(hello.protocol_version) +
         ", coordinator " + std::to_string(kProtocolVersion);
}

Admission admit(const AdmissionPolicy& p, const msg::Hello& hello, const msg::Offer& offer,
                std::uint32_t worker_id, bool remote) {
  Admission a;
  if (auto why = version_mismatch(hello)) {
    a.reason = *why;
    return a;
  }
  std::unordered_map<std::string_view, std::uint32_t> theirs;
  theirs.reserve(offer.tasks.size());
  for (std::uint32_t i = 0; i < offer.tasks.size(); ++i)
    theirs.emplace(offer.tasks[i].name, i);
  msg::Welcome w;
  w.task_map.assign(p.tasks.size(), msg::Welcome::kNoFunction);
  a.serves.assign(p.tasks.size(), false);
  for (std::uint32_t i = 0; i < p.tasks.size(); ++i) {
    const msg::TaskOffer& mine = p.tasks[i];
    auto it = theirs.find(mine.name);
    if (it == theirs.end()) continue;
    const msg::TaskOffer& other = offer.tasks[it->second];
    if (other.signature_hash != mine.signature_hash) {
      a.mismatches.emplace_back(i, "task '" + mine.name + "' has another signature there: worker " +
                                       other.signature + ", this program " + mine.signature);
      continue;
    }
    w.task_map[i] = it->second;
    a.serves[i] = true;
  }
  if (p.init_function != msg::Welcome::kNoFunction && !a.serves.at(p.init_function)) {
    a.reason = "the pool's initializer '" + p.tasks.at(p.init_function).name +
               "' is not a task this worker serves (load its task library there)";
    return a;
  }
  w.worker_id = worker_id;
  w.session = SessionId::current().str();
  w.init_function = p.init_function;
  w.init_args = p.init_args;
  if (!remote && p.object_threshold > 0) {
    w.object_threshold = p.object_threshold;
    w.object_prefix = p.object_prefix(worker_id);
  }
  if (remote) {
    w.heartbeat_ms = static_cast<std::uint32_t>(p.heartbeat_interval.count());
    w.heartbeat_timeout_ms = static_cast<std::uint32_t>(p.heartbeat_timeout.count());
  }
  a.welcome = std::move(w);
  return a;
}

}  // namespace ferry::detail
