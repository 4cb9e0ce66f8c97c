// CURVE keys for ZeroMQ over TCP: generating them, and the key directory's layout.
//
//   DIR/coordinator.pub      the coordinator's public key (Z85, 40 characters)
//   DIR/coordinator.secret   its secret key                      (mode 0600)
//   DIR/worker.pub           a worker key pair's public key
//   DIR/worker.secret        its secret key                      (mode 0600)
//   DIR/authorized_workers   public keys the coordinator accepts, one per line (# comments)
//
// The coordinator needs coordinator.{pub,secret} and authorized_workers; a worker needs
// coordinator.pub and worker.{pub,secret}. Copy only those to each machine.
//
// Threading: free functions, safe from any thread.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/shared/error.hpp"

namespace ferry::ipc {

struct CurveKeyPair {
  std::string public_key;  // Z85
  std::string secret_key;  // Z85
};

// What a bound socket (the coordinator) uses.
struct CurveServer {
  CurveKeyPair keys;
  // Decides on each connecting peer's public key (Z85) before any of its messages is read;
  // false refuses the connection.
  std::function<bool(std::string_view client_public_key)> authorize;
};

// What a connecting socket (a worker) uses.
struct CurveClient {
  CurveKeyPair keys;
  std::string server_public_key;
};

Result<CurveKeyPair> make_curve_keypair();
// Writes a fresh coordinator pair, a worker pair and authorized_workers into dir (created with
// mode 0700 if missing); AlreadyExists if a key file is there (keys are never overwritten).
Status write_key_directory(const std::string& dir);
// Reads the coordinator's side; authorize accepts exactly the keys in authorized_workers.
Result<CurveServer> load_curve_server(const std::string& dir);
Result<CurveClient> load_curve_client(const std::string& dir);

}  // namespace ferry::ipc
