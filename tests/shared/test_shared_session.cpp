#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

#include "ferry/shared/session.hpp"
#include "testing.hpp"

using namespace ferry;

FERRY_TEST_PEER(print_session) {
  std::printf("%s\n", SessionId::current().str().c_str());
  return 0;
}

FERRY_TEST_PEER(exit_at_once) {
  return 0;
}

TEST_SUITE("shared.session") {
  TEST_CASE("the current session is alive and round-trips through its string") {
    const auto& s = SessionId::current();
    CHECK(s.alive());
    auto p = SessionId::parse(s.str());
    REQUIRE(p);
    CHECK(*p == s);
    CHECK_FALSE(SessionId::parse("12x-3"));
    CHECK_FALSE(SessionId::parse("-3"));
    CHECK_FALSE(SessionId::parse("12-"));
  }

  TEST_CASE("shm names carry the session and can be traced back to it") {
    const auto n = shm_name("ring");
    CHECK(n == "ferry." + SessionId::current().str() + ".ring");
    auto s = session_of_shm_name(n);
    REQUIRE(s);
    CHECK(*s == SessionId::current());
    CHECK_FALSE(session_of_shm_name("other.1-2.x"));
  }

  TEST_CASE("a started process inherits the coordinator's session through FERRY_SESSION") {
    testing::LeakCheck leaks;
    auto r = testing::run(testing::self_exe(), {"--ferry-test-peer", "print_session"},
                          std::chrono::seconds(20));
    // run() does not set FERRY_SESSION: the child has its own session.
    CHECK(r.status.code == 0);
    CHECK(r.out != SessionId::current().str() + "\n");
    leaks.verify();
  }

  TEST_CASE("a session whose process has exited is not alive, even before it is reaped") {
    testing::LeakCheck leaks;
    {
      auto child = testing::spawn_peer("exit_at_once");
      const auto id = SessionId::of_pid(child.pid());
      REQUIRE(id);
      // Wait for the exit but leave the child a zombie (WNOWAIT): its /proc entry remains.
      siginfo_t info{};
      REQUIRE(::waitid(P_PID, static_cast<id_t>(child.pid()), &info, WEXITED | WNOWAIT) == 0);
      CHECK(SessionId::of_pid(child.pid()).has_value());  // still listed...
      CHECK_FALSE(id->alive());                           // ...but no longer alive
      const auto st = child.wait_for(std::chrono::seconds(5));
      REQUIRE(st);
      CHECK(st->code == 0);
      CHECK_FALSE(id->alive());
    }
    leaks.verify();
  }

  TEST_CASE("a dead session's segments are swept, a live one's are kept") {
    testing::LeakCheck leaks;
    // A session that cannot be alive: pid 1 with a start time that is not init's.
    SessionId dead{1, 999999999999ULL};
    CHECK_FALSE(dead.alive());
    const auto dead_name = shm_name(dead, "sweep-test");
    const auto live_name = shm_name("sweep-test");
    for (const auto& n : {dead_name, live_name}) {
      int fd = ::shm_open(("/" + n).c_str(), O_CREAT | O_RDWR, 0600);
      REQUIRE(fd >= 0);
      ::close(fd);
    }
    const auto removed = sweep_stale_shm();
    // At most once: a ferry-coordinator starting in a test beside this one sweeps too.
    CHECK(std::count(removed.begin(), removed.end(), dead_name) <= 1);
    CHECK(std::count(removed.begin(), removed.end(), live_name) == 0);
    CHECK(::access(("/dev/shm/" + dead_name).c_str(), F_OK) != 0);
    CHECK(::access(("/dev/shm/" + live_name).c_str(), F_OK) == 0);
    ::shm_unlink(("/" + live_name).c_str());
    leaks.verify();
  }
}
