// `ferry-bench plot RUN.json OUTDIR`: SVG charts from the JSON lines of a `ferry-bench --json`
// run. SVG is written directly (no gnuplot): the charts are a few lines and bars, and the step
// then works wherever ferry-bench does. Charts (each only when the run has its figures):
//   channels_rtt_p50.svg, channels_msgs_per_s.svg, channels_gb_per_s.svg: a figure against the
//     message size (log-log), one line per ferry transport (solid) and per peer (dashed);
//   pool_vs_python.svg: pool figures beside Python's pools, one panel per figure;
//   remote_vs_dask.svg: remote figures beside Dask.
// With --repeat runs, min/max are drawn as error bars.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "ferry/shared/cli_support.hpp"
#include "harness.hpp"

namespace ferry::bench {

namespace {

namespace fs = std::filesystem;

struct Point {
  double value = 0, min = 0, max = 0;
};
using Figures = std::map<std::string, Point>;

const char* const kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                                "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};

std::string esc(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", v);
  return b;
}

// 1234567 -> "1.23M"; 2500 -> "2.5k"; 0.05 -> "0.05".
std::string short_value(double v) {
  char b[32];
  const double a = std::fabs(v);
  if (a >= 1e9) {
    std::snprintf(b, sizeof b, "%.3gG", v / 1e9);
  } else if (a >= 1e6) {
    std::snprintf(b, sizeof b, "%.3gM", v / 1e6);
  } else if (a >= 1e3) {
    std::snprintf(b, sizeof b, "%.3gk", v / 1e3);
  } else {
    std::snprintf(b, sizeof b, "%.3g", v);
  }
  return b;
}

std::string size_label(double bytes) {
  const auto b = static_cast<long long>(bytes);
  if (b >= (1 << 20) && b % (1 << 20) == 0) return std::to_string(b >> 20) + " MiB";
  if (b >= 1024 && b % 1024 == 0) return std::to_string(b >> 10) + " KiB";
  return std::to_string(b) + " B";
}

std::string series_label(const std::string& s) {
  static const std::map<std::string, std::string> names{
      {"channel.pipe", "ferry pipe"},
      {"channel.shm", "ferry shm"},
      {"channel.zmq-ipc", "ferry zmq ipc"},
      {"channel.zmq-tcp", "ferry zmq tcp"},
      {"baseline.raw-pipe", "raw pipe"},
      {"baseline.raw-zmq-ipc", "raw libzmq ipc"},
      {"baseline.raw-zmq-tcp", "raw libzmq tcp"},
      {"baseline.boost-mq", "Boost message_queue"},
      {"peer.mpi.sm", "Open MPI (shared memory)"},
      {"pool.shm", "ferry pool, shm"},
      {"pool.pipe", "ferry pool, pipe"},
      {"pool.zmq", "ferry pool, zmq"},
      {"peer.python_mp", "Python multiprocessing.Pool"},
      {"peer.python_futures", "Python ProcessPoolExecutor"},
      {"remote.tcp", "ferry remote, tcp"},
      {"remote.tcp_curve", "ferry remote, tcp + CURVE"},
      {"peer.dask", "Dask LocalCluster"},
  };
  auto it = names.find(s);
  return it != names.end() ? it->second : s;
}

class Svg {
 public:
  Svg(int w, int h) : w_(w), h_(h) {}
  std::ostringstream& o() { return o_; }
  void text(double x, double y, const std::string& s, const char* anchor = "middle", int size = 12,
            const char* extra = "") {
    o_ << "<text x=\"" << num(x) << "\" y=\"" << num(y) << "\" text-anchor=\"" << anchor
       << "\" font-size=\"" << size << "\"" << extra << ">" << esc(s) << "</text>\n";
  }
  void line(double x1, double y1, double x2, double y2, const std::string& stroke, double width = 1,
            const char* extra = "") {
    o_ << "<line x1=\"" << num(x1) << "\" y1=\"" << num(y1) << "\" x2=\"" << num(x2) << "\" y2=\""
       << num(y2) << "\" stroke=\"" << stroke << "\" stroke-width=\"" << width << "\"" << extra
       << "/>\n";
  }
  std::string str() const {
    std::ostringstream s;
    s << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << w_ << "\" height=\"" << h_
      << "\" viewBox=\"0 0 " << w_ << " " << h_ << "\" font-family=\"sans-serif\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << o_.str() << "</svg>\n";
    return s.str();
  }

 private:
  int w_, h_;
  std::ostringstream o_;
};

// A line chart of metric against message size: names "<series>.<metric>.<bytes>".
struct Series {
  std::string name;
  std::map<double, Point> points;  // bytes -> figure
};

std::vector<Series> by_size(const Figures& f, const std::string& metric) {
  std::vector<Series> out;
  const std::string mid = "." + metric + ".";
  for (const auto& [name, p] : f) {
    const auto at = name.rfind(mid);
    if (at == std::string::npos) continue;
    const auto tail = name.substr(at + mid.size());
    if (tail.empty() || tail.find_first_not_of("0123456789") != std::string::npos) continue;
    const auto series = name.substr(0, at);
    if (series.rfind("channel.", 0) != 0 && series.rfind("baseline.", 0) != 0 &&
        series.rfind("peer.", 0) != 0) {
      continue;
    }
    if (!(p.value > 0)) continue;  // a log axis: nothing to draw for 0 or NaN
    auto it =
        std::find_if(out.begin(), out.end(), [&](const Series& s) { return s.name == series; });
    if (it == out.end()) it = out.insert(out.end(), Series{series, {}});
    it->points[std::stod(tail)] = p;
  }
  // ferry's own lines first, then the peers.
  std::stable_sort(out.begin(), out.end(), [](const Series& a, const Series& b) {
    return (a.name.rfind("channel.", 0) == 0) > (b.name.rfind("channel.", 0) == 0);
  });
  return out;
}

bool line_chart(const Figures& f, const std::string& metric, const std::string& title,
                const std::string& ylabel, const fs::path& file) {
  const auto series = by_size(f, metric);
  if (series.empty()) return false;
  double xmin = INFINITY, xmax = 0, ymin = INFINITY, ymax = 0;
  for (const auto& s : series) {
    for (const auto& [x, p] : s.points) {
      xmin = std::min(xmin, x);
      xmax = std::max(xmax, x);
      ymin = std::min({ymin, p.value, p.min > 0 ? p.min : p.value});
      ymax = std::max({ymax, p.value, p.max});
    }
  }
  const int W = 820, H = 460, L = 80, R = 250, T = 40, B = 60;
  const double pw = W - L - R, ph = H - T - B;
  const double lx0 = std::log10(xmin) - 0.3, lx1 = std::log10(xmax) + 0.3;
  double ly0 = std::floor(std::log10(ymin)), ly1 = std::ceil(std::log10(ymax));
  if (ly1 <= ly0) ly1 = ly0 + 1;
  const auto X = [&](double x) { return L + (std::log10(x) - lx0) / (lx1 - lx0) * pw; };
  const auto Y = [&](double y) { return T + ph - (std::log10(y) - ly0) / (ly1 - ly0) * ph; };

  Svg svg(W, H);
  svg.text(W / 2.0 - R / 2.0, 24, title, "middle", 15, " font-weight=\"bold\"");
  svg.o() << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << pw << "\" height=\"" << ph
          << "\" fill=\"none\" stroke=\"#444\"/>\n";
  for (int d = static_cast<int>(ly0); d <= static_cast<int>(ly1); ++d) {
    const double y = Y(std::pow(10.0, d));
    svg.line(L, y, L + pw, y, "#ddd");
    svg.text(L - 6, y + 4, short_value(std::pow(10.0, d)), "end", 11);
  }
  std::vector<double> xs;
  for (const auto& s : series) {
    for (const auto& kv : s.points)
      xs.push_back(kv.first);
  }
  std::sort(xs.begin(), xs.end());
  xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
  for (double x : xs) {
    svg.line(X(x), T, X(x), T + ph, "#eee");
    svg.text(X(x), T + ph + 18, size_label(x), "middle", 11);
  }
  svg.text(L + pw / 2, H - 16, "message size (log scale)", "middle", 12);
  svg.text(18, T + ph / 2, ylabel + " (log scale)", "middle", 12,
           (" transform=\"rotate(-90 18 " + num(T + ph / 2) + ")\"").c_str());

  int i = 0;
  for (const auto& s : series) {
    const std::string color = kPalette[static_cast<std::size_t>(i) % std::size(kPalette)];
    const bool ferry = s.name.rfind("channel.", 0) == 0;
    std::string pts;
    for (const auto& [x, p] : s.points)
      pts += num(X(x)) + "," + num(Y(p.value)) + " ";
    svg.o() << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\""
            << (ferry ? 2.5 : 1.5) << "\"" << (ferry ? "" : " stroke-dasharray=\"6 4\"")
            << " points=\"" << pts << "\"/>\n";
    for (const auto& [x, p] : s.points) {
      if (p.max > p.min && p.min > 0) svg.line(X(x), Y(p.min), X(x), Y(p.max), color, 1.5);
      svg.o() << "<circle cx=\"" << num(X(x)) << "\" cy=\"" << num(Y(p.value))
              << "\" r=\"3.5\" fill=\"" << color << "\"><title>" << esc(s.name) << "."
              << esc(metric) << "." << static_cast<long long>(x) << " = " << p.value
              << "</title></circle>\n";
    }
    const double ly = T + 10 + i * 20.0;
    svg.line(L + pw + 14, ly, L + pw + 44, ly, color, ferry ? 2.5 : 1.5,
             ferry ? "" : " stroke-dasharray=\"6 4\"");
    svg.text(L + pw + 50, ly + 4, series_label(s.name), "start", 12);
    ++i;
  }
  std::ofstream(file) << svg.str();
  return true;
}

// Bars: one panel per figure (its own linear axis), one bar per series present.
bool bar_chart(const Figures& f, const std::vector<std::string>& series,
               const std::vector<std::pair<std::string, std::string>>& panels,  // metric, title
               const std::string& title, const fs::path& file) {
  std::vector<std::pair<std::string, std::string>> shown;
  for (const auto& pn : panels) {
    const bool any = std::any_of(series.begin(), series.end(),
                                 [&](const std::string& s) { return f.count(s + "." + pn.first); });
    if (any) shown.push_back(pn);
  }
  if (shown.empty()) return false;
  std::vector<std::string> present;
  for (const auto& s : series) {
    const bool any = std::any_of(shown.begin(), shown.end(),
                                 [&](const auto& pn) { return f.count(s + "." + pn.first); });
    if (any) present.push_back(s);
  }
  const int PW = 200, gap = 40, L = 60, T = 50, PH = 260;
  const int W = L + static_cast<int>(shown.size()) * (PW + gap);
  const int H = T + PH + 50 + static_cast<int>(present.size()) * 20;
  Svg svg(W, H);
  svg.text(W / 2.0, 24, title, "middle", 15, " font-weight=\"bold\"");
  for (std::size_t k = 0; k < shown.size(); ++k) {
    const double x0 = L + static_cast<double>(k) * (PW + gap);
    double top = 0;
    for (const auto& s : present) {
      auto it = f.find(s + "." + shown[k].first);
      if (it != f.end()) top = std::max({top, it->second.value, it->second.max});
    }
    if (!(top > 0)) top = 1;
    top *= 1.2;
    const auto Y = [&](double v) { return T + PH - v / top * PH; };
    svg.o() << "<rect x=\"" << num(x0) << "\" y=\"" << T << "\" width=\"" << PW << "\" height=\""
            << PH << "\" fill=\"none\" stroke=\"#444\"/>\n";
    for (int t = 0; t <= 4; ++t) {
      const double v = top * t / 5.0;
      svg.line(x0, Y(v), x0 + PW, Y(v), "#eee");
      svg.text(x0 - 4, Y(v) + 4, short_value(v), "end", 10);
    }
    svg.text(x0 + PW / 2.0, T + PH + 18, shown[k].second, "middle", 11);
    const double bw = static_cast<double>(PW) / (static_cast<double>(present.size()) + 1);
    for (std::size_t i = 0; i < present.size(); ++i) {
      auto it = f.find(present[i] + "." + shown[k].first);
      if (it == f.end() || !(it->second.value >= 0)) continue;
      const auto& p = it->second;
      const std::string color = kPalette[static_cast<std::size_t>(i) % std::size(kPalette)];
      const double bx = x0 + bw * (static_cast<double>(i) + 0.5);
      svg.o() << "<rect x=\"" << num(bx) << "\" y=\"" << num(Y(p.value)) << "\" width=\""
              << num(bw * 0.9) << "\" height=\"" << num(T + PH - Y(p.value)) << "\" fill=\""
              << color << "\"><title>" << esc(it->first) << " = " << p.value << "</title></rect>\n";
      if (p.max > p.min) {
        svg.line(bx + bw * 0.45, Y(p.min), bx + bw * 0.45, Y(p.max), "#000", 1.2);
      }
      svg.text(bx + bw * 0.45, Y(std::max(p.value, p.max)) - 4, short_value(p.value), "middle", 9);
    }
  }
  for (std::size_t i = 0; i < present.size(); ++i) {
    const double ly = T + PH + 40 + static_cast<double>(i) * 20;
    svg.o() << "<rect x=\"" << L << "\" y=\"" << num(ly - 10)
            << "\" width=\"14\" height=\"12\" fill=\"" << kPalette[i % std::size(kPalette)]
            << "\"/>\n";
    svg.text(L + 20, ly, series_label(present[i]) + " (" + present[i] + ".*)", "start", 12);
  }
  std::ofstream(file) << svg.str();
  return true;
}

}  // namespace

int plot_main(int argc, char** argv) {
  std::string run_file, outdir;
  CLI::App app{
      "ferry-bench plot: SVG charts (throughput and round trip against message size, "
      "pool against Python, remote against Dask) from a `ferry-bench --json` run",
      "ferry-bench plot"};
  app.add_option("run", run_file, "JSON lines of a run (ferry-bench ... --json > RUN.json)")
      ->required();
  app.add_option("outdir", outdir, "folder for the .svg files (made if missing)")->required();
  if (auto code = ferry::cli::parse(app, argc, argv)) return *code;

  std::ifstream in(run_file);
  if (!in) {
    std::fprintf(stderr, "ferry-bench plot: cannot read %s\n", run_file.c_str());
    return ferry::cli::kExitFailed;
  }
  Figures figs;
  int lineno = 0;
  for (std::string line; std::getline(in, line);) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("name") || !j["name"].is_string() ||
        !j.contains("value") || !j["value"].is_number()) {
      std::fprintf(stderr,
                   "ferry-bench plot: %s line %d is not a figure {name, value, unit}: %.80s\n",
                   run_file.c_str(), lineno, line.c_str());
      return ferry::cli::kExitFailed;
    }
    Point p;
    p.value = j["value"].get<double>();
    p.min = j.contains("min") && j["min"].is_number() ? j["min"].get<double>() : p.value;
    p.max = j.contains("max") && j["max"].is_number() ? j["max"].get<double>() : p.value;
    figs[j["name"].get<std::string>()] = p;
  }
  std::error_code ec;
  fs::create_directories(outdir, ec);
  if (ec) {
    std::fprintf(stderr, "ferry-bench plot: cannot make %s: %s\n", outdir.c_str(),
                 ec.message().c_str());
    return ferry::cli::kExitFailed;
  }
  const fs::path dir(outdir);
  std::vector<std::string> written;
  const auto note = [&](bool made, const char* name) {
    if (made) written.push_back((dir / name).string());
  };
  note(line_chart(figs, "rtt_p50_us", "Round trip (p50) against message size", "round trip, us",
                  dir / "channels_rtt_p50.svg"),
       "channels_rtt_p50.svg");
  note(line_chart(figs, "msgs_per_s", "One-way streaming: messages per second", "messages/s",
                  dir / "channels_msgs_per_s.svg"),
       "channels_msgs_per_s.svg");
  note(line_chart(figs, "gb_per_s", "One-way streaming: throughput", "GB/s",
                  dir / "channels_gb_per_s.svg"),
       "channels_gb_per_s.svg");
  note(bar_chart(figs,
                 {"pool.shm", "pool.pipe", "pool.zmq", "peer.python_mp", "peer.python_futures"},
                 {{"submit_tasks_per_s", "submit, tasks/s"},
                  {"map_items_per_s", "map, items/s"},
                  {"apply_rtt_p50_us", "apply p50, us (lower: better)"},
                  {"startup_ms.4", "4 workers up, ms (lower: better)"}},
                 "Process pool against Python's pools (2 workers)", dir / "pool_vs_python.svg"),
       "pool_vs_python.svg");
  note(bar_chart(figs, {"remote.tcp", "remote.tcp_curve", "peer.dask"},
                 {{"submit_tasks_per_s", "submit, tasks/s"},
                  {"apply_rtt_p50_us", "apply p50, us (lower: better)"}},
                 "Remote workers over TCP against Dask", dir / "remote_vs_dask.svg"),
       "remote_vs_dask.svg");
  for (const auto& w : written) {
    if (!fs::is_regular_file(w, ec) || fs::file_size(w, ec) == 0) {
      std::fprintf(stderr, "ferry-bench plot: cannot write %s\n", w.c_str());
      return ferry::cli::kExitFailed;
    }
    std::printf("%s\n", w.c_str());
  }
  if (written.empty()) {
    std::fprintf(stderr, "ferry-bench plot: %s has no channel, pool or remote figures to draw\n",
                 run_file.c_str());
    return ferry::cli::kExitFailed;
  }
  return ferry::cli::kExitOk;
}

}  // namespace ferry::bench
