// deploy/local-cluster.sh, run for real: a coordinator host and worker hosts as network
// namespaces, the distributed demo across them, and nothing left behind (namespaces, processes,
// log folders, shared memory). Skips, naming why, where namespaces cannot be made.
#include <doctest/doctest.h>
#include <stdlib.h>

#include <set>
#include <string>

#include "demos/demo_run.hpp"
#include "netns.hpp"
#include "testing.hpp"

namespace ft = ferry::testing;
using demo_test::count_of;
using demo_test::matches;

namespace {

// The namespaces local-cluster.sh makes (ferry-<owner>-<ticks>-lc-*), as `ip netns list` shows.
std::set<std::string> cluster_namespaces() {
  const auto r = ft::run("/bin/sh", {"-c", "ip netns list 2>/dev/null | cut -d' ' -f1"});
  std::set<std::string> out;
  for (const auto& m : matches(r.out, R"((ferry-\S+-lc-\S+))"))
    out.insert(m[0]);
  return out;
}

// The build folder: ferry-coordinator is <build>/coordinator/ferry-coordinator.
std::string build_dir() {
  std::string exe = FERRY_COORDINATOR_EXE;
  exe = exe.substr(0, exe.rfind('/'));
  return exe.substr(0, exe.rfind('/'));
}

}  // namespace

TEST_SUITE("deploy.local_cluster") {
  TEST_CASE("local-cluster.sh runs demo distributed across namespaced hosts and removes them") {
    if (auto ok = ft::Testbed::available(); !ok) {
      MESSAGE("skipped: network namespaces are not available here: " << ok.reason);
      return;
    }
    ft::LeakCheck leaks;
    const auto before = cluster_namespaces();
    ::setenv(ferry::kSessionEnv, ferry::SessionId::current().str().c_str(), 1);
    const auto r = ft::run("/bin/bash",
                           {FERRY_SOURCE_DIR "/deploy/local-cluster.sh", "-b", build_dir(), "-n",
                            "3", "-s", "2", "--wait", "60", "--", "demo", "distributed"},
                           std::chrono::seconds(100));
    INFO("stdout:\n" << r.out << "\nstderr:\n" << r.err);
    CHECK_FALSE(r.timed_out);
    CHECK(r.status.code == 0);
    CHECK(count_of(r.err, "3 worker hosts + 1 coordinator host") == 1);
    CHECK(count_of(r.err, "waiting for 3 worker(s) to join") == 1);
    // Every task crossed the network: no local workers, three remote hosts, each took part.
    CHECK(count_of(r.out, "6 worker slots, 3 of the workers remote") == 1);
    std::set<std::string> hosts;
    for (const auto& row :
         matches(r.out, R"(\n   w\d+ +remote (host\d) \(worker\d\) +\d+ +(\d+))")) {
      hosts.insert(row[0]);
      CHECK_MESSAGE(std::stoi(row[1]) > 0, row[0]);
    }
    CHECK(hosts == std::set<std::string>{"host1", "host2", "host3"});
    CHECK(count_of(r.out, "local ") == 0);
    CHECK(count_of(r.out, "[ok] the merged counts equal a count of the whole text") == 1);
    CHECK(count_of(r.out, "[ok] every remote worker that joined took part (3 of 3)") == 1);
    CHECK(count_of(r.out, "[FAIL]") == 0);
    CHECK(count_of(r.err, "logs kept") == 0);  // the log folder was removed
    CHECK(cluster_namespaces() == before);
    leaks.verify();
  }
}
