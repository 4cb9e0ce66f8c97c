// The one place that picks a transport from an endpoint string (see endpoint.hpp).
//   pipe:R,W    -> PipeChannel over inherited descriptors R (read) and W (write)
//   shm://NAME  -> shared-memory rings (bind creates the segment, connect opens it)
//   ipc://, tcp:// -> ZeroMQ (bind: ROUTER side, connect: DEALER side)
#pragma once

#include <string_view>

#include "ferry/ipc/channel.hpp"
#include "ferry/ipc/endpoint.hpp"

namespace ferry::ipc {

Result<ChannelPtr> open_channel(std::string_view endpoint, Role role, ChannelOptions opt = {});

}  // namespace ferry::ipc
