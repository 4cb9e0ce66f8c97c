// ferry's diagnostic lines on stderr: one small facade over spdlog, so spdlog stays out of the
// public headers. Results never go here (stdout is the programs' result contract).
//
// Threading: every function may be called from any thread; configure() while others log is
// safe (the sink is swapped under a lock). Lines are written whole (one write per line), so
// threads and processes sharing a stderr do not interleave inside a line.
//
// Text format keeps the lines ferry always printed ("ferry: worker 3 joined ...",
// "ferry-worker[pid]: ...", "[w2 pid 4711] ..."); json writes one object per line:
//   {"time":"2026-12-06T21:40:01.123Z","level":"warn","pid":4711,"host":"h","worker":2,
//    "source":"ferry","message":"..."}       ("worker" only where the line is a worker's)
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace ferry::log {

enum class Level : std::uint8_t { trace, debug, info, warn, error, off };
enum class Format : std::uint8_t { text, json };

std::optional<Level> parse_level(std::string_view s) noexcept;    // trace|debug|info|warn|error
std::optional<Format> parse_format(std::string_view s) noexcept;  // text|json
std::string_view level_name(Level l) noexcept;

struct Config {
  Level level = Level::info;
  Format format = Format::text;
  int fd = 2;  // where lines go (tests point it at a pipe); the facade does not own it
};

// Sets the process's log level, format and destination (all threads see it at once).
void configure(const Config& c);
Config config();
// Reads FERRY_LOG_LEVEL / FERRY_LOG_FORMAT (how a coordinator passes its settings to the
// workers it starts); a value that does not parse is ignored.
void configure_from_env();

bool enabled(Level l) noexcept;

// One line from `source` (text: "<source>: <message>"; an empty source prints the message as is).
void write(Level l, std::string_view source, std::string_view message);
// A line that is part of a command's output on stderr (map's summary): written at every level
// but off, labelled info in json.
void write_result(std::string_view source, std::string_view message);
// A line a worker process wrote (stream 1 stdout, 2 stderr), relayed by the coordinator.
// Text: "[w<worker> pid <pid>] <line>"; json: an object with "worker", "worker_pid", "stream".
void worker_line(std::uint32_t worker, std::int32_t pid, int stream, std::string_view line);

// Says yes at most once per `period` for each key (e.g. a peer address that keeps retrying),
// so a repeated warning costs one line a period. Remembers at most `max_keys` keys; past that
// the oldest-period keys are forgotten. Thread-safe.
class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  explicit RateLimiter(Clock::duration period = std::chrono::minutes(1),
                       std::size_t max_keys = 4096)
      : period_(period), max_keys_(max_keys) {}
  bool allow(const std::string& key, Clock::time_point now = Clock::now());

 private:
  std::mutex mu_;
  Clock::duration period_;
  std::size_t max_keys_;
  std::unordered_map<std::string, Clock::time_point> last_;
};

}  // namespace ferry::log
