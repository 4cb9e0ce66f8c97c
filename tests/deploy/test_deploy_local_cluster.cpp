// deploy/local-cluster.sh, run for real: a coordinator host and worker hosts as network
// namespaces, the distributed demo across them, and nothing left behind (namespaces, processes,
// log folders, shared memory). Then a map across them watched from this machine through
// --http: `status --watch`, the page in headless Chromium, and /metrics equal to the final
// summary. Skips, naming why, where namespaces cannot be made.
#include <doctest/doctest.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "demos/demo_run.hpp"
#include "netns.hpp"
#include "testing.hpp"

namespace ft = ferry::testing;
using demo_test::count_of;
using demo_test::matches;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

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

// local-cluster.sh running, its stdout and stderr on pipes and its stdin a pipe the test
// writes (the coordinator's `map --stdin` reads it).
struct Running {
  ft::Child child;
  ft::PipeFds out, err, in;
};

Running start_cluster(const std::vector<std::string>& args) {
  Running r;
  ft::SpawnOptions o;
  o.env.push_back(std::string(ferry::kSessionEnv) + "=" + ferry::SessionId::current().str());
  o.fds.emplace_back(r.err.w, 2);
  o.fds.emplace_back(r.in.r, 0);
  o.stdout_fd = r.out.w;
  std::vector<std::string> all{FERRY_SOURCE_DIR "/deploy/local-cluster.sh"};
  all.insert(all.end(), args.begin(), args.end());
  r.child = ft::spawn("/bin/bash", all, o);
  r.out.close_w();
  r.err.close_w();
  r.in.close_r();
  return r;
}

// Ends the script (its trap tears the cluster down) if a failed REQUIRE leaves it running: a
// SIGKILL, which the Child would send, runs no trap.
struct TearDown {
  ft::Child& c;
  ~TearDown() {
    if (c.running()) {
      c.kill(SIGTERM);
      c.wait_for(60s);
    }
  }
};

// Reads lines from fd (appending them to `seen`) until one contains `what`; "" on EOF/timeout.
std::string read_until(int fd, const std::string& what, std::string& seen,
                       std::chrono::milliseconds timeout = 90s) {
  const auto until = Clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    if (left.count() <= 0) return {};
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    const std::string line = ft::read_line(fd, left);
    if (line.empty() && p.revents & POLLHUP && !(p.revents & POLLIN)) return {};
    seen += line + "\n";
    if (line.find(what) != std::string::npos) return line;
  }
}

void write_all(int fd, const std::string& s) {
  REQUIRE(::write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size()));
}

// GET base+path (Authorization: Bearer token if given); the status is -1 if nothing answered.
std::string get(const std::string& base, const std::string& path, int& status,
                const std::string& token = {}) {
  httplib::Client c(base);
  c.set_connection_timeout(5, 0);
  c.set_read_timeout(10, 0);
  if (!token.empty()) c.set_bearer_token_auth(token);
  auto r = c.Get(path);
  status = r ? r->status : -1;
  return r ? r->body : std::string();
}

// Waits (bounded) until /api/status answers and pred holds. Until the coordinator's server is
// up the forward has nothing to connect to and closes the connection: that is "not yet".
template <class P>
json wait_status(const std::string& base, const std::string& token, P pred,
                 std::chrono::seconds timeout = 90s) {
  const auto until = Clock::now() + timeout;
  json s;
  for (;;) {
    int code = 0;
    const std::string body = get(base, "/api/status", code, token);
    if (code == 200) {
      s = json::parse(body);
      if (pred(s)) return s;
    }
    if (Clock::now() > until) return s;
    ::poll(nullptr, 0, 50);  // the next look at a remote state (no event to wait on over HTTP)
  }
}

// Prometheus text as {"name{labels}": value}; every sample line must parse.
std::map<std::string, double> parse_metrics(const std::string& text) {
  std::map<std::string, double> m;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto sp = line.rfind(' ');
    REQUIRE_MESSAGE(sp != std::string::npos, line);
    std::size_t used = 0;
    const double v = std::stod(line.substr(sp + 1), &used);
    CHECK_MESSAGE(used == line.size() - sp - 1, line);
    m[line.substr(0, sp)] = v;
  }
  return m;
}

std::string chromium() {
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return {};
}

// Reaps what a browser left to this process (a child subreaper): its helper processes outlive
// the browser's main process for a moment. Waits (bounded) for every child but `keep` to end.
void reap_browser_orphans(pid_t keep) {
  const auto until = Clock::now() + 20s;
  for (;;) {
    bool left = false;
    for (const pid_t k : ft::child_pids()) {
      if (k == keep) continue;
      int st = 0;
      if (::waitpid(k, &st, WNOHANG) == 0) left = true;
    }
    if (!left || Clock::now() > until) return;
    ::poll(nullptr, 0, 20);  // its exit is not ours to wait on with a pidfd we do not have
  }
}

// The rows of every table `status` printed: worker, host, name, where, state.
std::vector<std::vector<std::string>> status_rows(const std::string& out) {
  return matches(out, R"((?:^|\n)(w\d+) +(\S+) +(\S+) +\d+ +(remote|local) +(\S+))");
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

  TEST_CASE(
      "a map over 3 namespaced hosts is watched from this machine: status, Chromium, "
      "metrics equal to the summary") {
    if (auto ok = ft::Testbed::available(); !ok) {
      MESSAGE("skipped: network namespaces are not available here: " << ok.reason);
      return;
    }
    ft::LeakCheck leaks;
    const auto before = cluster_namespaces();
    {
      // sleep_ms items of 5 ms in chunks of 5, fed in two halves: between them the job waits
      // for input with its workers up, which is when it is watched. --http-linger keeps the
      // final numbers up until the coordinator is told to stop.
      auto lc = start_cluster({"-b", build_dir(), "-n", "3", "--http", "0", "--wait", "60", "--",
                               "--heartbeat-interval", "100", "--http-linger", "300",
                               "--no-progress", "map", "sleep_ms", "--stdin", "--chunksize", "5"});
      TearDown teardown{lc.child};
      std::string err;
      const std::string url_line = read_until(lc.err.r, "status page for this machine: ", err);
      REQUIRE_MESSAGE(!url_line.empty(), err);
      // http://127.0.0.1:PORT/?token=TOKEN
      const std::string url = url_line.substr(url_line.find("http://"));
      const auto q = url.find("/?token=");
      REQUIRE_MESSAGE(q != std::string::npos, url);
      const std::string base = url.substr(0, q);
      const std::string token = url.substr(q + 8);
      CHECK(base.starts_with("http://127.0.0.1:"));
      CHECK(token.size() == 32);

      std::string items;
      for (int i = 0; i < 150; ++i)
        items += "5\n";
      write_all(lc.in.w, items);
      json s = wait_status(base, token, [](const json& j) {
        if (j["job"]["items_done"] != 150 || j["workers"].size() != 3) return false;
        for (const auto& wk : j["workers"])
          if (wk["state"] != "ready" || wk["cpu_s"].is_null()) return false;
        return true;
      });
      INFO("status: " << s.dump() << "\nstderr:\n" << err);
      REQUIRE(s["workers"].size() == 3);
      CHECK(s["job"]["items_done"] == 150);
      CHECK(s["job"]["task"] == "sleep_ms");
      const std::string listen = s["coordinator"]["listen"].get<std::string>();
      CHECK(listen.starts_with("tcp://10."));  // the coordinator host's own address
      CHECK(s["coordinator"]["host"] == "coordinator");
      std::set<std::string> hosts;
      for (const auto& wk : s["workers"]) {
        CAPTURE(wk.dump());
        CHECK(wk["remote"] == true);
        CHECK(wk["name"] == "worker" + wk["host"].get<std::string>().substr(4));
        hosts.insert(wk["host"].get<std::string>());
      }
      CHECK(hosts == std::set<std::string>{"host1", "host2", "host3"});

      // The token rule holds through the forward.
      int code = 0;
      get(base, "/api/status", code);
      CHECK(code == 401);
      const auto mid = parse_metrics(get(base, "/metrics", code, token));
      CHECK(code == 200);
      CHECK(mid.at("ferry_workers{state=\"ready\"}") == 3);
      CHECK(mid.at("ferry_job_items_done_total") == 150);
      for (const auto& wk : s["workers"]) {
        const std::string key = "ferry_worker_tasks_completed_total{worker=\"w" +
                                std::to_string(wk["id"].get<int>()) + "\",host=\"" +
                                wk["host"].get<std::string>() + "\"}";
        CHECK_MESSAGE(mid.count(key) == 1, key);
      }

      // `status --watch` on the printed URL (its token included): three tables, each with the
      // three remote workers on their hosts and the progress.
      auto watched = ft::run(FERRY_COORDINATOR_EXE,
                             {"status", url, "--watch", "--interval", "0.2", "--count", "3"}, 60s);
      CHECK_MESSAGE(watched.status.code == 0, watched.err);
      CHECK(count_of(watched.out, "coordinator pid") == 3);
      CHECK(count_of(watched.out, "listening on " + listen) == 3);
      CHECK(count_of(watched.out, "150/- items") == 3);
      const auto rows = status_rows(watched.out);
      CHECK(rows.size() == 9);
      std::set<std::string> watched_hosts;
      for (const auto& row : rows) {
        CAPTURE(row[0]);
        CHECK(row[2] == "worker" + row[1].substr(4));
        CHECK(row[3] == "remote");
        CHECK(row[4] == "ready");
        watched_hosts.insert(row[1]);
      }
      CHECK(watched_hosts == hosts);

      // The page in a real browser, opened with the printed URL: every worker's row, the
      // progress, and "live" (its own polling of /api/status carried the token).
      const std::string browser = chromium();
      if (browser.empty()) {
        MESSAGE("chromium is not installed (./run deps installs it): browser check skipped");
      } else {
        const std::string profile = std::filesystem::current_path() / "chromium-profile-cluster";
        auto dom = ft::run(browser,
                           {"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            "--disable-dev-shm-usage", "--user-data-dir=" + profile,
                            "--virtual-time-budget=3000", "--dump-dom", url},
                           90s);
        reap_browser_orphans(lc.child.pid());
        std::filesystem::remove_all(profile);
        CHECK_MESSAGE(dom.status.code == 0, dom.err);
        for (const auto& wk : s["workers"]) {
          const std::string row = "data-worker=\"" + std::to_string(wk["id"].get<int>()) + "\"";
          CHECK_MESSAGE(dom.out.find(row) != std::string::npos, row);
        }
        for (const auto& h : hosts)
          CHECK_MESSAGE(dom.out.find("<td>" + h + "</td>") != std::string::npos, h);
        CHECK(count_of(dom.out, ">remote<") == 3);
        CHECK_MESSAGE(dom.out.find("150 / -") != std::string::npos, "progress text");
        CHECK_MESSAGE(matches(dom.out, R"(id="conn"[^>]*>(live)<)").size() == 1, dom.out);
      }

      // The second half: the job ends; its output, summary and metrics agree.
      write_all(lc.in.w, items);
      lc.in.close_w();
      const std::string summary = read_until(lc.err.r, "chunks per worker:", err);
      REQUIRE_MESSAGE(!summary.empty(), err);
      const auto totals = demo_test::numbers(
          summary, R"(map sleep_ms: (\d+) items in (\d+) chunks, (\d+) failed, (\d+) retries, )"
                   R"((\d+) worker deaths)");
      REQUIRE_MESSAGE(totals.size() == 5, summary);
      long long sum = 0;
      int results = 0;
      for (; results < 300; ++results) {
        const std::string line = ft::read_line(lc.out.r, 30s);
        if (line.empty()) break;
        sum += std::stoll(line);
      }
      CHECK(results == 300);
      CHECK(sum == 1500);
      CHECK(totals[0] == 300);
      CHECK(totals[1] == 60);  // 300 items in chunks of 5
      CHECK(totals[2] == 0);
      const auto end = parse_metrics(get(base, "/metrics", code, token));
      REQUIRE(code == 200);
      CHECK(end.at("ferry_job_items_done_total") == totals[0]);
      CHECK(end.at("ferry_tasks_submitted_total") == totals[1]);
      CHECK(end.at("ferry_tasks_completed_total") == totals[1]);
      CHECK(end.at("ferry_job_items_failed_total") == totals[2]);
      CHECK(end.at("ferry_tasks_failed_total") == totals[2]);
      CHECK(end.at("ferry_task_retries_total") == totals[3]);
      CHECK(end.at("ferry_worker_deaths_total") == totals[4]);
      CHECK(end.at("ferry_tasks_in_flight") == 0);
      CHECK(end.at("ferry_task_duration_seconds_count") == totals[1]);
      // "chunks per worker: w1 20, w2 21, w3 19": each equal to that worker's counter.
      const auto per =
          matches(summary.substr(summary.find("chunks per worker:")), R"(w(\d+) (\d+))");
      CHECK(per.size() == 3);
      double per_sum = 0;
      for (const auto& w : per) {
        const std::string prefix = "ferry_worker_tasks_completed_total{worker=\"w" + w[0] + "\"";
        auto it = end.lower_bound(prefix);
        REQUIRE_MESSAGE((it != end.end() && it->first.starts_with(prefix)), prefix);
        CHECK(it->second == std::stod(w[1]));
        CHECK_MESSAGE(std::stoi(w[1]) > 0, "every host took part: " << summary);
        per_sum += it->second;
      }
      CHECK(per_sum == totals[1]);
      const json done = wait_status(base, token, [](const json&) { return true; });
      CHECK(done["job"]["finished"] == true);
      CHECK(done["job"]["items_done"] == 300);

      // Ctrl-C to the coordinator ends its linger; the script then tears the cluster down.
      const pid_t coordinator = done["coordinator"]["pid"].get<pid_t>();
      REQUIRE(::kill(coordinator, SIGINT) == 0);
      auto st = lc.child.wait_for(60s);
      REQUIRE(st.has_value());
      CHECK(st->code == 0);
      std::string rest;
      read_until(lc.err.r, "\x01", rest, 10s);  // to EOF: every holder of the pipe is gone
      err += rest;
      CHECK_MESSAGE(count_of(err, "logs kept") == 0, err);
      int after_code = 0;
      get(base, "/api/status", after_code, token);
      CHECK(after_code == -1);  // the forward went with the cluster
    }
    CHECK(cluster_namespaces() == before);
    ft::reap_children_named("chrom", 20s);  // helpers Chromium left, re-parented to us
    leaks.verify();
  }
}
