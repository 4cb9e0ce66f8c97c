#include "ferry/coordinator/map_command.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <deque>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "ferry/coordinator/pool.hpp"
#include "ferry/shared/cli_support.hpp"
#include "ferry/shared/task.hpp"

namespace ferry::coordinator {
namespace {

using Clock = std::chrono::steady_clock;

std::atomic<int> g_signal{0};
extern "C" void on_interrupt(int sig) {
  g_signal.store(sig);
}

// Ctrl-C and SIGTERM set g_signal while it lives; the previous handlers are back on every
// way out of the command.
class InterruptGuard {
 public:
  InterruptGuard() {
    g_signal.store(0);
    struct sigaction sa {};
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, &old_int_);
    ::sigaction(SIGTERM, &sa, &old_term_);
  }
  ~InterruptGuard() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
  }
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

// Reads the items lazily: a range, a list, or stdin lines.
class ItemSource {
 public:
  static Result<ItemSource> make(const MapArgs& a) {
    ItemSource s;
    const int sources = (!a.range.empty()) + (!a.items.empty()) + (a.from_stdin ? 1 : 0);
    if (sources != 1) {
      return Error{Errc::invalid_argument, "give exactly one of --range, --items, --stdin"};
    }
    if (!a.range.empty()) {
      auto colon = a.range.find(':');
      auto num = [](std::string_view t, std::int64_t& v) {
        auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
        return ec == std::errc{} && p == t.data() + t.size();
      };
      if (colon == std::string::npos || !num(std::string_view(a.range).substr(0, colon), s.next_) ||
          !num(std::string_view(a.range).substr(colon + 1), s.end_) || s.end_ < s.next_) {
        return Error{Errc::invalid_argument,
                     "--range wants A:B with integers A <= B, got '" + a.range + "'"};
      }
      s.kind_ = Kind::range;
      s.total_ = static_cast<std::size_t>(s.end_ - s.next_);
    } else if (!a.items.empty()) {
      s.kind_ = Kind::list;
      s.list_ = a.items;
      s.total_ = s.list_.size();
    } else {
      s.kind_ = Kind::stdin_lines;
    }
    return s;
  }
  std::optional<std::size_t> total() const {
    return kind_ == Kind::stdin_lines ? std::nullopt : std::optional<std::size_t>(total_);
  }
  bool next(std::string& out) {
    switch (kind_) {
      case Kind::range:
        if (next_ >= end_) return false;
        out = std::to_string(next_++);
        return true;
      case Kind::list:
        if (pos_ >= list_.size()) return false;
        out = list_[pos_++];
        return true;
      case Kind::stdin_lines:
        while (std::getline(std::cin, out)) {
          if (!out.empty() && out.back() == '\r') out.pop_back();
          if (!out.empty()) return true;
        }
        return false;
    }
    return false;
  }

 private:
  enum class Kind { range, list, stdin_lines };
  Kind kind_ = Kind::range;
  std::int64_t next_ = 0, end_ = 0;
  std::vector<std::string> list_;
  std::size_t pos_ = 0, total_ = 0;
};

class Progress {
 public:
  Progress(bool on, std::optional<std::size_t> total) : on_(on), total_(total), t0_(Clock::now()) {}
  void update(std::size_t done, bool final = false) {
    if (!on_) return;
    auto now = Clock::now();
    if (!final && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const double secs = std::chrono::duration<double>(now - t0_).count();
    const double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
    char line[160];
    if (total_ && *total_ > 0) {
      const double frac = static_cast<double>(done) / static_cast<double>(*total_);
      const int width = 30;
      const int fill = static_cast<int>(frac * width);
      const double eta = rate > 0 ? static_cast<double>(*total_ - done) / rate : 0;
      std::snprintf(line, sizeof line, "\r[%-*s] %zu/%zu %.0f/s ETA %.0fs ", width,
                    std::string(static_cast<std::size_t>(fill), '#').c_str(), done, *total_, rate,
                    eta);
    } else {
      std::snprintf(line, sizeof line, "\r%zu done %.0f/s ", done, rate);
    }
    std::fputs(line, stderr);
    if (final) std::fputs("\n", stderr);
    std::fflush(stderr);
  }

 private:
  bool on_;
  std::optional<std::size_t> total_;
  Clock::time_point t0_, last_{};
};

struct Chunk {
  FutureBase result;
  std::vector<std::string> inputs;
  std::size_t first = 0;
  bool printed = false;
};

}  // namespace

int map_command(const MapArgs& args, const Options& opt) {
  auto& reg = TaskRegistry::instance();
  reg.freeze();
  auto index = reg.index_of(args.task);
  if (!index) {
    std::cerr << "ferry-coordinator: map: " << index.error().detail << "\n";
    return cli::kExitUsage;
  }
  const TaskEntry& task = *reg.at(*index);
  if (!task.parse_chunk) {
    std::cerr << "ferry-coordinator: map: task '" << task.name
              << "' does not take one number or string argument, so it cannot be mapped from "
                 "the command line\n";
    return cli::kExitUsage;
  }
  auto source = ItemSource::make(args);
  if (!source) {
    std::cerr << "ferry-coordinator: map: " << source.error().detail << "\n";
    return cli::kExitUsage;
  }
  const bool progress = opt.progress.value_or(::isatty(2) == 1);
  const auto t0 = Clock::now();

  // Ctrl-C (and SIGTERM) cancel the job; workers ignore SIGINT and are stopped by the pool.
  InterruptGuard interrupts;

  PoolOptions po = pool_options(opt);
  po.shutdown_grace = std::chrono::milliseconds(500);
  std::optional<Pool> made;
  try {
    made.emplace(po);
  } catch (const Exception& e) {
    std::cerr << "ferry-coordinator: " << e.what() << "\n";
    return e.error().code == Errc::invalid_argument ? cli::kExitUsage : cli::kExitFailed;
  } catch (const std::exception& e) {  // no thread, no memory
    std::cerr << "ferry-coordinator: cannot start the pool: " << e.what() << "\n";
    return cli::kExitFailed;
  }
  Pool& pool = *made;
  if (!await_joined_workers(pool, opt)) {
    pool.shutdown(ShutdownMode::cancel);
    return cli::kExitFailed;
  }
  std::size_t chunksize = args.chunksize;
  if (chunksize == 0) {
    chunksize =
        source->total() ? std::min<std::size_t>(pool.auto_chunksize(*source->total()), 10000) : 64;
  }
  // Chunks in flight: enough to keep every worker busy, few enough to print results steadily.
  const std::size_t window = std::size_t{8} * pool.size();
  std::deque<Chunk> outstanding;
  bool more = true;
  std::size_t next_index = 0, done = 0, failed = 0;
  Progress bar(progress, source->total());
  nlohmann::json jline;

  auto print_chunk = [&](Chunk& c) {
    std::vector<ItemText> items;
    std::string chunk_error;
    if (auto failure = c.result.failure()) {
      chunk_error = describe(*failure);
    } else if (auto r = task.format_batch(c.result.encoded())) {
      items = std::move(*r);
    } else {
      chunk_error = "undecodable result: " + r.error().message();
    }
    for (std::size_t i = 0; i < c.inputs.size(); ++i) {
      const bool ok = chunk_error.empty() && i < items.size() && items[i].ok;
      const std::string text = !chunk_error.empty() ? chunk_error
                               : i < items.size()   ? items[i].text
                                                    : "missing result";
      if (opt.json) {
        jline = {{"index", c.first + i}, {"input", c.inputs[i]}, {"ok", ok}};
        jline[ok ? "value" : "error"] = text;
        std::cout << jline.dump() << "\n";
      } else if (ok) {
        std::cout << text << "\n";
      } else {
        if (progress) std::fputs("\r\033[K", stderr);
        std::cerr << "ferry: " << task.name << "(" << c.inputs[i] << ") failed: " << text << "\n";
      }
      failed += ok ? 0 : 1;
    }
    // Results stream to whatever reads stdout (a pipe is block-buffered otherwise).
    std::cout.flush();
    done += c.inputs.size();
    bar.update(done);
  };

  bool interrupted = false;
  while (more || !outstanding.empty()) {
    if (g_signal.load()) {
      interrupted = true;
      break;
    }
    while (more && outstanding.size() < window) {
      Chunk c;
      c.first = next_index;
      std::string item;
      while (c.inputs.size() < chunksize && source->next(item))
        c.inputs.push_back(item);
      if (c.inputs.empty()) {
        more = false;
        break;
      }
      auto encoded = task.parse_chunk(c.inputs);
      if (!encoded) {
        std::cerr << "ferry-coordinator: map: item " << c.first << ": " << encoded.error().detail
                  << "\n";
        pool.shutdown(ShutdownMode::cancel);
        return cli::kExitUsage;
      }
      next_index += c.inputs.size();
      c.result = pool.submit_encoded(task.name, std::move(*encoded),
                                     static_cast<std::uint32_t>(c.inputs.size()),
                                     static_cast<std::int64_t>(c.first));
      outstanding.push_back(std::move(c));
    }
    if (outstanding.empty()) continue;
    const auto until = Clock::now() + std::chrono::milliseconds(50);
    if (!args.unordered) {
      if (!outstanding.front().result.wait_until(until)) continue;
      print_chunk(outstanding.front());
      outstanding.pop_front();
      continue;
    }
    // Unordered: whatever has finished, in any order; else a short wait on the oldest.
    bool any = false;
    for (auto& c : outstanding) {
      if (c.printed || !c.result.ready()) continue;
      print_chunk(c);
      c.printed = any = true;
    }
    while (!outstanding.empty() && outstanding.front().printed)
      outstanding.pop_front();
    if (!any && !outstanding.empty()) {
      (void)outstanding.front().result.wait_until(Clock::now() + std::chrono::milliseconds(2));
    }
  }
  std::cout.flush();
  if (interrupted) {
    if (progress) std::fputs("\n", stderr);
    std::cerr << "ferry: interrupted: cancelling " << outstanding.size()
              << " chunk(s) in flight and stopping the workers\n";
    pool.shutdown(ShutdownMode::cancel);
    return cli::kExitInterrupted;
  }
  pool.shutdown(ShutdownMode::drain);
  bar.update(done, true);

  const auto st = pool.stats();
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  if (opt.json) {
    nlohmann::json per = nlohmann::json::array();
    for (auto& w : st.workers)
      per.push_back({{"worker", w.id}, {"pid", w.pid}, {"chunks", w.tasks}});
    nlohmann::json summary = {{"summary",
                               {{"task", task.name},
                                {"items", done},
                                {"failed", failed},
                                {"chunks", st.submitted},
                                {"retries", st.retries},
                                {"worker_deaths", st.worker_deaths},
                                {"workers", per},
                                {"wall_s", wall}}}};
    std::cout << summary.dump() << "\n";
  } else {
    std::string per;
    for (auto& w : st.workers) {
      if (!per.empty()) per += ", ";
      per += "w" + std::to_string(w.id) + " " + std::to_string(w.tasks);
    }
    std::fprintf(stderr,
                 "ferry: map %s: %zu items in %llu chunks, %zu failed, %llu retries, %llu worker "
                 "deaths; chunks per worker: %s; %.3f s\n",
                 task.name.c_str(), done, static_cast<unsigned long long>(st.submitted), failed,
                 static_cast<unsigned long long>(st.retries),
                 static_cast<unsigned long long>(st.worker_deaths), per.c_str(), wall);
  }
  return failed == 0 ? cli::kExitOk : cli::kExitFailed;
}

int tasks_command(const Options& opt) {
  auto& reg = TaskRegistry::instance();
  reg.freeze();
  for (const auto& e : reg.entries()) {
    if (opt.json) {
      std::cout << nlohmann::json{{"task", e.name},
                                  {"signature", e.signature},
                                  {"mappable", e.parse_chunk != nullptr}}
                       .dump()
                << "\n";
    } else {
      std::printf("%-20s %s%s\n", e.name.c_str(), e.signature.c_str(),
                  e.parse_chunk ? "" : "  (not mappable from the command line)");
    }
  }
  return cli::kExitOk;
}

}  // namespace ferry::coordinator
