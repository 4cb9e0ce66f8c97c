// ferry-coordinator --http: /api/status, /metrics and the status page while a map runs over
// local and remote workers, the page rendered by headless Chromium, `status`, the token rule,
// and the metrics equal to the job's summary at the end.
#include <doctest/doctest.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "ferry/shared/session.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

std::string session_env() {
  return std::string(ferry::kSessionEnv) + "=" + ferry::SessionId::current().str();
}

// A process whose stdout and stderr come back on pipes, with a stdin pipe the test writes.
struct Running {
  ft::Child child;
  ft::PipeFds out, err, in;
};

Running start(const std::string& exe, const std::vector<std::string>& args) {
  Running r;
  ft::SpawnOptions o;
  o.env.push_back(session_env());
  o.fds.emplace_back(r.err.w, 2);
  o.fds.emplace_back(r.in.r, 0);
  o.stdout_fd = r.out.w;
  r.child = ft::spawn(exe, args, o);
  r.out.close_w();
  r.err.close_w();
  r.in.close_r();
  return r;
}

// Reads lines from fd (appending them to `seen`) until one contains `what`; "" on EOF/timeout.
std::string read_until(int fd, const std::string& what, std::string& seen,
                       std::chrono::milliseconds timeout = 60s) {
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

// The text between `before` and the next `stop` character in line.
std::string after(const std::string& line, const std::string& before, char stop) {
  const auto b = line.find(before);
  if (b == std::string::npos) return {};
  const auto s = b + before.size();
  const auto e = line.find(stop, s);
  return line.substr(s, e == std::string::npos ? std::string::npos : e - s);
}

std::string get(const std::string& base, const std::string& path, int* status = nullptr,
                const std::string& bearer = {}) {
  httplib::Client c(base);
  c.set_connection_timeout(5, 0);
  c.set_read_timeout(10, 0);
  if (!bearer.empty()) c.set_bearer_token_auth(bearer);
  auto r = c.Get(path);
  if (!r) {
    if (status) *status = -1;
    return {};
  }
  if (status) *status = r->status;
  return r->body;
}

json status_of(const std::string& base) {
  int code = 0;
  const std::string body = get(base, "/api/status", &code);
  REQUIRE_MESSAGE(code == 200, body);
  return json::parse(body);
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

// Waits (bounded) until pred(status) holds, re-reading /api/status as the job moves on.
template <class P>
json wait_status(const std::string& base, P pred, std::chrono::seconds timeout = 60s) {
  const auto until = Clock::now() + timeout;
  json s = status_of(base);
  while (!pred(s) && Clock::now() < until) {
    ::poll(nullptr, 0, 50);  // the next look at a remote state (no event to wait on over HTTP)
    s = status_of(base);
  }
  return s;
}

std::string chromium() {
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return {};
}

// Reaps what a browser left to this process (a child subreaper): its helper processes outlive
// the browser's main process for a moment. Waits (bounded) for every child but `keep` to end.
void reap_browser_orphans(const std::vector<pid_t>& keep) {
  const auto until = Clock::now() + 20s;
  for (;;) {
    bool left = false;
    for (const pid_t k : ft::child_pids()) {
      if (std::find(keep.begin(), keep.end(), k) != keep.end()) continue;
      int st = 0;
      if (::waitpid(k, &st, WNOHANG) == 0) left = true;
    }
    if (!left || Clock::now() > until) return;
    ::poll(nullptr, 0, 20);  // its exit is not ours to wait on with a pidfd we do not have
  }
}

// Headless Chromium's arguments for one page (own profile dir: tests may run in parallel).
std::vector<std::string> chromium_args(const std::string& profile, std::vector<std::string> more) {
  std::vector<std::string> a{"--headless",
                             "--no-sandbox",
                             "--disable-gpu",
                             "--no-first-run",
                             "--disable-dev-shm-usage",
                             "--user-data-dir=" + profile,
                             "--virtual-time-budget=3000"};
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

}  // namespace

TEST_SUITE("cli http") {
  TEST_CASE("a non-loopback --http without --http-token exits 2 before anything starts") {
    auto r = ft::run(FERRY_COORDINATOR_EXE,
                     {"-w", "1", "--http", "0.0.0.0:0", "map", "square", "--range", "0:3"}, 30s);
    CHECK(r.status.code == 2);
    CHECK_MESSAGE(r.err.find("--http-token") != std::string::npos, r.err);
    CHECK(r.out.empty());  // nothing ran
    auto bad =
        ft::run(FERRY_COORDINATOR_EXE,
                {"-w", "1", "--http", "127.0.0.1:http", "map", "square", "--range", "0:3"}, 30s);
    CHECK(bad.status.code == 2);
    CHECK_MESSAGE(bad.err.find("expected HOST:PORT") != std::string::npos, bad.err);
    auto st = ft::run(FERRY_COORDINATOR_EXE, {"status", "127.0.0.1:1"}, 30s);
    CHECK(st.status.code == 1);
    CHECK_MESSAGE(st.err.find("cannot read http://127.0.0.1:1/api/status") != std::string::npos,
                  st.err);
  }

  TEST_CASE("with a token every request needs it, and failures reach /api/status and the page") {
    ft::LeakCheck leaks;
    {
      // 0.0.0.0 with a token is allowed; the test reaches it on loopback.
      auto c = start(FERRY_COORDINATOR_EXE,
                     {"-w", "1", "--no-progress", "--http", "0.0.0.0:0", "--http-token", "s3cret",
                      "--http-linger", "60", "--json", "map", "fail", "--range", "0:3"});
      std::string err;
      const std::string line = read_until(c.err.r, "status page on", err);
      REQUIRE_MESSAGE(!line.empty(), err);
      const std::string port = after(line, "http://0.0.0.0:", '/');
      const std::string base = "http://127.0.0.1:" + port;
      std::string out;
      REQUIRE_MESSAGE(!read_until(c.out.r, "\"summary\"", out).empty(), out);
      for (const char* path : {"/", "/api/status", "/metrics"}) {
        CAPTURE(path);
        int code = 0;
        get(base, path, &code);
        CHECK(code == 401);
        get(base, path, &code, "wrong");
        CHECK(code == 401);
        get(base, std::string(path) + "?token=s3cret", &code);
        CHECK(code == 200);
      }
      int code = 0;
      const json s = json::parse(get(base, "/api/status", &code, "s3cret"));
      CHECK(code == 200);
      CHECK(s["job"]["items_failed"] == 3);
      CHECK(s["job"]["finished"] == true);
      REQUIRE(!s["failures"].empty());
      CHECK(s["failures"][0]["text"].get<std::string>().find("failed as asked") !=
            std::string::npos);
      // The page carries the failures too (in its first snapshot).
      const std::string page = get(base, "/?token=s3cret");
      CHECK(page.find("failed as asked") != std::string::npos);
      CHECK(page.find("/*FERRY_INITIAL*/") == std::string::npos);
      // status sends the token.
      auto st = ft::run(FERRY_COORDINATOR_EXE, {"--http-token", "s3cret", "status", base}, 30s);
      CHECK_MESSAGE(st.status.code == 0, st.err);
      CHECK_MESSAGE(st.out.find("failed as asked") != std::string::npos, st.out);
      // The page's URL with its token works as the address (as local-cluster.sh prints it).
      auto by_url = ft::run(FERRY_COORDINATOR_EXE, {"status", base + "/?token=s3cret"}, 30s);
      CHECK_MESSAGE(by_url.status.code == 0, by_url.err);
      CHECK_MESSAGE(by_url.out.find("failed as asked") != std::string::npos, by_url.out);
      auto denied = ft::run(FERRY_COORDINATOR_EXE, {"status", base}, 30s);
      CHECK(denied.status.code == 1);
      CHECK_MESSAGE(denied.err.find("401") != std::string::npos, denied.err);
      c.child.kill(SIGTERM);  // ends the linger
      auto end = c.child.wait_for(30s);
      REQUIRE(end.has_value());
      CHECK(end->code == 1);  // items failed
    }
    leaks.verify();
  }

  TEST_CASE("a map over local and remote workers, watched over HTTP, in Chromium and with status") {
    ft::LeakCheck leaks;
    {
      auto c = start(FERRY_COORDINATOR_EXE,
                     {"-w", "2", "--listen", "tcp://127.0.0.1:0", "--wait-workers", "3",
                      "--heartbeat-interval", "100", "--http", "127.0.0.1:0", "--http-linger", "60",
                      "--no-progress", "--json", "map", "square", "--stdin"});
      std::string err;
      const std::string page_line = read_until(c.err.r, "status page on", err);
      REQUIRE_MESSAGE(!page_line.empty(), err);
      const std::string base = "http://" + after(page_line, "http://", '/');
      const std::string wait_line = read_until(c.err.r, "waiting for 3 worker(s)", err);
      REQUIRE_MESSAGE(!wait_line.empty(), err);
      const std::string endpoint = after(wait_line, "listening on ", ';');
      auto w = start(FERRY_WORKER_EXE,
                     {"--connect", endpoint, "--name", "edge", "--reconnect-timeout", "5"});

      // First half of the items: the job runs, then waits for more input (it can be watched).
      std::string items;
      for (int i = 0; i < 200; ++i)
        items += std::to_string(i) + "\n";
      write_all(c.in.w, items);
      json s = wait_status(base, [&](const json& j) {
        if (j["job"]["items_done"] != 200) return false;
        for (const auto& wk : j["workers"])
          if (wk["cpu_s"].is_null() || wk["rss_bytes"].is_null()) return false;
        return j["workers"].size() == 3;
      });
      CHECK(s["job"]["items_done"] == 200);
      CHECK(s["job"]["items_total"].is_null());  // --stdin: unknown
      CHECK(s["job"]["task"] == "square");
      CHECK(s["coordinator"]["pid"] == c.child.pid());
      CHECK(s["coordinator"]["listen"] == endpoint);
      REQUIRE(s["workers"].size() == 3);
      int local = 0, remote = 0;
      for (const auto& wk : s["workers"]) {
        CAPTURE(wk.dump());
        CHECK(wk["state"] == "ready");
        CHECK(wk["rss_bytes"].get<double>() > 0);
        CHECK(wk["cpu_s"].get<double>() >= 0);
        if (wk["remote"].get<bool>()) {
          ++remote;
          CHECK(wk["pid"] == w.child.pid());
          CHECK(wk["name"] == "edge");
          CHECK(!wk["heartbeat_age_s"].is_null());
        } else {
          ++local;
        }
      }
      CHECK(local == 2);
      CHECK(remote == 1);

      const auto mid = parse_metrics(get(base, "/metrics"));
      CHECK(mid.at("ferry_workers{state=\"ready\"}") == 3);
      CHECK(mid.at("ferry_tasks_completed_total") >= 1);
      CHECK(mid.at("ferry_job_items_done_total") == 200);
      CHECK(mid.at("ferry_task_duration_seconds_count") == mid.at("ferry_tasks_completed_total"));
      CHECK(mid.at("ferry_task_duration_seconds_bucket{le=\"+Inf\"}") ==
            mid.at("ferry_task_duration_seconds_count"));

      // `status` as a table, as JSON, and watched twice.
      auto table = ft::run(FERRY_COORDINATOR_EXE, {"status", base}, 30s);
      CHECK_MESSAGE(table.status.code == 0, table.err);
      for (const char* want : {"w1", "w2", "w3", "remote", "local", "edge", "200/- items"})
        CHECK_MESSAGE(table.out.find(want) != std::string::npos, want << "\n" << table.out);
      auto as_json = ft::run(FERRY_COORDINATOR_EXE, {"--json", "status", base}, 30s);
      CHECK(as_json.status.code == 0);
      CHECK(json::parse(as_json.out)["workers"].size() == 3);
      auto watched = ft::run(FERRY_COORDINATOR_EXE,
                             {"status", base, "--watch", "--interval", "0.1", "--count", "2"}, 30s);
      CHECK(watched.status.code == 0);
      std::size_t tables = 0;
      for (auto at = watched.out.find("coordinator pid"); at != std::string::npos;
           at = watched.out.find("coordinator pid", at + 1))
        ++tables;
      CHECK(tables == 2);

      // The page in a real browser: every worker's row and the progress are in the rendered DOM.
      const std::string browser = chromium();
      if (browser.empty()) {
        MESSAGE("chromium is not installed (./run deps installs it): browser check skipped");
      } else {
        const std::string profile = std::filesystem::current_path() / "chromium-profile-http";
        auto dom = ft::run(browser, chromium_args(profile, {"--dump-dom", base + "/"}), 90s);
        reap_browser_orphans({c.child.pid(), w.child.pid()});
        CHECK_MESSAGE(dom.status.code == 0, dom.err);
        for (const auto& wk : s["workers"]) {
          const std::string row = "data-worker=\"" + std::to_string(wk["id"].get<int>()) + "\"";
          CHECK_MESSAGE(dom.out.find(row) != std::string::npos, row);
        }
        CHECK_MESSAGE(dom.out.find("200 / -") != std::string::npos, "progress text");
        CHECK(dom.out.find(">remote<") != std::string::npos);
        const std::string shot = std::filesystem::current_path() / "ferry-status-page.png";
        std::filesystem::remove(shot);
        auto png = ft::run(browser,
                           chromium_args(profile, {"--hide-scrollbars", "--window-size=1280,900",
                                                   "--screenshot=" + shot, base + "/"}),
                           90s);
        reap_browser_orphans({c.child.pid(), w.child.pid()});
        CHECK_MESSAGE(png.status.code == 0, png.err);
        REQUIRE(std::filesystem::exists(shot));
        CHECK(std::filesystem::file_size(shot) > 1000);
        MESSAGE("screenshot: " << shot);
        std::filesystem::remove_all(profile);
      }

      // The rest of the items: the job ends; the counters rose and equal the summary.
      items.clear();
      for (int i = 200; i < 400; ++i)
        items += std::to_string(i) + "\n";
      write_all(c.in.w, items);
      c.in.close_w();
      std::string out;
      const std::string summary_line = read_until(c.out.r, "\"summary\"", out);
      REQUIRE_MESSAGE(!summary_line.empty(), out);
      const json sum = json::parse(summary_line)["summary"];
      const auto end = parse_metrics(get(base, "/metrics"));
      CHECK(end.at("ferry_tasks_completed_total") > mid.at("ferry_tasks_completed_total"));
      CHECK(end.at("ferry_job_items_done_total") == sum["items"].get<double>());
      CHECK(end.at("ferry_job_items_done_total") == 400);
      CHECK(end.at("ferry_job_items_failed_total") == sum["failed"].get<double>());
      CHECK(end.at("ferry_tasks_submitted_total") == sum["chunks"].get<double>());
      CHECK(end.at("ferry_tasks_completed_total") == sum["chunks"].get<double>());
      CHECK(end.at("ferry_task_retries_total") == sum["retries"].get<double>());
      CHECK(end.at("ferry_worker_deaths_total") == sum["worker_deaths"].get<double>());
      CHECK(end.at("ferry_tasks_in_flight") == 0);
      double per_worker = 0;
      for (const auto& wk : sum["workers"]) {
        const std::string prefix = "ferry_worker_tasks_completed_total{worker=\"w" +
                                   std::to_string(wk["worker"].get<int>());
        auto it = end.lower_bound(prefix);
        REQUIRE_MESSAGE((it != end.end() && it->first.starts_with(prefix)), prefix);
        CHECK(it->second == wk["chunks"].get<double>());
        per_worker += it->second;
      }
      CHECK(per_worker == sum["chunks"].get<double>());
      const json done = status_of(base);
      CHECK(done["job"]["finished"] == true);
      for (const auto& wk : done["workers"])
        CHECK(wk["state"] == "gone");

      c.child.kill(SIGTERM);  // ends the linger
      auto st = c.child.wait_for(30s);
      REQUIRE(st.has_value());
      CHECK(st->code == 0);
      ft::expect_exit(w.child, 0, 30s);
    }
    ft::reap_children_named("chrom", 20s);  // helpers Chromium left, re-parented to us
    leaks.verify();
  }
}
