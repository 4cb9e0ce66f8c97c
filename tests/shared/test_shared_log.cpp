// The logging facade (ferry/shared/log.hpp): levels, the text lines ferry always printed, JSON
// lines a log shipper can parse, relayed worker lines, and the rate limit of repeated warnings.
#include <doctest/doctest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "ferry/shared/log.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace fl = ferry::log;
namespace ft = ferry::testing;

namespace {

// Points the facade at a pipe for one test and back at stderr afterwards.
struct Capture {
  ft::PipeFds pipe;
  explicit Capture(fl::Level level, fl::Format format = fl::Format::text) {
    fl::configure({level, format, pipe.w});
  }
  ~Capture() { fl::configure({}); }
  Capture(const Capture&) = delete;
  Capture& operator=(const Capture&) = delete;

  // What was written so far (every write is whole lines, done before this returns).
  std::string text() {
    fl::configure({});  // nothing more goes to the pipe
    pipe.close_w();
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(pipe.r, buf, sizeof buf)) > 0)
      out.append(buf, static_cast<std::size_t>(n));
    return out;
  }
  std::vector<nlohmann::json> json() {
    std::vector<nlohmann::json> v;
    const std::string all = text();
    std::size_t pos = 0, nl;
    while ((nl = all.find('\n', pos)) != std::string::npos) {
      const std::string line = all.substr(pos, nl - pos);
      INFO("line: " << line);
      REQUIRE(nlohmann::json::accept(line));
      v.push_back(nlohmann::json::parse(line));
      pos = nl + 1;
    }
    CHECK(pos == all.size());
    return v;
  }
};

}  // namespace

TEST_SUITE("shared.log") {
  TEST_CASE("levels and formats parse from their command-line names, and nothing else") {
    CHECK(fl::parse_level("trace") == fl::Level::trace);
    CHECK(fl::parse_level("debug") == fl::Level::debug);
    CHECK(fl::parse_level("info") == fl::Level::info);
    CHECK(fl::parse_level("warn") == fl::Level::warn);
    CHECK(fl::parse_level("error") == fl::Level::error);
    CHECK_FALSE(fl::parse_level("loud").has_value());
    CHECK(fl::parse_format("json") == fl::Format::json);
    CHECK(fl::parse_format("text") == fl::Format::text);
    CHECK_FALSE(fl::parse_format("xml").has_value());
    CHECK(fl::level_name(fl::Level::warn) == "warn");
  }

  TEST_CASE("text lines are '<source>: <message>', and lines below the level are dropped") {
    Capture cap(fl::Level::warn);
    CHECK_FALSE(fl::enabled(fl::Level::info));
    CHECK(fl::enabled(fl::Level::error));
    fl::write(fl::Level::info, "ferry", "worker 3 joined");  // below warn: dropped
    fl::write(fl::Level::warn, "ferry", "worker 3 died");
    fl::write(fl::Level::error, "ferry-worker[12]", "gave up");
    fl::write(fl::Level::error, "", "bare");
    CHECK(cap.text() == "ferry: worker 3 died\nferry-worker[12]: gave up\nbare\n");
  }

  TEST_CASE("json lines are one object each, with time, level, pid, host, source, message") {
    Capture cap(fl::Level::debug, fl::Format::json);
    fl::write(fl::Level::debug, "ferry", "a \"quoted\"\nsecond line\t\x01");
    fl::write(fl::Level::trace, "ferry", "dropped");
    fl::worker_line(7, 4242, 2, "task says hi");
    const auto lines = cap.json();
    REQUIRE(lines.size() == 2);
    const auto& a = lines[0];
    CHECK(a["level"] == "debug");
    CHECK(a["source"] == "ferry");
    CHECK(a["message"] == "a \"quoted\"\nsecond line\t\x01");
    CHECK(a["pid"] == ::getpid());
    CHECK(a["host"].is_string());
    CHECK_FALSE(a.contains("worker"));
    const std::string time = a["time"];
    CHECK(time.size() == std::string("2026-12-06T21:40:01.123Z").size());
    CHECK(time.back() == 'Z');
    const auto& w = lines[1];
    CHECK(w["worker"] == 7);
    CHECK(w["worker_pid"] == 4242);
    CHECK(w["stream"] == "stderr");
    CHECK(w["message"] == "task says hi");
  }

  TEST_CASE("relayed worker lines keep their [w<id> pid <pid>] prefix, even at --log-level error") {
    Capture cap(fl::Level::error);
    fl::worker_line(2, 99, 1, "partial result 5");
    CHECK(cap.text() == "[w2 pid 99] partial result 5\n");
  }

  TEST_CASE("a repeated warning is let through once a period per key") {
    fl::RateLimiter rl(60s);
    const auto t0 = fl::RateLimiter::Clock::now();
    CHECK(rl.allow("10.0.0.5", t0));
    CHECK_FALSE(rl.allow("10.0.0.5", t0 + 1s));
    CHECK_FALSE(rl.allow("10.0.0.5", t0 + 59s));
    CHECK(rl.allow("10.0.0.6", t0 + 1s));  // another peer is another key
    CHECK(rl.allow("10.0.0.5", t0 + 60s));
    CHECK_FALSE(rl.allow("10.0.0.5", t0 + 61s));
  }

  TEST_CASE("a flood of distinct keys costs lines, never unbounded memory") {
    fl::RateLimiter rl(60s, 4);
    const auto t0 = fl::RateLimiter::Clock::now();
    for (int i = 0; i < 1000; ++i)
      CHECK(rl.allow("peer" + std::to_string(i), t0));
    // Forgotten while over the bound, so an old key may speak again: never more than once
    // a period per key as long as it stays among the remembered ones.
    CHECK(rl.allow("fresh", t0));
    CHECK_FALSE(rl.allow("fresh", t0 + 1s));
  }

  TEST_CASE("threads writing at once never split a line") {
    Capture cap(fl::Level::info);
    constexpr int kThreads = 4, kLines = 100;  // 42 KB: fits the pipe unread
    std::vector<std::thread> ts;
    for (int t = 0; t < kThreads; ++t) {
      ts.emplace_back([t] {
        for (int i = 0; i < kLines; ++i)
          fl::write(fl::Level::info, "t" + std::to_string(t), std::string(100, char('a' + t)));
      });
    }
    for (auto& t : ts)
      t.join();
    const std::string all = cap.text();
    std::size_t pos = 0, nl, n = 0;
    while ((nl = all.find('\n', pos)) != std::string::npos) {
      const std::string line = all.substr(pos, nl - pos);
      REQUIRE(line.size() == 104);
      const char c = line[4];
      CHECK(line == "t" + std::to_string(c - 'a') + ": " + std::string(100, c));
      pos = nl + 1;
      ++n;
    }
    CHECK(n == kThreads * kLines);
  }
}
