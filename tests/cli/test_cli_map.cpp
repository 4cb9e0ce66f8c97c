// ferry-coordinator map / tasks: output, exit codes, interruption and coordinator death.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "ferry/shared/session.hpp"
#include "testing.hpp"

using namespace std::chrono_literals;
namespace ft = ferry::testing;

namespace {

std::string session_env() {
  return std::string(ferry::kSessionEnv) + "=" + ferry::SessionId::current().str();
}

// Starts ferry-coordinator with stdout on a pipe; returns the child and the pipe's read end.
std::pair<ft::Child, int> start_coordinator(const std::vector<std::string>& args) {
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  ft::SpawnOptions o;
  o.stdout_fd = p[1];
  o.env.push_back(session_env());
  auto c = ft::spawn(FERRY_COORDINATOR_EXE, args, o);
  ::close(p[1]);
  return {std::move(c), p[0]};
}

// Each line of a --json run, parsed (every line must be a JSON document).
std::vector<nlohmann::json> json_lines(const std::string& out) {
  std::vector<nlohmann::json> lines;
  std::size_t pos = 0, nl;
  while ((nl = out.find('\n', pos)) != std::string::npos) {
    const std::string line = out.substr(pos, nl - pos);
    INFO("line: " << line);
    REQUIRE(nlohmann::json::accept(line));
    lines.push_back(nlohmann::json::parse(line));
    pos = nl + 1;
  }
  CHECK(pos == out.size());  // nothing after the last newline
  return lines;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Reads stdout until a whole line arrives (a readiness message: the first result is out).
std::string read_line(int fd) {
  std::string line;
  char ch;
  while (::read(fd, &ch, 1) == 1 && ch != '\n')
    line.push_back(ch);
  return line;
}

}  // namespace

TEST_SUITE("cli.map") {
  TEST_CASE("map prints one result per line in input order, identically over every transport") {
    ft::LeakCheck leaks;
    std::string expected;
    for (int i = 0; i < 200; ++i)
      expected += std::to_string(i * i) + "\n";
    for (const char* t : {"pipe", "shm", "zmq"}) {
      CAPTURE(t);
      auto r = ft::run(
          FERRY_COORDINATOR_EXE,
          {"-w", "2", "-t", t, "map", "square", "--range", "0:200", "--chunksize", "7"}, 60s);
      CHECK(r.status.code == 0);
      CHECK(r.out == expected);
      CHECK(r.err.find("200 items") != std::string::npos);
    }
    leaks.verify();
  }

  TEST_CASE("map --unordered prints every result once, and --items and --stdin feed it") {
    auto r = ft::run(FERRY_COORDINATOR_EXE,
                     {"-w", "2", "map", "square", "--items", "3,1,2", "--unordered"}, 60s);
    CHECK(r.status.code == 0);
    std::multiset<std::string> lines;
    std::size_t pos = 0, nl;
    while ((nl = r.out.find('\n', pos)) != std::string::npos) {
      lines.insert(r.out.substr(pos, nl - pos));
      pos = nl + 1;
    }
    CHECK(lines == std::multiset<std::string>{"1", "4", "9"});
    auto s = ft::run(FERRY_COORDINATOR_EXE, {"-w", "1", "map", "square", "--stdin"}, 60s, "5\n6\n");
    CHECK(s.status.code == 0);
    CHECK(s.out == "25\n36\n");
  }

  TEST_CASE("failed items go to stderr with their input and the exit status is 1") {
    auto r = ft::run(FERRY_COORDINATOR_EXE, {"-w", "2", "map", "fail", "--items", "41,42"}, 60s);
    CHECK(r.status.code == 1);
    CHECK(r.err.find("fail(41) failed") != std::string::npos);
    CHECK(r.err.find("fail(42)") != std::string::npos);
    auto c = ft::run(FERRY_COORDINATOR_EXE,
                     {"-w", "2", "--max-retries", "1", "map", "crash", "--items", "1"}, 60s);
    CHECK(c.status.code == 1);
    CHECK(c.err.find("WorkerDied") != std::string::npos);
    CHECK(c.err.find("attempt 2/2") != std::string::npos);
  }

  TEST_CASE("map usage errors exit 2") {
    CHECK(ft::run(FERRY_COORDINATOR_EXE, {"map", "no_such_task", "--range", "0:3"}).status.code ==
          2);
    CHECK(ft::run(FERRY_COORDINATOR_EXE, {"map", "square"}).status.code == 2);
    CHECK(ft::run(FERRY_COORDINATOR_EXE, {"map", "square", "--range", "9:1"}).status.code == 2);
    CHECK(ft::run(FERRY_COORDINATOR_EXE, {"map", "square", "--items", "x"}).status.code == 2);
  }

  TEST_CASE("--json gives one object per result and a summary line") {
    auto r =
        ft::run(FERRY_COORDINATOR_EXE, {"-w", "1", "--json", "map", "blob", "--items", "16"}, 60s);
    CHECK(r.status.code == 0);
    CHECK(r.out.find("\"input\":\"16\"") != std::string::npos);
    CHECK(r.out.find("16 bytes fnv1a=") != std::string::npos);
    CHECK(r.out.find("{\"summary\":") != std::string::npos);
  }

  TEST_CASE("tasks lists the built-in tasks") {
    auto r = ft::run(FERRY_COORDINATOR_EXE, {"tasks"});
    CHECK(r.status.code == 0);
    for (const char* t : {"square", "sleep_ms", "spin_ms", "count_primes", "fail", "crash", "blob"})
      CHECK(r.out.find(t) != std::string::npos);
  }

  TEST_CASE("Ctrl-C cancels: exit 130 within 2 s, workers gone, nothing left behind") {
    ft::LeakCheck leaks;
    {
      auto [c, fd] = start_coordinator(
          {"-w", "2", "map", "sleep_ms", "--items", "1,20000,20000", "--chunksize", "1"});
      CHECK(read_line(fd) == "1");  // workers are up and the long tasks are running
      const auto t0 = std::chrono::steady_clock::now();
      c.kill(SIGINT);
      auto st = c.wait_for(5s);
      REQUIRE(st.has_value());
      CHECK(st->code == 130);
      CHECK(std::chrono::steady_clock::now() - t0 < 2s);
      ::close(fd);
    }
    leaks.verify();
  }

  TEST_CASE("a SIGKILLed coordinator's workers exit within 2 s") {
    ft::LeakCheck leaks;
    {
      // --wait-workers 2: both workers have attached their segments (whose names are then
      // unlinked) before the kill; a worker killed before it attached leaves its segment to
      // the next coordinator's sweep.
      auto [c, fd] = start_coordinator({"-w", "2", "--wait-workers", "2", "map", "sleep_ms",
                                        "--items", "1,20000,20000", "--chunksize", "1"});
      CHECK(read_line(fd) == "1");
      c.kill(SIGKILL);
      REQUIRE(c.wait_for(5s).has_value());
      // Its workers were re-parented to this test process (a subreaper): each must die promptly.
      const auto t0 = std::chrono::steady_clock::now();
      for (pid_t pid : ft::child_pids()) {
        ft::Child orphan(pid);
        CHECK(orphan.wait_for(2s).has_value());
      }
      CHECK(std::chrono::steady_clock::now() - t0 < 2s);
      ::close(fd);
    }
    leaks.verify();
  }

  TEST_CASE("map --input json: a struct argument and a struct result (stats)") {
    ft::LeakCheck leaks;
    const std::string in = R"({"label": "a", "values": [1, 2, 3, 4]})"
                           "\n"
                           R"({"values": [2.5], "label": "b"})"
                           "\n";
    auto r = ft::run(FERRY_COORDINATOR_EXE,
                     {"-w", "2", "--json", "map", "stats", "--stdin", "--input", "json"}, 60s, in);
    CHECK(r.status.code == 0);
    auto lines = json_lines(r.out);
    REQUIRE(lines.size() == 3);  // two results and the summary
    CHECK(lines[0]["index"] == 0);
    CHECK(lines[0]["ok"] == true);
    const auto& a = lines[0]["value"];
    REQUIRE(a.is_object());
    CHECK(a["label"] == "a");
    CHECK(a["count"] == 4);
    CHECK(a["mean"] == 2.5);
    CHECK(a["min"] == 1.0);
    CHECK(a["max"] == 4.0);
    CHECK(a["stddev"].get<double>() == doctest::Approx(1.118034));
    CHECK(lines[1]["value"]["label"] == "b");
    CHECK(lines[1]["value"]["count"] == 1);
    CHECK(lines[2]["summary"]["items"] == 2);
    // Text output prints a struct as its JSON too, one per line.
    auto t = ft::run(FERRY_COORDINATOR_EXE,
                     {"-w", "1", "map", "stats", "--stdin", "--input", "json"}, 60s, in);
    CHECK(t.status.code == 0);
    auto text = json_lines(t.out);
    REQUIRE(text.size() == 2);
    CHECK(text[0]["label"] == "a");
    CHECK(text[1]["mean"] == 2.5);
    leaks.verify();
  }

  TEST_CASE("map --input json: several parameters are one JSON array per line (repeat)") {
    ft::LeakCheck leaks;
    auto r =
        ft::run(FERRY_COORDINATOR_EXE,
                {"-w", "2", "--json", "map", "repeat", "--stdin", "--input", "json", "--unordered"},
                60s, "[\"ab\", 3]\n[\"\\\"q\\\"\", 2]\n[\"x\", 0]\n");
    CHECK(r.status.code == 0);
    auto lines = json_lines(r.out);
    REQUIRE(lines.size() == 4);
    std::map<int, std::string> values;
    for (std::size_t i = 0; i < 3; ++i) {
      CHECK(lines[i]["ok"] == true);
      REQUIRE(lines[i]["value"].is_string());
      values[lines[i]["index"].get<int>()] = lines[i]["value"].get<std::string>();
    }
    CHECK(values == std::map<int, std::string>{{0, "ababab"}, {1, "\"q\"\"q\""}, {2, ""}});
    leaks.verify();
  }

  TEST_CASE("--json writes values as JSON: numbers as numbers, Bytes as their summary") {
    ft::LeakCheck leaks;
    auto r = ft::run(FERRY_COORDINATOR_EXE,
                     {"-w", "1", "--json", "map", "square", "--items", "3,-4"}, 60s);
    CHECK(r.status.code == 0);
    auto lines = json_lines(r.out);
    REQUIRE(lines.size() == 3);
    CHECK(lines[0] == nlohmann::json{{"index", 0}, {"input", "3"}, {"ok", true}, {"value", 9}});
    CHECK(lines[1]["value"] == 16);
    CHECK(lines[1]["value"].is_number_integer());
    auto b =
        ft::run(FERRY_COORDINATOR_EXE, {"-w", "1", "--json", "map", "blob", "--items", "16"}, 60s);
    auto blob = json_lines(b.out);
    REQUIRE(blob.size() == 2);
    CHECK(blob[0]["value"].get<std::string>().rfind("16 bytes fnv1a=", 0) == 0);
    leaks.verify();
  }

  TEST_CASE(
      "bad --input json lines: each reported with its own line, the others still run, exit 1") {
    ft::LeakCheck leaks;
    const std::string too_long = "[\"" + std::string(100, 'z') + "\", 1]";
    const std::string in =
        "[\"a\", 2]\n"  // line 0: ok
        "[\"a\" 2]\n"   // line 1: not JSON
        "[\"a\"]\n"     // line 2: one value for two parameters
        "[2, \"a\"]\n"  // line 3: wrong types
        "\n"            // line 4: empty, skipped (no item)
        "[\"b\", 1]\n"  // line 5: ok
        + too_long +
        "\n"           // line 6: over --max-line
        "[\"c\", 1]";  // line 7: ok, without a newline
    auto r = ft::run(FERRY_COORDINATOR_EXE,
                     {"-w", "2", "--json", "map", "repeat", "--stdin", "--input", "json",
                      "--max-line", "64", "--chunksize", "2"},
                     60s, in);
    CHECK(r.status.code == 1);
    auto lines = json_lines(r.out);
    REQUIRE(lines.size() == 8);  // 7 items and the summary
    // index counts items (the empty line is none); "line N" counts every line from 0.
    const std::vector<std::pair<int, std::string>> expected = {
        {0, ""},
        {1,
         "line 1: not valid JSON for (std::string, long): Missing a comma or ']' after an "
         "array element (at byte 5)"},
        {2,
         "line 2: not valid JSON for (std::string, long): wants an array of 2 values (one per "
         "parameter), got 1 value"},
        {3,
         "line 3: not valid JSON for (std::string, long): parameter 0 (std::string): wants a "
         "string, got an integer"},
        {4, ""},
        {5, "line 6: longer than --max-line (64 bytes); skipped"},
        {6, ""},
    };
    for (std::size_t i = 0; i < expected.size(); ++i) {
      CAPTURE(i);
      CHECK(lines[i]["index"] == expected[i].first);
      CHECK(lines[i]["ok"] == expected[i].second.empty());
      if (expected[i].second.empty()) {
        CHECK(lines[i].contains("value"));
      } else {
        CHECK(lines[i]["error"] == expected[i].second);
      }
    }
    CHECK(lines[0]["value"] == "aa");
    CHECK(lines[4]["value"] == "b");
    CHECK(lines[6]["value"] == "c");
    CHECK(lines[5]["input"].get<std::string>().rfind("[\"zzz", 0) == 0);
    CHECK(lines[7]["summary"]["failed"] == 4);
    CHECK(lines[7]["summary"]["items"] == 7);
    // The same in text: results on stdout, each bad line on stderr with its line and reason.
    auto t = ft::run(FERRY_COORDINATOR_EXE,
                     {"-w", "2", "map", "repeat", "--stdin", "--input", "json", "--max-line", "64"},
                     60s, in);
    CHECK(t.status.code == 1);
    CHECK(t.out == "aa\nb\nc\n");
    for (const char* why :
         {"repeat([\"a\" 2]) not run: line 1: not valid JSON for (std::string, long): Missing a "
          "comma",
          "not run: line 2: not valid JSON for (std::string, long): wants an array of 2 values",
          "not run: line 3: not valid JSON for (std::string, long): parameter 0 (std::string)",
          "not run: line 6: longer than --max-line (64 bytes); skipped"}) {
      CAPTURE(why);
      CHECK(contains(t.err, why));
    }
    leaks.verify();
  }

  TEST_CASE("a bad text line on --stdin fails only that line (a bad --items item: usage error)") {
    ft::LeakCheck leaks;
    auto r =
        ft::run(FERRY_COORDINATOR_EXE, {"-w", "1", "map", "square", "--stdin"}, 60s, "1\nx\n3\n");
    CHECK(r.status.code == 1);
    CHECK(r.out == "1\n9\n");
    CHECK(contains(r.err, "square(x) not run: line 1: not a number: 'x'"));
    auto items = ft::run(FERRY_COORDINATOR_EXE, {"-w", "1", "map", "square", "--items", "1,2,x"});
    CHECK(items.status.code == 2);
    CHECK(contains(items.err, "item 2: not a number: 'x'"));
    leaks.verify();
  }

  TEST_CASE("a line over --max-line is dropped as it is read, never held") {
    ft::LeakCheck leaks;
    {
      ft::PipeFds in, out;
      ft::SpawnOptions o;
      o.fds = {{in.r, 0}};
      o.stdout_fd = out.w;
      o.env.push_back(session_env());
      auto c = ft::spawn(FERRY_COORDINATOR_EXE,
                         {"-w", "1", "map", "square", "--stdin", "--max-line", "1048576"}, o);
      in.close_r();
      out.close_w();
      const auto write_all = [&](std::string_view data) {
        for (std::size_t off = 0; off < data.size();) {
          const auto n = ::write(in.w, data.data() + off, data.size() - off);
          REQUIRE(n > 0);
          off += static_cast<std::size_t>(n);
        }
      };
      // The coordinator's peak RSS so far (stdin stays open, so it is still there to measure).
      const auto peak_kib = [&] {
        long kib = -1;
        std::ifstream status("/proc/" + std::to_string(c.pid()) + "/status");
        for (std::string key; status >> key;) {
          if (key == "VmHWM:") status >> kib;
        }
        REQUIRE(kib > 0);
        return kib;
      };
      // A first item: the pool is up, and the peak so far is the baseline (large under ASan).
      write_all("2\n");
      CHECK(ft::read_line(out.r, 60s) == "4");
      const long before = peak_kib();
      // 256 MiB in one line, then a good line, whose result says the long one has been read.
      const std::string block(std::size_t{1} << 20, '7');
      for (int i = 0; i < 256; ++i)
        write_all(block);
      write_all("\n5\n");
      CHECK(ft::read_line(out.r, 60s) == "25");
      const long grown_mib = (peak_kib() - before) / 1024;
      MESSAGE("coordinator's peak RSS grew by " << grown_mib << " MiB over a 256 MiB line");
      CHECK(grown_mib < 64);
      in.close_w();
      ft::expect_exit(c, 1);
    }
    leaks.verify();
  }

  TEST_CASE("--input json and --max-line usage errors exit 2 and say why") {
    ft::LeakCheck leaks;
    auto text_only = ft::run(FERRY_COORDINATOR_EXE, {"map", "stats", "--stdin"});
    CHECK(text_only.status.code == 2);
    CHECK(contains(text_only.err, "give its arguments as JSON lines: --stdin --input json"));
    auto items =
        ft::run(FERRY_COORDINATOR_EXE, {"map", "square", "--items", "1", "--input", "json"});
    CHECK(items.status.code == 2);
    CHECK(contains(items.err, "--input json reads --stdin"));
    CHECK(ft::run(FERRY_COORDINATOR_EXE, {"map", "square", "--stdin", "--input", "yaml"})
              .status.code == 2);
    CHECK(ft::run(FERRY_COORDINATOR_EXE, {"map", "square", "--stdin", "--max-line", "0"})
              .status.code == 2);
    auto range =
        ft::run(FERRY_COORDINATOR_EXE, {"map", "square", "--range", "0:3", "--max-line", "9"});
    CHECK(range.status.code == 2);
    CHECK(contains(range.err, "--max-line bounds --stdin lines"));
    leaks.verify();
  }
}
