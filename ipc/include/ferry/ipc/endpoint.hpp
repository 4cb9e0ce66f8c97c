// Endpoint strings name where a channel lives:
//   pipe:R,W        inherited descriptors (read fd, write fd), between a parent and a child
//   shm://NAME      shared-memory rings in segment ferry.<session>.NAME
//   ipc://PATH      ZeroMQ over a Unix socket
//   tcp://HOST:PORT ZeroMQ over TCP
#pragma once

#include <string>
#include <string_view>

#include "ferry/shared/error.hpp"

namespace ferry::ipc {

enum class Scheme { pipe, shm, zmq_ipc, zmq_tcp };

struct Endpoint {
  Scheme scheme = Scheme::pipe;
  std::string address;  // what follows "pipe:" / "shm://" / the whole zmq address

  static Result<Endpoint> parse(std::string_view text);
  std::string str() const;
};

}  // namespace ferry::ipc
