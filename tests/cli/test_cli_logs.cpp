// --log-level and --log-format of ferry-coordinator and ferry-worker, and the stack trace of
// a failed item in map's failure lines (stderr) and in its --json result lines (stdout).
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> v;
  std::size_t pos = 0, nl;
  while ((nl = text.find('\n', pos)) != std::string::npos) {
    v.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  if (pos < text.size()) v.push_back(text.substr(pos));
  return v;
}

// Every line must be one JSON object.
std::vector<nlohmann::json> json_lines(const std::string& text) {
  std::vector<nlohmann::json> v;
  for (const auto& l : lines_of(text)) {
    INFO("line: " << l);
    REQUIRE(nlohmann::json::accept(l));
    v.push_back(nlohmann::json::parse(l));
  }
  return v;
}

}  // namespace

TEST_SUITE("cli.logs") {
  TEST_CASE("a failed item's line says where it threw, --log-level debug gives the whole trace") {
    ft::LeakCheck leaks;
    auto r = ft::run(FERRY_COORDINATOR_EXE, {"-w", "1", "map", "fail", "--items", "3,4"}, 60s);
    CHECK(r.status.code == 1);
    INFO("stderr:\n" << r.err);
    CHECK(contains(r.err, "ferry: fail(3) failed: "));
    // The frame under the failure line names the function that threw.
    CHECK(contains(r.err, "\n    thrown in ferry::builtin::fail("));
    CHECK_FALSE(contains(r.err, "    #0 "));  // not the whole trace by default

    auto d = ft::run(FERRY_COORDINATOR_EXE,
                     {"-w", "1", "--log-level", "debug", "map", "fail", "--items", "3"}, 60s);
    CHECK(d.status.code == 1);
    INFO("stderr (debug):\n" << d.err);
    CHECK(contains(d.err, "\n    #0 ferry::builtin::fail("));
    CHECK(contains(d.err, " started (pid "));  // a debug line: "ferry: worker N started"

    auto e = ft::run(FERRY_COORDINATOR_EXE,
                     {"-w", "1", "--log-level", "error", "map", "fail", "--items", "3"}, 60s);
    CHECK(contains(e.err, "fail(3) failed"));  // failures are errors: always shown
    leaks.verify();
  }

  TEST_CASE("map --json puts a failed item's stack trace in its result line") {
    auto r =
        ft::run(FERRY_COORDINATOR_EXE, {"-w", "1", "--json", "map", "fail", "--items", "5"}, 60s);
    CHECK(r.status.code == 1);
    const auto out = json_lines(r.out);
    REQUIRE(out.size() == 2);  // the item and the summary
    CHECK(out[0]["ok"] == false);
    REQUIRE(out[0].contains("stack"));
    const std::string stack = out[0]["stack"];
    CHECK(stack.rfind("#0 ferry::builtin::fail(", 0) == 0);
  }

  TEST_CASE("--log-format json: every stderr line is a JSON object, results stay on stdout") {
    auto r = ft::run(FERRY_COORDINATOR_EXE,
                     {"-w", "1", "--log-format", "json", "map", "fail", "--items", "6,7"}, 60s);
    CHECK(r.status.code == 1);
    INFO("stderr:\n" << r.err);
    const auto lines = json_lines(r.err);
    REQUIRE_FALSE(lines.empty());
    int failures = 0;
    for (const auto& l : lines) {
      CHECK(l.contains("time"));
      CHECK(l.contains("level"));
      CHECK(l.contains("pid"));
      CHECK(l.contains("host"));
      const std::string msg = l["message"];
      if (contains(msg, ") failed: ")) {
        ++failures;
        CHECK(l["level"] == "error");
        CHECK(contains(msg, "thrown in ferry::builtin::fail("));
      }
    }
    CHECK(failures == 2);
    auto ok = ft::run(FERRY_COORDINATOR_EXE,
                      {"-w", "1", "--log-format", "json", "map", "square", "--items", "3"}, 60s);
    CHECK(ok.status.code == 0);
    CHECK(ok.out == "9\n");
  }

  TEST_CASE("a worker's own lines follow its --log-format, and bad log options are usage errors") {
    ft::LeakCheck leaks;
    // Nothing listens there: the worker says it lost the coordinator, then gives up.
    auto r = ft::run(
        FERRY_WORKER_EXE,
        {"--connect", "tcp://127.0.0.1:9", "--reconnect-timeout", "0.3", "--log-format", "json"},
        60s);
    CHECK(r.status.code != 0);
    INFO("stderr:\n" << r.err);
    const auto lines = json_lines(r.err);
    REQUIRE(lines.size() >= 2);
    CHECK(lines.back()["level"] == "error");
    CHECK(contains(lines.back()["message"].get<std::string>(), "gave up"));
    CHECK(contains(lines.back()["source"].get<std::string>(), "ferry-worker["));

    // --log-level error keeps the error, drops the warning before it.
    auto q = ft::run(
        FERRY_WORKER_EXE,
        {"--connect", "tcp://127.0.0.1:9", "--reconnect-timeout", "0.3", "--log-level", "error"},
        60s);
    CHECK(lines_of(q.err).size() == 1);
    CHECK(contains(q.err, "gave up"));

    CHECK(ft::run(FERRY_WORKER_EXE, {"--connect", "tcp://127.0.0.1:9", "--log-level", "loud"})
              .status.code == 2);
    CHECK(ft::run(FERRY_COORDINATOR_EXE, {"--log-format", "xml", "tasks"}).status.code == 2);
    CHECK(ft::run(FERRY_COORDINATOR_EXE, {"--log-level", "trace", "tasks"}).status.code == 0);
    leaks.verify();
  }
}
