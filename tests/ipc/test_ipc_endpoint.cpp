// Endpoint strings: schemes, and the host and port of tcp:// addresses.
#include <doctest/doctest.h>

#include <string>

#include "ferry/ipc/endpoint.hpp"

using namespace ferry;
using namespace ferry::ipc;

TEST_SUITE("ipc.endpoint") {
  TEST_CASE("tcp ports 0..65535 and '*' are accepted, with the host as written") {
    for (const char* text :
         {"tcp://127.0.0.1:0", "tcp://127.0.0.1:65535", "tcp://head:5555", "tcp://*:*",
          "tcp://localhost:1", "tcp://[::1]:0", "tcp://10.0.0.1:4000;10.0.0.2:5555"}) {
      CAPTURE(text);
      auto e = Endpoint::parse(text);
      REQUIRE(e.has_value());
      CHECK(e->scheme == Scheme::zmq_tcp);
      CHECK(e->str() == text);
    }
    auto a = parse_tcp_address("tcp://[::1]:65535");
    REQUIRE(a.has_value());
    CHECK(a->host == "[::1]");
    CHECK(a->port == 65535);
    auto any = parse_tcp_address("tcp://localhost:*");
    REQUIRE(any.has_value());
    CHECK(any->host == "localhost");
    CHECK_FALSE(any->port.has_value());
    auto via = parse_tcp_address("tcp://eth0;10.0.0.2:5555");
    REQUIRE(via.has_value());
    CHECK(via->host == "10.0.0.2");
  }

  TEST_CASE("a tcp port out of range or not a number is refused, naming it") {
    for (const char* port :
         {"65536", "70000", "-1", "", "x1", "1x", "99999999999999999999999", "0x10", " 80"}) {
      const std::string text = std::string("tcp://127.0.0.1:") + port;
      CAPTURE(text);
      auto e = Endpoint::parse(text);
      REQUIRE_FALSE(e.has_value());
      CHECK(e.error().code == Errc::invalid_argument);
      CHECK(e.error().detail.find("port '" + std::string(port) + "'") != std::string::npos);
      CHECK(e.error().detail.find("0..65535") != std::string::npos);
    }
  }

  TEST_CASE("a tcp address without a host or a port is refused") {
    for (const char* text :
         {"tcp://127.0.0.1", "tcp://:5555", "tcp://[::1]", "tcp://[::1:5", "tcp://[]:5"}) {
      CAPTURE(text);
      auto e = Endpoint::parse(text);
      REQUIRE_FALSE(e.has_value());
      CHECK(e.error().code == Errc::invalid_argument);
      CHECK(e.error().detail.find(text) != std::string::npos);
    }
  }

  TEST_CASE("other schemes are unchanged") {
    CHECK(Endpoint::parse("ipc:///tmp/x.sock")->scheme == Scheme::zmq_ipc);
    CHECK(Endpoint::parse("shm://name")->address == "name");
    CHECK(Endpoint::parse("pipe:3,4")->address == "3,4");
    CHECK_FALSE(Endpoint::parse("smoke://signal").has_value());
    CHECK_FALSE(Endpoint::parse("tcp://").has_value());
  }
}
