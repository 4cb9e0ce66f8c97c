#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ferry/shared/session.hpp"
#include "testing.hpp"

using ferry::testing::run;
using namespace std::chrono_literals;

namespace {

bool segment_exists(const std::string& name) {
  return ::access(("/dev/shm/" + name).c_str(), F_OK) == 0;
}

void make_segment(const std::string& name) {
  const int fd = ::shm_open(("/" + name).c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  REQUIRE_MESSAGE(fd >= 0, "shm_open " << name);
  ::close(fd);
}

// The session id of a process that existed and is gone: a peer we started (its pid and start
// time are read while it runs), then killed and reaped. A later process with the same pid
// has another start time, so the session stays dead.
ferry::SessionId dead_session() {
  auto peer = ferry::testing::spawn_peer("cli_pause");
  const auto sid = ferry::SessionId::of_pid(peer.pid());
  peer.kill(SIGKILL);
  REQUIRE(peer.wait_for(30s));
  REQUIRE(sid.has_value());
  CHECK_FALSE(sid->alive());
  return *sid;
}

// The "removed /dev/shm/..." lines of cleanup's output, and whether its last line agrees.
std::vector<std::string> removed_lines(const std::string& out, bool& summary_ok) {
  std::vector<std::string> removed;
  std::istringstream in(out);
  std::string line, last;
  while (std::getline(in, line)) {
    if (line.rfind("removed /dev/shm/", 0) == 0) removed.push_back(line.substr(17));
    last = line;
  }
  if (removed.empty()) {
    summary_ok = last == "cleanup: nothing to remove";
  } else {
    summary_ok = last == "cleanup: removed " + std::to_string(removed.size()) +
                             (removed.size() == 1 ? " segment" : " segments");
  }
  return removed;
}

}  // namespace

FERRY_TEST_PEER(cli_pause) {
  for (;;)
    ::pause();
}

TEST_SUITE("cli.commands") {
  TEST_CASE("every executable prints usage for --help and exits 0") {
    std::vector<std::string> exes{FERRY_COORDINATOR_EXE, FERRY_WORKER_EXE};
#ifdef FERRY_BENCH_EXE
    exes.push_back(FERRY_BENCH_EXE);
#endif
    for (const auto& exe : exes) {
      auto r = run(exe, {"--help"});
      CHECK_MESSAGE(r.status.code == 0, exe);
      CHECK_MESSAGE(r.out.find("Usage") != std::string::npos, exe << ": " << r.out);
    }
  }

  TEST_CASE("an unknown option exits 2 with a message naming it") {
    std::vector<std::string> exes{FERRY_COORDINATOR_EXE, FERRY_WORKER_EXE};
#ifdef FERRY_BENCH_EXE
    exes.push_back(FERRY_BENCH_EXE);
#endif
    for (const auto& exe : exes) {
      auto r = run(exe, {"--no-such-option"});
      CHECK_MESSAGE(r.status.code == 2, exe);
      CHECK_MESSAGE(r.err.find("--no-such-option") != std::string::npos, exe << ": " << r.err);
    }
  }

  TEST_CASE("a bad option value exits 2") {
    auto r = run(FERRY_COORDINATOR_EXE, {"-t", "carrier-pigeon", "demo", "list"});
    CHECK(r.status.code == 2);
    CHECK(r.err.find("carrier-pigeon") != std::string::npos);
    auto w = run(FERRY_WORKER_EXE, {"--connect", "smoke://signal"});
    CHECK(w.status.code == 2);
    CHECK(w.err.find("smoke://signal") != std::string::npos);
  }

  TEST_CASE("ferry-coordinator without a command is a usage error") {
    auto r = run(FERRY_COORDINATOR_EXE, {});
    CHECK(r.status.code == 2);
  }

  TEST_CASE("demo with an unknown name is a usage error naming it") {
    auto r = run(FERRY_COORDINATOR_EXE, {"demo", "no-such-demo"});
    CHECK(r.status.code == 2);
    CHECK(r.err.find("no-such-demo") != std::string::npos);
  }

  TEST_CASE("cleanup removes a dead session's segment, names it, and keeps a live session's") {
    ferry::testing::LeakCheck leaks;
    const std::string dead = ferry::shm_name(dead_session(), "cleanup-test");
    const std::string live = ferry::shm_name("cleanup-live");  // this test process's session
    make_segment(dead);
    make_segment(live);

    // Other dead sessions' segments on this host may go too; ours must be among them.
    auto r = run(FERRY_COORDINATOR_EXE, {"cleanup"});
    CHECK(r.status.code == 0);
    bool summary_ok = false;
    const auto removed = removed_lines(r.out, summary_ok);
    CHECK_MESSAGE(summary_ok, r.out);
    CHECK(std::find(removed.begin(), removed.end(), dead) != removed.end());
    CHECK(std::find(removed.begin(), removed.end(), live) == removed.end());
    CHECK_FALSE(segment_exists(dead));
    CHECK(segment_exists(live));

    // A second run has nothing of ours left to remove, and says so when it removes nothing.
    auto again = run(FERRY_COORDINATOR_EXE, {"cleanup"});
    CHECK(again.status.code == 0);
    const auto removed_again = removed_lines(again.out, summary_ok);
    CHECK_MESSAGE(summary_ok, again.out);
    CHECK(std::find(removed_again.begin(), removed_again.end(), dead) == removed_again.end());
    CHECK(segment_exists(live));

    ::shm_unlink(("/" + live).c_str());
    ::shm_unlink(("/" + dead).c_str());  // in case cleanup missed it
    leaks.verify();
  }

  TEST_CASE("keygen makes missing parents, writes owner-only keys, and never overwrites them") {
    namespace fs = std::filesystem;
    const fs::path top = fs::temp_directory_path() / ("ferry-keygen-" + std::to_string(::getpid()));
    fs::remove_all(top);
    const fs::path dir = top / "etc" / "ferry" / "keys";
    auto r = run(FERRY_COORDINATOR_EXE, {"keygen", dir.string()});
    INFO(r.out << r.err);
    CHECK(r.status.code == 0);
    CHECK(r.out.find("wrote CURVE keys to " + dir.string()) != std::string::npos);
    CHECK((fs::status(dir).permissions() & fs::perms::all) == fs::perms::owner_all);
    std::string secret_before;
    for (const char* name : {"coordinator.secret", "worker.secret", "coordinator.pub", "worker.pub",
                             "authorized_workers"}) {
      CAPTURE(name);
      REQUIRE(fs::exists(dir / name));
      CHECK((fs::status(dir / name).permissions() & fs::perms::all) ==
            (fs::perms::owner_read | fs::perms::owner_write));
    }
    {
      std::ifstream in(dir / "coordinator.secret");
      std::getline(in, secret_before);
    }
    CHECK(secret_before.size() == 40);
    // Again into the same folder: refused, exit 1, naming the file; the keys are unchanged.
    r = run(FERRY_COORDINATOR_EXE, {"keygen", dir.string()});
    CHECK(r.status.code == 1);
    CHECK(r.err.find("coordinator.secret exists; keys are never overwritten") != std::string::npos);
    std::string secret_after;
    {
      std::ifstream in(dir / "coordinator.secret");
      std::getline(in, secret_after);
    }
    CHECK(secret_after == secret_before);
    fs::remove_all(top);
  }

  TEST_CASE("cleanup --help explains what is removed and what --all adds") {
    auto r = run(FERRY_COORDINATOR_EXE, {"cleanup", "--help"});
    CHECK(r.status.code == 0);
    CHECK(r.out.find("gone") != std::string::npos);
    CHECK(r.out.find("--all") != std::string::npos);
  }
}
