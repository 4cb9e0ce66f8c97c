// For test peers that speak the worker protocol themselves (to count batches, send garbage,
// forge results): the opening a real worker makes.
//
// Threading: used by one thread, on a channel the caller owns.
#pragma once

#include <unistd.h>

#include <string>

#include "ferry/ipc/channel.hpp"
#include "ferry/shared/codec.hpp"
#include "ferry/shared/messages.hpp"
#include "ferry/shared/task.hpp"

namespace ferry::testing {

// Sends a Hello (this pid, `host`) and an Offer of every task in the frozen registry.
inline bool send_hello_and_offer(ipc::Channel& ch, std::string host = {}) {
  const auto& reg = TaskRegistry::instance();
  msg::Hello h;
  h.pid = ::getpid();
  h.host = std::move(host);
  h.registry_hash = reg.hash();
  msg::Offer offer;
  for (const auto& e : reg.entries())
    offer.tasks.push_back({e.name, e.signature, e.signature_hash});
  return ch.send(make_frame(MessageKind::hello, h)) &&
         ch.send(make_frame(MessageKind::offer, offer));
}

}  // namespace ferry::testing
