#include "admission.hpp"

#include <cstdio>

#include "ferry/shared/session.hpp"

namespace ferry::detail {

Admission admit(const AdmissionPolicy& p, const msg::Hello& hello, std::uint32_t worker_id,
                bool remote) {
  Admission a;
  if (hello.protocol_version != kProtocolVersion) {
    a.reason = "protocol version mismatch: worker speaks " +
               std::to_string(hello.protocol_version) + ", coordinator " +
               std::to_string(kProtocolVersion);
    return a;
  }
  if (hello.registry_hash != p.registry_hash) {
    char buf[200];
    std::snprintf(buf, sizeof buf,
                  "task registry mismatch: worker %016llx, coordinator %016llx (%zu tasks); "
                  "build both from the same task set",
                  static_cast<unsigned long long>(hello.registry_hash),
                  static_cast<unsigned long long>(p.registry_hash), p.task_count);
    a.reason = buf;
    return a;
  }
  msg::Welcome w;
  w.worker_id = worker_id;
  w.session = SessionId::current().str();
  w.init_function = p.init_function;
  w.init_args = p.init_args;
  if (remote) {
    w.heartbeat_ms = static_cast<std::uint32_t>(p.heartbeat_interval.count());
    w.heartbeat_timeout_ms = static_cast<std::uint32_t>(p.heartbeat_timeout.count());
  }
  a.welcome = std::move(w);
  return a;
}

}  // namespace ferry::detail
