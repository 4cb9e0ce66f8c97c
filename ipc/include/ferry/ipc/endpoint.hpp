// Endpoint strings name where a channel lives:
//   pipe:R,W        inherited descriptors (read fd, write fd), between a parent and a child
//   shm://NAME      shared-memory rings in segment ferry.<session>.NAME
//   ipc://PATH      ZeroMQ over a Unix socket
//   tcp://HOST:PORT ZeroMQ over TCP
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ferry/shared/error.hpp"

namespace ferry::ipc {

enum class Scheme { pipe, shm, zmq_ipc, zmq_tcp };

struct Endpoint {
  Scheme scheme = Scheme::pipe;
  std::string address;  // what follows "pipe:" / "shm://" / the whole zmq address

  // InvalidArgument naming what is wrong: no known scheme, no address, or for tcp:// a
  // missing host or a port that is not "*" or a number in 0..65535.
  static Result<Endpoint> parse(std::string_view text);
  std::string str() const;
};

// The parts of "tcp://HOST:PORT". HOST as written: a name, an IPv4 address, an IPv6 address
// in brackets ("[::1]"), an interface or "*"; port nullopt for "*" (bind: any free port).
struct TcpAddress {
  std::string host;
  std::optional<std::uint16_t> port;
};
Result<TcpAddress> parse_tcp_address(std::string_view address);

}  // namespace ferry::ipc
