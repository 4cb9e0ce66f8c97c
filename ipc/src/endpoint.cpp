#include "ferry/ipc/endpoint.hpp"

#include <charconv>

namespace ferry::ipc {
namespace {

Error bad_tcp(std::string_view text, const std::string& why) {
  return Error{Errc::invalid_argument, "endpoint '" + std::string(text) + "': " + why};
}

}  // namespace

Result<TcpAddress> parse_tcp_address(std::string_view text) {
  std::string_view rest = text.substr(0, 6) == "tcp://" ? text.substr(6) : text;
  // zmq's "tcp://SOURCE;HOST:PORT" form: the address that is reached is the one after ';'.
  if (const auto semi = rest.rfind(';'); semi != std::string_view::npos) {
    rest = rest.substr(semi + 1);
  }
  std::size_t colon = std::string_view::npos;
  if (!rest.empty() && rest.front() == '[') {
    const auto close = rest.find(']');
    if (close == std::string_view::npos) return bad_tcp(text, "'[' without a closing ']'");
    colon = close + 1 < rest.size() && rest[close + 1] == ':' ? close + 1 : std::string_view::npos;
  } else {
    colon = rest.rfind(':');
  }
  if (colon == std::string_view::npos) return bad_tcp(text, "no port (tcp://HOST:PORT)");
  TcpAddress a;
  a.host = std::string(rest.substr(0, colon));
  const std::string_view port = rest.substr(colon + 1);
  if (a.host.empty() || a.host == "[]") return bad_tcp(text, "no host (tcp://HOST:PORT)");
  if (port == "*") return a;  // bind: any free port
  // Checked here: zmq itself takes the number modulo 65536 (70000 would become 4464).
  unsigned long value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || value > 65535) {
    return bad_tcp(text, "port '" + std::string(port) + "' is not a number in 0..65535");
  }
  a.port = static_cast<std::uint16_t>(value);
  return a;
}

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
  if (e.scheme == Scheme::zmq_tcp) {
    if (auto tcp = parse_tcp_address(text); !tcp) return std::move(tcp).error();
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
