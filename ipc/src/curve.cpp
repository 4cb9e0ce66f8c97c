#include "ferry/ipc/curve.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>

namespace ferry::ipc {
namespace {

Result<std::string> read_key(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Error{Errc::not_found, "cannot read key file " + path, errno};
  std::string key;
  in >> key;
  if (key.size() != 40) {
    return Error{Errc::invalid_argument, path + " does not hold a Z85 CURVE key (40 characters)"};
  }
  return key;
}

// Creates path exclusively, already with its final mode: a secret is never readable by others,
// not even between creating and chmod-ing it, and an existing file is never replaced.
Status write_file(const std::string& path, const std::string& text, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    if (errno == EEXIST) {
      return Error{Errc::already_exists, path + " exists; keys are never overwritten"};
    }
    return Error{Errc::system_error, "cannot create " + path, errno};
  }
  Status st;
  if (::fchmod(fd, mode) != 0) st = Error{Errc::system_error, "chmod " + path, errno};
  for (std::size_t done = 0; st && done < text.size();) {
    const auto n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      st = Error{Errc::system_error, "cannot write " + path, errno};
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0 && st) st = Error{Errc::system_error, "cannot write " + path, errno};
  return st;
}

}  // namespace

Result<CurveKeyPair> make_curve_keypair() {
  char pub[41] = {}, sec[41] = {};
  if (zmq_curve_keypair(pub, sec) != 0) {
    return Error{Errc::unsupported, "this libzmq has no CURVE support", zmq_errno()};
  }
  return CurveKeyPair{pub, sec};
}

Status write_key_directory(const std::string& dir) {
  // Missing parents are made as mkdir -p would; the key directory itself is owner-only.
  std::error_code ec;
  if (const auto parent = std::filesystem::path(dir).parent_path(); !parent.empty()) {
    std::filesystem::create_directories(parent, ec);
    if (ec) return Error{Errc::system_error, "mkdir " + parent.string() + ": " + ec.message()};
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Error{Errc::system_error, "mkdir " + dir, errno};
  }
  auto coord = make_curve_keypair();
  if (!coord) return std::move(coord).error();
  auto worker = make_curve_keypair();
  if (!worker) return std::move(worker).error();
  const std::string d = dir + "/";
  // Secrets readable by the owner only; public keys too (the directory is private anyway).
  for (auto [name, text] : {std::pair{"coordinator.secret", coord->secret_key},
                            std::pair{"worker.secret", worker->secret_key},
                            std::pair{"coordinator.pub", coord->public_key},
                            std::pair{"worker.pub", worker->public_key}}) {
    if (auto st = write_file(d + name, text + "\n", 0600); !st) return st;
  }
  return write_file(d + "authorized_workers",
                    "# public keys of the workers this coordinator accepts, one per line\n" +
                        worker->public_key + "\n",
                    0600);
}

Result<CurveServer> load_curve_server(const std::string& dir) {
  CurveServer s;
  auto pub = read_key(dir + "/coordinator.pub");
  if (!pub) return std::move(pub).error();
  auto sec = read_key(dir + "/coordinator.secret");
  if (!sec) return std::move(sec).error();
  s.keys = {*pub, *sec};
  std::ifstream in(dir + "/authorized_workers");
  if (!in) return Error{Errc::not_found, "cannot read " + dir + "/authorized_workers", errno};
  auto allowed = std::make_shared<std::set<std::string, std::less<>>>();
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string key;
    if (!(words >> key) || key[0] == '#') continue;
    if (key.size() != 40) {
      return Error{Errc::invalid_argument,
                   dir + "/authorized_workers: '" + key + "' is not a Z85 public key"};
    }
    allowed->insert(key);
  }
  s.authorize = [allowed](std::string_view k) { return allowed->count(k) > 0; };
  return s;
}

Result<CurveClient> load_curve_client(const std::string& dir) {
  CurveClient c;
  auto server = read_key(dir + "/coordinator.pub");
  if (!server) return std::move(server).error();
  auto pub = read_key(dir + "/worker.pub");
  if (!pub) return std::move(pub).error();
  auto sec = read_key(dir + "/worker.secret");
  if (!sec) return std::move(sec).error();
  c.server_public_key = *server;
  c.keys = {*pub, *sec};
  return c;
}

}  // namespace ferry::ipc
