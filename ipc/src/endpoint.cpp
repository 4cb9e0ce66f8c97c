#include "ferry/ipc/endpoint.hpp"

namespace ferry::ipc {

Result<Endpoint> Endpoint::parse(std::string_view text) {
  auto starts = [&](std::string_view p) { return text.substr(0, p.size()) == p; };
  Endpoint e;
  if (starts("pipe:")) {
    e.scheme = Scheme::pipe;
    e.address = text.substr(5);
  } else if (starts("shm://")) {
    e.scheme = Scheme::shm;
    e.address = text.substr(6);
  } else if (starts("ipc://")) {
    e.scheme = Scheme::zmq_ipc;
    e.address = text;
  } else if (starts("tcp://")) {
    e.scheme = Scheme::zmq_tcp;
    e.address = text;
  } else {
    return Error{
        Errc::invalid_argument,
        "endpoint '" + std::string(text) + "' has no known scheme (pipe:, shm://, ipc://, tcp://)"};
  }
  if (e.address.empty() || e.address == "ipc://" || e.address == "tcp://") {
    return Error{Errc::invalid_argument, "endpoint '" + std::string(text) + "' names no address"};
  }
  return e;
}

std::string Endpoint::str() const {
  switch (scheme) {
    case Scheme::pipe:
      return "pipe:" + address;
    case Scheme::shm:
      return "shm://" + address;
    case Scheme::zmq_ipc:
    case Scheme::zmq_tcp:
      return address;
  }
  return address;
}

}  // namespace ferry::ipc
