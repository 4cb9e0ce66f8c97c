#include "ferry/coordinator/map_command.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string_view>
#include <utility>
#include <variant>

#include "ferry/coordinator/http.hpp"
#include "ferry/coordinator/pool.hpp"
#include "ferry/shared/cli_support.hpp"
#include "ferry/shared/log.hpp"
#include "ferry/shared/task.hpp"

namespace ferry::coordinator {
namespace {

using Clock = std::chrono::steady_clock;

std::atomic<int> g_signal{0};
std::atomic<pid_t> g_main_tid{0};
pthread_t g_main_thread{};
extern "C" void on_interrupt(int sig) {
  const int saved = errno;
  g_signal.store(sig);
  // Whichever thread the kernel chose, the main thread's blocking call (a write to a stalled
  // stdout, a read of stdin) must return EINTR so that it sees the flag.
  if (::gettid() != g_main_tid.load()) ::pthread_kill(g_main_thread, sig);
  errno = saved;
}

// Ctrl-C and SIGTERM set g_signal while it lives; the previous handlers are back on every
// way out of the command.
class InterruptGuard {
 public:
  InterruptGuard() {
    g_signal.store(0);
    g_main_thread = ::pthread_self();
    g_main_tid.store(::gettid());
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

// Whether an item came, a line too long to be one, none has yet, the items are over, or the
// input failed.
enum class Got { item, too_long, later, end, failed };

// The start of a long input, for messages: at most 80 bytes, cut at a character boundary.
std::string preview(std::string_view s) {
  constexpr std::size_t kMax = 80;
  if (s.size() <= kMax) return std::string(s);
  std::size_t cut = kMax;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80)
    --cut;
  return std::string(s.substr(0, cut)) + "...";
}

// A failed item's stack trace under its failure line: by default only where it threw (the
// innermost frame: what a reader looks at first), with --log-level debug or trace all of it.
std::string stack_text(const std::string& stack) {
  if (stack.empty()) return {};
  std::string out;
  const bool all = log::enabled(log::Level::debug);
  std::size_t at = 0;
  while (at < stack.size()) {
    std::size_t end = stack.find('\n', at);
    if (end == std::string::npos) end = stack.size();
    std::string_view frame(stack.data() + at, end - at);
    at = end + 1;
    if (frame.empty()) continue;
    if (!all) {
      // "#0 fn at file:line" -> "thrown in fn at file:line".
      if (const auto sp = frame.find(' '); frame.substr(0, 1) == "#" && sp != frame.npos)
        frame.remove_prefix(sp + 1);
      return "\n    thrown in " + std::string(frame);
    }
    out += "\n    ";
    out += frame;
  }
  return out;
}

// Lines of stdin, read with poll() and read(): a std::getline blocked in read() ignores a
// Ctrl-C whenever another thread takes the signal, and would take a line cut short by one.
class StdinLines {
 public:
  explicit StdinLines(std::size_t max_line = kDefaultMaxLine) : max_(max_line) {}

  // The next non-empty line (without "\n" or "\r\n") and its number (from 0, counting empty
  // lines), a last line without "\n" once the input ended, or `later` at `until` or once
  // g_signal is set (a partial line is then dropped). A line longer than max_line is
  // `too_long` (out: its start), reported as soon as that is known; the rest of it is read and
  // dropped as it comes, never held.
  Got next(std::string& out, std::size_t& line, Clock::time_point until) {
    for (;;) {
      if (discarding_) {
        const auto nl = buf_.find('\n');
        if (nl != std::string::npos) {
          buf_.erase(0, nl + 1);
          discarding_ = false;
          continue;
        }
        buf_.clear();
        if (eof_) {
          discarding_ = false;
          continue;
        }
      } else if (auto got = take_line(out, line)) {
        if (*got == Got::item && out.empty()) continue;
        return *got;
      } else if (eof_) {
        if (buf_.empty()) return Got::end;
        // The last line, without its "\n".
        std::string last = std::exchange(buf_, {});
        scanned_ = 0;
        const Got last_got = finish_line(last, last.size(), out, line);
        if (last_got == Got::item && out.empty()) continue;
        return last_got;
      }
      if (!error_.empty()) return Got::failed;
      if (g_signal.load() != 0 || Clock::now() >= until) return Got::later;
      // Short polls, so that a signal taken by another thread is seen within 100 ms.
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - Clock::now());
      pollfd p{0, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(std::clamp<long>(left.count(), 0, 100))) > 0) fill();
    }
  }
  const std::string& error() const { return error_; }

 private:
  // A whole line from buf_, or a line already known to be too long; nothing if neither yet.
  std::optional<Got> take_line(std::string& out, std::size_t& line) {
    const auto nl = buf_.find('\n', scanned_);
    if (nl == std::string::npos) {
      scanned_ = buf_.size();
      // +1: a "\r" before the "\n" is not part of the line.
      if (buf_.size() <= max_ + 1) return std::nullopt;
      line = line_++;
      out = preview(buf_);
      buf_.clear();
      scanned_ = 0;
      discarding_ = true;
      return Got::too_long;
    }
    const Got got = finish_line(buf_, nl, out, line);
    buf_.erase(0, nl + 1);
    scanned_ = 0;
    return got;
  }
  // The line that is text[0, end), numbered.
  Got finish_line(const std::string& text, std::size_t end, std::string& out, std::size_t& line) {
    if (end > 0 && text[end - 1] == '\r') --end;
    line = line_++;
    if (end > max_) {
      out = preview(std::string_view(text).substr(0, end));
      return Got::too_long;
    }
    out.assign(text, 0, end);
    return Got::item;
  }
  void fill() {
    char chunk[65536];
    const auto n = ::read(0, chunk, sizeof chunk);
    if (n > 0) {
      buf_.append(chunk, static_cast<std::size_t>(n));
    } else if (n == 0) {
      eof_ = true;
    } else if (errno != EINTR && errno != EAGAIN) {
      error_ = std::strerror(errno);
    }
  }

  std::size_t max_;
  std::string buf_;
  std::size_t scanned_ = 0;  // buf_ before this has no '\n'
  std::size_t line_ = 0;     // the number of the line at the front of buf_
  bool discarding_ = false;  // dropping the rest of a too long line, up to its '\n'
  bool eof_ = false;
  std::string error_;
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
    // --items splits at commas and --range makes integers: JSON comes one value per line.
    if (!a.from_stdin && a.input == "json") {
      return Error{Errc::invalid_argument,
                   "--input json reads --stdin (one JSON value per line); --items and --range "
                   "give text items"};
    }
    if (!a.from_stdin && a.max_line) {
      return Error{Errc::invalid_argument, "--max-line bounds --stdin lines; give it with --stdin"};
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
      s.first_ = s.next_;
      s.total_ = static_cast<std::size_t>(s.end_ - s.next_);
    } else if (!a.items.empty()) {
      s.kind_ = Kind::list;
      if (auto st = split_items(a.items, s.list_); !st) return std::move(st).error();
      s.total_ = s.list_.size();
    } else {
      // A closed stdin's descriptor would be reused by the pool's own pipes and sockets.
      if (::fcntl(0, F_GETFD) < 0) {
        return Error{Errc::invalid_argument, "--stdin: standard input is closed"};
      }
      s.kind_ = Kind::stdin_lines;
      s.stdin_ = StdinLines(a.max_line.value_or(kDefaultMaxLine));
    }
    return s;
  }
  bool from_stdin() const { return kind_ == Kind::stdin_lines; }
  std::optional<std::size_t> total() const {
    return kind_ == Kind::stdin_lines ? std::nullopt : std::optional<std::size_t>(total_);
  }
  // The next item and its line on stdin (else its index); stdin may also say `too_long`,
  // `later` (nothing by `until`) or `failed` (error()).
  Got next(std::string& out, std::size_t& line, Clock::time_point until) {
    switch (kind_) {
      case Kind::range:
        if (next_ >= end_) return Got::end;
        line = static_cast<std::size_t>(next_ - first_);
        out = std::to_string(next_++);
        return Got::item;
      case Kind::list:
        if (pos_ >= list_.size()) return Got::end;
        line = pos_;
        out = list_[pos_++];
        return Got::item;
      case Kind::stdin_lines:
        return stdin_.next(out, line, until);
    }
    return Got::end;
  }
  std::string error() const { return "reading stdin: " + stdin_.error(); }

 private:
  // The --items arguments, each split at ','. An empty item is refused, not skipped: it is
  // a typo ("1,,2") or a lost shell variable, and skipping it would shift every index after.
  static Status split_items(const std::vector<std::string>& args, std::vector<std::string>& out) {
    for (const auto& arg : args) {
      std::size_t begin = 0;
      for (;;) {
        const auto comma = arg.find(',', begin);
        out.push_back(arg.substr(begin, comma - begin));
        if (out.back().empty()) {
          return Error{Errc::invalid_argument,
                       "--items: item " + std::to_string(out.size() - 1) + " is empty"};
        }
        if (comma == std::string::npos) break;
        begin = comma + 1;
      }
    }
    return {};
  }

  enum class Kind { range, list, stdin_lines };
  Kind kind_ = Kind::range;
  std::int64_t first_ = 0, next_ = 0, end_ = 0;
  std::vector<std::string> list_;
  std::size_t pos_ = 0, total_ = 0;
  StdinLines stdin_;
};

// Results go to fd 1 through write(2): a failed write (a full disk, a reader that went away)
// must end the job with its reason, where std::cout would only set a bit and lose errno.
class ResultOut {
 public:
  void put(std::string_view text) { buf_.append(text); }
  // Writes what was put; false once a write has failed (error() says why). Gives up quietly
  // once g_signal is set: the job is being interrupted.
  bool flush() {
    std::size_t off = 0;
    // A signal cuts a blocked write short (a count, or EINTR if nothing was written yet).
    while (error_.empty() && off < buf_.size() && g_signal.load() == 0) {
      const auto n = write_no_sigpipe(std::string_view(buf_).substr(off));
      if (n >= 0) {
        off += static_cast<std::size_t>(n);
      } else if (errno == EAGAIN) {
        wait_writable();  // stdout was left non-blocking by someone
      } else if (errno != EINTR) {
        error_ = std::strerror(errno);
      }
    }
    buf_.clear();
    return error_.empty();
  }
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }

 private:
  // A reader that went away must be an error to report, not a death by SIGPIPE: the signal
  // is blocked in this thread during the write and a pending one taken back afterwards (also
  // after a partial write: the kernel raises it when the reader goes in the middle).
  static ssize_t write_no_sigpipe(std::string_view data) {
    sigset_t pipe_only, old;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    ::pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
    const ssize_t n = ::write(1, data.data(), data.size());
    const int err = errno;
    const timespec none{};
    while (::sigtimedwait(&pipe_only, nullptr, &none) < 0 && errno == EINTR) {
    }
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    errno = err;
    return n;
  }
  static void wait_writable() {
    pollfd p{1, POLLOUT, 0};
    (void)::poll(&p, 1, 100);
  }

  std::string buf_;
  std::string error_;
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

// A chunk's arguments stop growing past this many bytes (a whole line is still one item), so
// long JSON lines make smaller chunks rather than a message over the frame limit.
constexpr std::size_t kChunkArgBytes = std::size_t{1} << 20;

struct Chunk {
  FutureBase result;  // not valid when none of its items could be read
  std::vector<std::string> inputs;
  // Per input: why it could not be read as the task's arguments ("line 3: ..."), or "" for
  // those sent, in order, as the task's chunk.
  std::vector<std::string> unread;
  std::size_t first = 0;
  bool printed = false;
  bool finished() const { return !result.valid() || result.ready(); }
};

// One `map` run: reads items, keeps a window of chunks in flight, prints results as they
// come (in input order unless --unordered), then the summary.
class MapRun {
 public:
  MapRun(const MapArgs& args, const Options& opt, const TaskEntry& task, ItemSource source)
      : args_(args),
        opt_(opt),
        task_(task),
        source_(std::move(source)),
        progress_(opt.progress.value_or(::isatty(2) == 1)),
        bar_(progress_, source_.total()) {
    job_.task = task_.name;
    if (auto t = source_.total()) job_.total = static_cast<std::int64_t>(*t);
  }

  // The --http endpoint's view of this job.
  JobProgress& progress() { return job_; }

  int run(Pool& pool) {
    chunksize_ = args_.chunksize;
    if (chunksize_ == 0) {
      chunksize_ = source_.total()
                       ? std::min<std::size_t>(pool.auto_chunksize(*source_.total()), 10000)
                       : 64;
    }
    // Chunks in flight: enough to keep every worker busy, few enough to print steadily.
    window_ = std::size_t{8} * pool.size();
    while (more_ || !outstanding_.empty()) {
      if (g_signal.load()) return interrupted(pool);
      if (auto bad = feed(pool)) {
        pool.shutdown(ShutdownMode::cancel);
        return *bad;
      }
      if (!outstanding_.empty()) args_.unordered ? print_finished() : print_next_in_order();
      if (!out_.ok()) return output_failed(pool);
    }
    pool.shutdown(ShutdownMode::drain);
    job_.finished = true;
    bar_.update(done_, true);
    summary(pool.stats());
    if (!out_.flush()) return output_failed(pool);
    return failed_ == 0 && !input_failed_ ? cli::kExitOk : cli::kExitFailed;
  }

 private:
  // Submits chunks while the window has room; an exit code if an --items or --range item
  // cannot be parsed (a usage error). A --stdin line that cannot be read as the task's
  // arguments is a failed item: its chunk carries it to be reported in its place, and the
  // other lines run. Input that has not arrived yet must not hold back the results that have,
  // nor a Ctrl-C: stdin is waited on briefly, and a chunk goes out with the items it has so far.
  std::optional<int> feed(Pool& pool) {
    const auto until = Clock::now() + std::chrono::milliseconds(outstanding_.empty() ? 100 : 10);
    while (more_ && outstanding_.size() < window_) {
      Chunk c;
      c.first = next_index_;
      std::vector<Bytes> args;  // the items that could be read, encoded
      std::size_t arg_bytes = 0;
      std::string item;
      std::size_t line = 0;
      Got got = Got::item;
      while (c.inputs.size() < chunksize_ && arg_bytes < kChunkArgBytes &&
             ((got = source_.next(item, line, until)) == Got::item || got == Got::too_long)) {
        auto encoded =
            got == Got::too_long
                ? Result<Bytes>(Error{
                      Errc::invalid_argument,
                      "longer than --max-line (" + std::to_string(max_line_) + " bytes); skipped"})
                : read_item(item);
        if (!encoded && !source_.from_stdin()) {
          std::cerr << "ferry-coordinator: map: item " << c.first + c.inputs.size() << ": "
                    << encoded.error().detail << "\n";
          return cli::kExitUsage;
        }
        if (encoded) {
          arg_bytes += encoded->size();
          args.push_back(std::move(*encoded));
          c.unread.emplace_back();
        } else {
          c.unread.push_back("line " + std::to_string(line) + ": " + encoded.error().detail);
        }
        c.inputs.push_back(std::move(item));
      }
      if (g_signal.load() != 0) return std::nullopt;  // run() cancels the job
      if (got == Got::failed) {
        log::write(log::Level::error, "ferry-coordinator", "map: " + source_.error());
        input_failed_ = true;
      }
      if (got == Got::end || got == Got::failed) more_ = false;
      if (c.inputs.empty()) break;
      next_index_ += c.inputs.size();
      if (!args.empty()) {
        // Numbered from its first item that runs (a failure of the whole chunk names it).
        const auto first_run = static_cast<std::size_t>(
            std::find(c.unread.begin(), c.unread.end(), std::string()) - c.unread.begin());
        c.result = pool.submit_encoded(task_.name, encode_sequence(args),
                                       static_cast<std::uint32_t>(args.size()),
                                       static_cast<std::int64_t>(c.first + first_run));
      }
      outstanding_.push_back(std::move(c));
      if (got != Got::item && got != Got::too_long) break;
    }
    return std::nullopt;
  }

  // One item as the task's encoded argument tuple.
  Result<Bytes> read_item(const std::string& item) const {
    return json_input_ ? task_.parse_json(item) : task_.parse_item(item);
  }

  void print_next_in_order() {
    const Chunk& front = outstanding_.front();
    if (!front.finished() &&
        !front.result.wait_until(Clock::now() + std::chrono::milliseconds(50))) {
      return;
    }
    print_chunk(outstanding_.front());
    outstanding_.pop_front();
  }

  // Whatever has finished, in any order; else a short wait on the oldest.
  void print_finished() {
    bool any = false;
    for (auto& c : outstanding_) {
      if (c.printed || !c.finished()) continue;
      print_chunk(c);
      c.printed = any = true;
    }
    while (!outstanding_.empty() && outstanding_.front().printed)
      outstanding_.pop_front();
    if (!any && !outstanding_.empty()) {
      (void)outstanding_.front().result.wait_until(Clock::now() + std::chrono::milliseconds(2));
    }
  }

  void print_chunk(Chunk& c) {
    // With --json, values are written as JSON where the result type has a JSON form, else as
    // their text in a JSON string.
    const bool json_values = opt_.json && task_.format_json_batch != nullptr;
    std::vector<ItemText> items;
    std::string chunk_error;
    std::string chunk_stack;
    if (!c.result.valid()) {
      // Nothing of it ran: every item is in c.unread.
    } else if (auto failure = c.result.failure()) {
      chunk_error = describe(*failure);
      chunk_stack = failure->stack;
    } else if (auto r = json_values ? task_.format_json_batch(c.result.encoded())
                                    : task_.format_batch(c.result.encoded())) {
      items = std::move(*r);
    } else {
      chunk_error = "undecodable result: " + r.error().message();
    }
    std::size_t ran = 0;  // the next of the items that were sent
    for (std::size_t i = 0; i < c.inputs.size(); ++i) {
      if (!c.unread[i].empty()) {
        print_item(c.first + i, c.inputs[i], Outcome::unread, c.unread[i]);
        continue;
      }
      const std::size_t k = ran++;
      const bool ok = chunk_error.empty() && k < items.size() && items[k].ok;
      const std::string text = !chunk_error.empty() ? chunk_error
                               : k < items.size()   ? items[k].text
                                                    : "missing result";
      const std::string& stack = !chunk_error.empty() ? chunk_stack
                                 : k < items.size()   ? items[k].stack
                                                      : chunk_stack;
      print_item(c.first + i, c.inputs[i],
                 !ok           ? Outcome::failed
                 : json_values ? Outcome::json_value
                               : Outcome::text_value,
                 text, stack);
    }
    // Results stream to whatever reads stdout, chunk by chunk.
    out_.flush();
    done_ += c.inputs.size();
    job_.done.store(done_, std::memory_order_relaxed);
    bar_.update(done_);
  }

  // A value (as text, or as JSON for --json), a task's failure, or an input that was never run.
  enum class Outcome { text_value, json_value, failed, unread };

  void print_item(std::size_t index, const std::string& input, Outcome how, const std::string& text,
                  const std::string& stack = {}) {
    const bool ok = how == Outcome::text_value || how == Outcome::json_value;
    failed_ += ok ? 0 : 1;
    if (!ok) {
      job_.failed.fetch_add(1, std::memory_order_relaxed);
      job_.note_failure(task_.name + "(" + preview(input) + ") " +
                        (how == Outcome::unread ? "not run: " : "failed: ") + text);
    }
    if (opt_.json) {
      nlohmann::json line = {{"index", index}, {"input", input}, {"ok", ok}};
      if (how == Outcome::text_value) line["value"] = text;
      if (!ok) line["error"] = text;
      if (!ok && !stack.empty()) line["stack"] = stack;
      // An input line need not be UTF-8; JSON text must be.
      std::string out = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      if (how == Outcome::json_value) {
        // The value is JSON already (task_json.hpp makes it valid, on one line). "value" sorts
        // last among the keys, so it goes where dump() would have put it.
        out.pop_back();
        out += ",\"value\":" + text + "}";
      }
      out_.put(out + "\n");
    } else if (ok) {
      out_.put(text + "\n");
    } else {
      if (progress_) std::fputs("\r\033[K", stderr);
      log::write(log::Level::error, "ferry",
                 task_.name + "(" + preview(input) + ") " +
                     (how == Outcome::unread ? "not run: " : "failed: ") + text +
                     stack_text(stack));
    }
  }

  // Results that cannot be written are lost: the job stops rather than run on for nobody,
  // and the status is 1 whatever the tasks did.
  int output_failed(Pool& pool) {
    if (progress_) std::fputs("\n", stderr);
    log::write(log::Level::error, "ferry-coordinator", "writing results: " + out_.error());
    pool.shutdown(ShutdownMode::cancel);
    return cli::kExitFailed;
  }

  int interrupted(Pool& pool) {
    out_.flush();
    if (progress_) std::fputs("\n", stderr);
    log::write(log::Level::warn, "ferry",
               "interrupted: cancelling " + std::to_string(outstanding_.size()) +
                   " chunk(s) in flight and stopping the workers");
    pool.shutdown(ShutdownMode::cancel);
    return cli::kExitInterrupted;
  }

  void summary(const PoolStats& st) {
    const double wall = std::chrono::duration<double>(Clock::now() - t0_).count();
    if (opt_.json) {
      nlohmann::json per = nlohmann::json::array();
      for (auto& w : st.workers)
        per.push_back({{"worker", w.id}, {"pid", w.pid}, {"chunks", w.tasks}});
      nlohmann::json s = {{"summary",
                           {{"task", task_.name},
                            {"items", done_},
                            {"failed", failed_},
                            {"chunks", st.submitted},
                            {"retries", st.retries},
                            {"worker_deaths", st.worker_deaths},
                            {"workers", per},
                            {"wall_s", wall}}}};
      out_.put(s.dump() + "\n");
      return;
    }
    std::string per;
    for (auto& w : st.workers) {
      if (!per.empty()) per += ", ";
      per += "w" + std::to_string(w.id) + " " + std::to_string(w.tasks);
    }
    char wall_s[32];
    std::snprintf(wall_s, sizeof wall_s, "%.3f s", wall);
    log::write_result("ferry", "map " + task_.name + ": " + std::to_string(done_) + " items in " +
                                   std::to_string(st.submitted) + " chunks, " +
                                   std::to_string(failed_) + " failed, " +
                                   std::to_string(st.retries) + " retries, " +
                                   std::to_string(st.worker_deaths) +
                                   " worker deaths; chunks per worker: " + per + "; " + wall_s);
  }

  const MapArgs& args_;
  const Options& opt_;
  const TaskEntry& task_;
  ItemSource source_;
  const bool progress_;
  Progress bar_;
  ResultOut out_;
  const Clock::time_point t0_ = Clock::now();
  std::size_t chunksize_ = 1, window_ = 1;
  std::deque<Chunk> outstanding_;
  bool more_ = true;
  bool input_failed_ = false;  // stdin could not be read to its end
  const bool json_input_ = args_.input == "json";
  const std::size_t max_line_ = args_.max_line.value_or(kDefaultMaxLine);
  std::size_t next_index_ = 0, done_ = 0, failed_ = 0;
  JobProgress job_;
};

// The task to map, or a usage message.
const TaskEntry* mappable_task(const MapArgs& args) {
  auto& reg = TaskRegistry::instance();
  reg.freeze();
  auto index = reg.index_of(args.task);
  if (!index) {
    std::cerr << "ferry-coordinator: map: " << index.error().detail << "\n";
    return nullptr;
  }
  const TaskEntry* task = reg.at(*index);
  if (args.input == "json" && !task->parse_json) {
    std::cerr << "ferry-coordinator: map: task '" << task->name
              << "' has no JSON form, so --input json cannot give its arguments: " << task->no_json
              << " (cereal's JSON archive cannot read it)\n";
    return nullptr;
  }
  if (args.input == "text" && !task->parse_item) {
    std::cerr << "ferry-coordinator: map: task '" << task->name
              << "' does not take one number or string argument, so it cannot be mapped from "
                 "text items"
              << (task->parse_json ? "; give its arguments as JSON lines: --stdin --input json"
                                   : " (" + task->no_json + ", so not from JSON either)")
              << "\n";
    return nullptr;
  }
  return task;
}

// The pool for a command, or a message and the exit status.
std::variant<std::unique_ptr<Pool>, int> make_pool(const Options& opt) {
  PoolOptions po = pool_options(opt);
  po.shutdown_grace = std::chrono::milliseconds(500);
  try {
    return std::make_unique<Pool>(po);
  } catch (const Exception& e) {
    std::cerr << "ferry-coordinator: " << e.what() << "\n";
    return e.error().code == Errc::invalid_argument ? cli::kExitUsage : cli::kExitFailed;
  } catch (const std::exception& e) {  // no thread, no memory
    log::write(log::Level::error, "ferry-coordinator",
               std::string("cannot start the pool: ") + e.what());
    return cli::kExitFailed;
  }
}

}  // namespace

int map_command(const MapArgs& args, const Options& opt) {
  const TaskEntry* task = mappable_task(args);
  if (!task) return cli::kExitUsage;
  auto source = ItemSource::make(args);
  if (!source) {
    std::cerr << "ferry-coordinator: map: " << source.error().detail << "\n";
    return cli::kExitUsage;
  }
  // Ctrl-C (and SIGTERM) cancel the job; workers ignore SIGINT and are stopped by the pool.
  InterruptGuard interrupts;
  MapRun job(args, opt, *task, std::move(*source));
  auto made = make_pool(opt);
  if (auto* code = std::get_if<int>(&made)) return *code;
  Pool& pool = *std::get<std::unique_ptr<Pool>>(made);
  // Declared after the pool, so it stops serving before the pool goes.
  std::unique_ptr<StatusServer> http;
  if (!opt.http.empty()) {
    auto s = StatusServer::start({opt.http, opt.http_token}, pool, &job.progress(),
                                 {opt.transport, pool.listen_endpoint()});
    if (!s) {
      std::cerr << "ferry-coordinator: " << s.error().detail << "\n";
      pool.shutdown(ShutdownMode::cancel);
      return cli::kExitFailed;
    }
    http = std::move(*s);
    if (event_level(opt) <= EventLevel::info) {
      std::cerr << "ferry: status page on " << http->url() << "/ (metrics: " << http->url()
                << "/metrics)\n";
    }
  }
  const auto interrupted = [] { return g_signal.load() != 0; };
  if (!await_joined_workers(pool, opt, interrupted)) {
    pool.shutdown(ShutdownMode::cancel);
    if (!interrupted()) return cli::kExitFailed;
    log::write(log::Level::warn, "ferry", "interrupted while waiting for workers: no job run");
    return cli::kExitInterrupted;
  }
  const int status = job.run(pool);
  if (http && opt.http_linger_s > 0 && status != cli::kExitInterrupted) {
    // The final numbers stay up for a last look (or scrape) until the time is over or Ctrl-C.
    const auto until =
        Clock::now() + std::chrono::milliseconds(std::llround(opt.http_linger_s * 1000));
    while (g_signal.load() == 0 && Clock::now() < until)
      ::poll(nullptr, 0, 50);
  }
  return status;
}

int tasks_command(const Options& opt) {
  auto& reg = TaskRegistry::instance();
  reg.freeze();
  for (const auto& e : reg.entries()) {
    if (opt.json) {
      std::cout << nlohmann::json{{"task", e.name},
                                  {"signature", e.signature},
                                  {"library", e.library},
                                  {"mappable", e.parse_chunk != nullptr || e.parse_json != nullptr},
                                  {"json_input", e.parse_json != nullptr},
                                  {"json_output", e.format_json != nullptr}}
                       .dump()
                << "\n";
    } else {
      std::printf("%-20s %s%s%s\n", e.name.c_str(), e.signature.c_str(),
                  e.parse_chunk  ? ""
                  : e.parse_json ? "  (map with --stdin --input json)"
                                 : "  (not mappable from the command line)",
                  e.library.empty() ? "" : ("  [" + e.library + "]").c_str());
    }
  }
  return cli::kExitOk;
}

}  // namespace ferry::coordinator
