#include "ferry/ipc/factory.hpp"

#include <charconv>

#include "ferry/ipc/curve.hpp"
#include "ferry/ipc/pipe_channel.hpp"
#include "ferry/ipc/shm_channel.hpp"
#include "ferry/ipc/zmq_channel.hpp"

namespace ferry::ipc {

namespace {
Result<ChannelPtr> open_pipe(const Endpoint& ep, ChannelOptions opt) {
  const std::string& a = ep.address;
  const auto comma = a.find(',');
  int r = -1;
  int w = -1;
  const char* b = a.data();
  const char* e = a.data() + a.size();
  bool ok = false;
  if (comma == std::string::npos) {
    ok = std::from_chars(b, e, r).ptr == e;  // one duplex descriptor (a socket)
    w = r;
  } else {
    ok = std::from_chars(b, b + comma, r).ptr == b + comma &&
         std::from_chars(b + comma + 1, e, w).ptr == e;
  }
  if (!ok || r < 0 || w < 0) {
    return Error{Errc::invalid_argument, "pipe endpoint '" + ep.str() + "' is not pipe:R,W"};
  }
  return ChannelPtr(std::make_unique<PipeChannel>(r, w, opt));
}
}  // namespace

Result<ChannelPtr> open_channel(std::string_view endpoint, Role role, ChannelOptions opt) {
  auto ep = Endpoint::parse(endpoint);
  if (!ep) return std::move(ep).error();
  switch (ep->scheme) {
    case Scheme::pipe:
      return open_pipe(*ep, opt);
    case Scheme::shm: {
      ShmOptions so;
      so.max_frame = opt.max_frame;
      auto c =
          role == Role::bind ? ShmChannel::create(ep->address, so) : ShmChannel::open(endpoint, so);
      if (!c) return std::move(c).error();
      return ChannelPtr(std::move(*c));
    }
    case Scheme::zmq_ipc:
    case Scheme::zmq_tcp: {
      ZmqOptions zo;
      if (!opt.keys_dir.empty()) {
        if (role == Role::bind) {
          auto k = load_curve_server(opt.keys_dir);
          if (!k) return std::move(k).error();
          zo.curve_server = std::move(*k);
        } else {
          auto k = load_curve_client(opt.keys_dir);
          if (!k) return std::move(k).error();
          zo.curve_client = std::move(*k);
        }
      }
      auto c =
          role == Role::bind ? ZmqChannel::bind(*ep, opt, zo) : ZmqChannel::connect(*ep, opt, zo);
      if (!c) return std::move(c).error();
      return ChannelPtr(std::move(*c));
    }
  }
  return Error{Errc::unsupported, "no transport for '" + std::string(endpoint) + "'"};
}

}  // namespace ferry::ipc
