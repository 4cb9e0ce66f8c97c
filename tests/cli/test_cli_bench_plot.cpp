// `ferry-bench plot RUN.json OUTDIR` turns the JSON lines of a run into well-formed SVG charts
// (a line per transport and peer against message size, bars for pool against Python and remote
// against Dask), and refuses bad input with a message naming the file and line.
#include <doctest/doctest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "testing.hpp"

namespace {

namespace fs = std::filesystem;

// A small run: two transports and two peers at three sizes (one with a spread, as --repeat
// gives), pool figures with Python's, remote with Dask's.
std::string fixture() {
  std::ostringstream o;
  const char* sizes[] = {"64", "1024", "1048576"};
  double v = 1;
  for (const char* series :
       {"channel.shm", "channel.zmq-ipc", "baseline.raw-zmq-ipc", "peer.mpi.sm"}) {
    for (const char* b : sizes) {
      v *= 1.7;
      o << R"({"name":")" << series << ".rtt_p50_us." << b << R"(","value":)" << v
        << R"(,"unit":"us","min":)" << v * 0.9 << R"(,"max":)" << v * 1.2 << R"(,"runs":3})"
        << "\n";
      o << R"({"name":")" << series << ".msgs_per_s." << b << R"(","value":)" << 1e6 / v
        << R"(,"unit":"msg/s"})"
        << "\n";
      o << R"({"name":")" << series << ".gb_per_s." << b << R"(","value":)" << 0.1 * v
        << R"(,"unit":"GB/s"})"
        << "\n";
    }
  }
  o << R"({"name":"baseline.raw-zmq-tcp-reqrep.rtt_p50_us","value":30,"unit":"us"})"
    << "\n\n";
  for (const char* series : {"pool.shm", "peer.python_mp"}) {
    o << R"({"name":")" << series << R"(.submit_tasks_per_s","value":500000,"unit":"tasks/s"})"
      << "\n";
    o << R"({"name":")" << series
      << R"(.apply_rtt_p50_us","value":12,"unit":"us","min":10,"max":15,"runs":3})"
      << "\n";
  }
  o << R"({"name":"remote.tcp.submit_tasks_per_s","value":170000,"unit":"tasks/s"})"
    << "\n";
  o << R"({"name":"peer.dask.submit_tasks_per_s","value":650,"unit":"tasks/s"})"
    << "\n";
  return o.str();
}

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "ferry-test-plot-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Well-formed XML with an <svg> root: every element closed in order, no stray '<' or '&'.
std::string xml_problem(const std::string& doc) {
  std::vector<std::string> open;
  std::size_t i = 0;
  bool root_seen = false;
  while ((i = doc.find('<', i)) != std::string::npos) {
    const auto end = doc.find('>', i);
    if (end == std::string::npos) return "unterminated tag at " + std::to_string(i);
    const std::string tag = doc.substr(i + 1, end - i - 1);
    if (tag.empty()) return "empty tag at " + std::to_string(i);
    if (tag[0] == '?') {
      if (tag.back() != '?') return "bad declaration";
    } else if (tag[0] == '/') {
      if (open.empty() || open.back() != tag.substr(1))
        return "mismatched </" + tag.substr(1) + ">";
      open.pop_back();
    } else {
      const std::string name = tag.substr(0, tag.find_first_of(" \t\n/"));
      if (!root_seen) {
        if (name != "svg") return "root element is <" + name + ">";
        if (tag.find("xmlns=\"http://www.w3.org/2000/svg\"") == std::string::npos)
          return "no xmlns";
        root_seen = true;
      } else if (open.empty()) {
        return "element <" + name + "> after the root";
      }
      if (tag.back() != '/') open.push_back(name);
    }
    const auto next = doc.find('<', end);
    const std::string text =
        doc.substr(end + 1, next == std::string::npos ? std::string::npos : next - end - 1);
    for (std::size_t a = text.find('&'); a != std::string::npos; a = text.find('&', a + 1)) {
      if (text.find(';', a) == std::string::npos) return "bare & in text";
    }
    i = end + 1;
  }
  if (!root_seen) return "no <svg> element";
  if (!open.empty()) return "<" + open.back() + "> not closed";
  return {};
}

}  // namespace

TEST_SUITE("cli.bench_plot") {
#ifdef FERRY_BENCH_EXE
  TEST_CASE("plot writes well-formed SVG charts with a line per transport and peer") {
    ferry::testing::LeakCheck leaks;
    TempDir tmp;
    const auto run_json = tmp.path / "run.json";
    std::ofstream(run_json) << fixture();
    const auto out = tmp.path / "charts";  // made by the plot step
    const auto r = ferry::testing::run(FERRY_BENCH_EXE, {"plot", run_json.string(), out.string()},
                                       std::chrono::seconds(30));
    REQUIRE_FALSE(r.timed_out);
    REQUIRE_MESSAGE(r.status.code == 0, r.err);
    for (const char* name : {"channels_rtt_p50.svg", "channels_msgs_per_s.svg",
                             "channels_gb_per_s.svg", "pool_vs_python.svg", "remote_vs_dask.svg"}) {
      CAPTURE(name);
      const auto doc = slurp(out / name);
      CHECK_MESSAGE(xml_problem(doc).empty(), xml_problem(doc));
      CHECK(r.out.find(name) != std::string::npos);  // each file written is listed
    }
    const auto rtt = slurp(out / "channels_rtt_p50.svg");
    std::size_t lines = 0;
    for (auto p = rtt.find("<polyline"); p != std::string::npos; p = rtt.find("<polyline", p + 1))
      ++lines;
    CHECK(lines == 4u);  // channel.shm, channel.zmq-ipc, raw libzmq, Open MPI
    for (const char* label :
         {"ferry shm", "ferry zmq ipc", "raw libzmq ipc", "Open MPI", "64 B", "1 KiB", "1 MiB"}) {
      CHECK_MESSAGE(rtt.find(label) != std::string::npos, label);
    }
    CHECK(rtt.find("reqrep") == std::string::npos);  // a figure without a size is not a point
    const auto pool = slurp(out / "pool_vs_python.svg");
    CHECK(pool.find("Python multiprocessing.Pool") != std::string::npos);
    CHECK(pool.find("map, items/s") == std::string::npos);  // no map figures: no empty panel
    leaks.verify();
  }

  TEST_CASE("plot refuses a bad line, a missing file and a run with nothing to draw") {
    TempDir tmp;
    const auto bad = tmp.path / "bad.json";
    std::ofstream(bad) << R"({"name":"channel.shm.rtt_p50_us.64","value":1,"unit":"us"})"
                       << "\nnot json\n";
    auto r = ferry::testing::run(FERRY_BENCH_EXE, {"plot", bad.string(), (tmp.path / "o").string()},
                                 std::chrono::seconds(30));
    REQUIRE_FALSE(r.timed_out);
    CHECK(r.status.code == 1);
    CHECK_MESSAGE(r.err.find("line 2") != std::string::npos, r.err);

    r = ferry::testing::run(FERRY_BENCH_EXE,
                            {"plot", (tmp.path / "absent.json").string(), tmp.path.string()},
                            std::chrono::seconds(30));
    CHECK(r.status.code == 1);
    CHECK_MESSAGE(r.err.find("cannot read") != std::string::npos, r.err);

    const auto empty = tmp.path / "sync.json";
    std::ofstream(empty) << R"({"name":"sync.lock.ns","value":20,"unit":"ns"})"
                         << "\n";
    r = ferry::testing::run(FERRY_BENCH_EXE, {"plot", empty.string(), tmp.path.string()},
                            std::chrono::seconds(30));
    CHECK(r.status.code == 1);
    CHECK_MESSAGE(r.err.find("no channel, pool or remote figures") != std::string::npos, r.err);

    r = ferry::testing::run(FERRY_BENCH_EXE, {"plot", bad.string()}, std::chrono::seconds(30));
    CHECK(r.status.code == 2);  // usage: OUTDIR missing
  }
#endif
}
