#include "ferry/shared/log.hpp"

#include <unistd.h>

#include <spdlog/logger.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <memory>

namespace ferry::log {
namespace {

// One write(2) per line: lines from several threads, or from a coordinator and the workers
// sharing its stderr, never interleave inside a line (a FILE* could split them).
class FdSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit FdSink(int fd) : fd_(fd) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t buf;
    formatter_->format(msg, buf);
    const char* p = buf.data();
    std::size_t left = buf.size();
    while (left > 0) {
      const ssize_t n = ::write(fd_, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;  // stderr closed or full: a diagnostic is not worth failing for
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }
  void flush_() override {}

 private:
  int fd_;
};

spdlog::level::level_enum to_spd(Level l) noexcept {
  switch (l) {
    case Level::trace:
      return spdlog::level::trace;
    case Level::debug:
      return spdlog::level::debug;
    case Level::info:
      return spdlog::level::info;
    case Level::warn:
      return spdlog::level::warn;
    case Level::error:
      return spdlog::level::err;
    case Level::off:
      break;
  }
  return spdlog::level::off;
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

void json_escape(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += ch;  // UTF-8 passes as is; invalid bytes are the writer's (rare in diagnostics)
        }
    }
  }
}

struct State {
  std::mutex mu;
  Config cfg;
  std::atomic<Level> level{Level::info};
  std::atomic<Format> format{Format::text};
  std::shared_ptr<spdlog::logger> logger;
  std::string pid_host;  // ,"pid":N,"host":"H" (json)

  State() { apply(Config{}); }

  void apply(const Config& c) {
    auto sink = std::make_shared<FdSink>(c.fd);
    // Text lines are the message as the caller made it; json lines get spdlog's UTC time
    // and the rest of the object from the caller (level names are ours: "warn", not
    // spdlog's "warning").
    if (c.format == Format::json) {
      sink->set_formatter(std::make_unique<spdlog::pattern_formatter>(
          "{\"time\":\"%Y-%m-%dT%H:%M:%S.%eZ\",%v", spdlog::pattern_time_type::utc));
    } else {
      sink->set_formatter(std::make_unique<spdlog::pattern_formatter>("%v"));
    }
    auto lg = std::make_shared<spdlog::logger>("ferry", std::move(sink));
    lg->set_level(to_spd(c.level));
    std::string ph = ",\"pid\":" + std::to_string(::getpid()) + ",\"host\":\"";
    json_escape(ph, host_name());
    ph += "\"";
    std::lock_guard lk(mu);
    cfg = c;
    logger = std::move(lg);
    pid_host = std::move(ph);
    level.store(c.level, std::memory_order_relaxed);
    format.store(c.format, std::memory_order_relaxed);
  }

  void emit(Level l, const std::string& body) {
    std::shared_ptr<spdlog::logger> lg;
    {
      std::lock_guard lk(mu);
      lg = logger;
    }
    lg->log(to_spd(l), spdlog::string_view_t(body.data(), body.size()));
  }

  std::string json_head(Level l) {
    std::string s = "\"level\":\"";
    s += level_name(l);
    s += "\"";
    std::lock_guard lk(mu);
    s += pid_host;
    return s;
  }
};

// Never destroyed: threads and static destructors may still log while the program exits.
State& state() {
  static State* s = new State();
  return *s;
}

}  // namespace

std::optional<Level> parse_level(std::string_view s) noexcept {
  if (s == "trace") return Level::trace;
  if (s == "debug") return Level::debug;
  if (s == "info") return Level::info;
  if (s == "warn" || s == "warning") return Level::warn;
  if (s == "error") return Level::error;
  if (s == "off") return Level::off;
  return std::nullopt;
}

std::optional<Format> parse_format(std::string_view s) noexcept {
  if (s == "text") return Format::text;
  if (s == "json") return Format::json;
  return std::nullopt;
}

std::string_view level_name(Level l) noexcept {
  switch (l) {
    case Level::trace:
      return "trace";
    case Level::debug:
      return "debug";
    case Level::info:
      return "info";
    case Level::warn:
      return "warn";
    case Level::error:
      return "error";
    case Level::off:
      break;
  }
  return "off";
}

void configure(const Config& c) {
  state().apply(c);
}

Config config() {
  auto& s = state();
  std::lock_guard lk(s.mu);
  return s.cfg;
}

void configure_from_env() {
  Config c = config();
  if (const char* l = std::getenv("FERRY_LOG_LEVEL")) {
    if (auto v = parse_level(l)) c.level = *v;
  }
  if (const char* f = std::getenv("FERRY_LOG_FORMAT")) {
    if (auto v = parse_format(f)) c.format = *v;
  }
  configure(c);
}

bool enabled(Level l) noexcept {
  return l != Level::off && l >= state().level.load(std::memory_order_relaxed);
}

namespace {

// `shown` is the level a line is written at (filtered by), `named` the level it is labelled with.
void emit_line(Level shown, Level named, std::string_view source, std::string_view message) {
  if (!enabled(shown)) return;
  auto& s = state();
  std::string body;
  if (s.format.load(std::memory_order_relaxed) == Format::json) {
    body = s.json_head(named);
    body += ",\"source\":\"";
    json_escape(body, source);
    body += "\",\"message\":\"";
    json_escape(body, message);
    body += "\"}";
  } else {
    body.reserve(source.size() + 2 + message.size());
    if (!source.empty()) {
      body += source;
      body += ": ";
    }
    body += message;
  }
  s.emit(shown, body);
}

}  // namespace

void write(Level l, std::string_view source, std::string_view message) {
  emit_line(l, l, source, message);
}

void write_result(std::string_view source, std::string_view message) {
  emit_line(Level::error, Level::info, source, message);
}

void worker_line(std::uint32_t worker, std::int32_t pid, int stream, std::string_view line) {
  // A worker's own lines are news whatever they say; --log-level error keeps them too (they
  // are often why something failed), so they are written at error level's bar... unless off.
  if (!enabled(Level::error)) return;
  auto& s = state();
  std::string body;
  if (s.format.load(std::memory_order_relaxed) == Format::json) {
    body = s.json_head(Level::info);
    body += ",\"worker\":" + std::to_string(worker) + ",\"worker_pid\":" + std::to_string(pid) +
            ",\"stream\":\"" + (stream == 1 ? "stdout" : "stderr") + "\",\"message\":\"";
    json_escape(body, line);
    body += "\"}";
  } else {
    body = "[w" + std::to_string(worker) + " pid " + std::to_string(pid) + "] ";
    body += line;
  }
  s.emit(Level::error, body);  // passes every level but off (see above)
}

bool RateLimiter::allow(const std::string& key, Clock::time_point now) {
  std::lock_guard lk(mu_);
  auto [it, fresh] = last_.try_emplace(key, now);
  if (fresh) {
    if (last_.size() > max_keys_) {
      // Forget keys whose period is over; if all are recent, forget all but this one (a flood
      // of distinct keys then costs lines, never memory).
      for (auto i = last_.begin(); i != last_.end();) {
        if (i->first != key && now - i->second >= period_) {
          i = last_.erase(i);
        } else {
          ++i;
        }
      }
      if (last_.size() > max_keys_) {
        last_.clear();
        last_.emplace(key, now);
      }
    }
    return true;
  }
  if (now - it->second < period_) return false;
  it->second = now;
  return true;
}

}  // namespace ferry::log
