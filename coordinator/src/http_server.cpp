// The coordinator's HTTP endpoint: status JSON, Prometheus metrics, the status page, and the
// `status` command that reads them back.
#include <signal.h>
#include <unistd.h>

#include <httplib.h>
#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "ferry/coordinator/http.hpp"
#include "ferry/shared/cli_support.hpp"
#include "ferry/shared/proc_usage.hpp"

namespace ferry::coordinator {

namespace {

using Clock = std::chrono::steady_clock;

std::string this_host() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "?";
  return buf;
}

const Clock::time_point g_process_start = Clock::now();

// Compares without an early exit, so a wrong token's timing says nothing about the right one.
bool same_token(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ b[i % std::max<std::size_t>(1, b.size())]);
  return diff == 0;
}

// A Prometheus label value: backslash, double quote and newline escaped.
std::string label(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// The shortest text that reads back as v ("0.005", not "0.0050000000000000001").
std::string number(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// Ctrl-C and SIGTERM are the main thread's business (the map command's handler).
void block_signals() {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
}

// The workers as the status page shows them: local ones with this host's name and, while
// alive, their resource use read from /proc (their heartbeats are not needed for that).
std::vector<WorkerStats> observed_workers(const PoolStats& st, const std::string& host) {
  std::vector<WorkerStats> out = st.workers;
  for (auto& w : out) {
    if (w.remote) continue;
    if (w.host.empty()) w.host = host;
    if (w.alive) {
      if (auto u = read_proc_usage(w.pid)) {
        w.cpu_s = u->cpu_s;
        w.rss_bytes = static_cast<std::int64_t>(u->rss_bytes);
      }
    }
  }
  return out;
}

}  // namespace

void JobProgress::note_failure(std::string text) {
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::lock_guard lk(m_);
  if (failures_.size() == 50) failures_.pop_front();
  failures_.push_back(PoolNote{now, 0, std::move(text), {}});
}

std::vector<PoolNote> JobProgress::failures() const {
  std::lock_guard lk(m_);
  return {failures_.begin(), failures_.end()};
}

Result<std::pair<std::string, int>> parse_http_address(std::string_view address) {
  const auto bad = [&](const std::string& why) {
    return Error{Errc::invalid_argument,
                 "--http '" + std::string(address) + "': " + why + " (expected HOST:PORT)"};
  };
  const auto colon = address.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return bad("no host and port");
  std::string host(address.substr(0, colon));
  const std::string port_text(address.substr(colon + 1));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host.empty()) return bad("empty host");
  int port = -1;
  try {
    std::size_t used = 0;
    port = std::stoi(port_text, &used);
    if (used != port_text.size()) port = -1;
  } catch (const std::exception&) {
    port = -1;
  }
  if (port < 0 || port > 65535) return bad("the port must be a number from 0 to 65535");
  return std::pair<std::string, int>{host, port};
}

bool is_loopback_host(std::string_view host) {
  return host == "localhost" || host == "::1" || host.starts_with("127.");
}

Status check_http_options(const HttpOptions& o) {
  auto a = parse_http_address(o.address);
  if (!a) return a.error();
  if (!is_loopback_host(a->first) && o.token.empty()) {
    return Error{Errc::invalid_argument,
                 "--http " + o.address +
                     " is not a loopback address: give --http-token TOKEN (checked on every "
                     "request), or serve on 127.0.0.1"};
  }
  return {};
}

std::string status_json(const Pool& pool, const JobProgress* job, const CoordinatorInfo& who,
                        const ThroughputHistory& history) {
  const PoolStats st = pool.stats();
  const RecentNotes notes = pool.recent();
  const std::string host = this_host();
  nlohmann::json j;
  j["coordinator"] = {
      {"pid", ::getpid()},
      {"host", host},
      {"uptime_s", std::chrono::duration<double>(Clock::now() - g_process_start).count()},
      {"transport", who.transport},
      {"listen", who.listen}};
  nlohmann::json jb = {{"tasks_submitted", st.submitted},
                       {"tasks_completed", st.succeeded},
                       {"tasks_failed", st.failed},
                       {"tasks_cancelled", st.cancelled},
                       {"retries", st.retries},
                       {"in_flight", st.in_flight},
                       {"queued", st.queued},
                       {"worker_deaths", st.worker_deaths}};
  if (job) {
    const double elapsed = std::chrono::duration<double>(Clock::now() - job->started).count();
    const auto done = job->done.load();
    const auto total = job->total.load();
    const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0;
    jb["task"] = job->task;
    jb["items_total"] = total >= 0 ? nlohmann::json(total) : nlohmann::json();
    jb["items_done"] = done;
    jb["items_failed"] = job->failed.load();
    jb["elapsed_s"] = elapsed;
    jb["rate_per_s"] = rate;
    jb["finished"] = job->finished.load();
    const double left =
        total >= 0 ? std::max(0.0, static_cast<double>(total) - static_cast<double>(done)) : 0.0;
    jb["eta_s"] = total >= 0 && rate > 0 ? nlohmann::json(left / rate) : nlohmann::json();
  }
  j["job"] = std::move(jb);
  nlohmann::json ws = nlohmann::json::array();
  for (const auto& w : observed_workers(st, host)) {
    ws.push_back({{"id", w.id},
                  {"host", w.host},
                  {"name", w.name},
                  {"pid", w.pid},
                  {"remote", w.remote},
                  {"state", worker_state_name(w.state)},
                  {"tasks_done", w.tasks},
                  {"failures", w.failures},
                  {"cpu_s", w.cpu_s >= 0 ? nlohmann::json(w.cpu_s) : nlohmann::json()},
                  {"rss_bytes", w.rss_bytes >= 0 ? nlohmann::json(w.rss_bytes) : nlohmann::json()},
                  {"heartbeat_age_s",
                   w.heard_s_ago >= 0 ? nlohmann::json(w.heard_s_ago) : nlohmann::json()}});
  }
  j["workers"] = std::move(ws);
  // The pool's failed tasks and the job's failed items, oldest first.
  std::vector<PoolNote> failed = notes.failures;
  if (job) {
    auto items = job->failures();
    failed.insert(failed.end(), items.begin(), items.end());
    std::stable_sort(failed.begin(), failed.end(),
                     [](const PoolNote& a, const PoolNote& b) { return a.unix_s < b.unix_s; });
  }
  nlohmann::json fs = nlohmann::json::array();
  for (const auto& n : failed)
    fs.push_back({{"time", n.unix_s}, {"text", n.text}, {"stack", n.stack}});
  j["failures"] = std::move(fs);
  nlohmann::json ls = nlohmann::json::array();
  for (const auto& n : notes.lines)
    ls.push_back({{"time", n.unix_s}, {"worker", n.worker}, {"line", n.text}});
  j["log"] = std::move(ls);
  nlohmann::json hs = nlohmann::json::array();
  for (const auto& [t, done] : history)
    hs.push_back({t, done});
  j["history"] = std::move(hs);
  // Worker output need not be UTF-8; JSON text must be.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {

// Prometheus text exposition: "# HELP", "# TYPE", then the samples of each family.
class MetricsWriter {
 public:
  void family(const char* name, const char* type, const char* help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  void sample(const std::string& name, double v) {
    out_ += name;
    out_ += ' ';
    out_ += number(v);
    out_ += '\n';
  }
  // A family with one unlabelled sample.
  void single(const char* name, const char* type, const char* help, double v) {
    family(name, type, help);
    sample(name, v);
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

void pool_metrics(MetricsWriter& m, const PoolStats& st) {
  const auto n = [](std::uint64_t v) { return static_cast<double>(v); };
  m.single("ferry_tasks_submitted_total", "counter", "Tasks (map: chunks) submitted to the pool.",
           n(st.submitted));
  m.single("ferry_tasks_completed_total", "counter", "Tasks that returned a value.",
           n(st.succeeded));
  m.single("ferry_tasks_failed_total", "counter",
           "Tasks that ended with a failure (threw, worker died past the retries, timed out).",
           n(st.failed));
  m.single("ferry_tasks_cancelled_total", "counter", "Tasks cancelled by the caller.",
           n(st.cancelled));
  m.single("ferry_task_retries_total", "counter", "Re-runs of tasks whose worker died.",
           n(st.retries));
  m.single("ferry_worker_deaths_total", "counter", "Workers that died or were lost unexpectedly.",
           n(st.worker_deaths));
  m.family("ferry_workers", "gauge", "Workers by state.");
  std::array<unsigned, 3> by_state{};
  for (const auto& w : st.workers)
    ++by_state[static_cast<std::size_t>(w.state)];
  for (const auto s : {WorkerState::starting, WorkerState::ready, WorkerState::gone}) {
    m.sample("ferry_workers{state=\"" + std::string(worker_state_name(s)) + "\"}",
             by_state[static_cast<std::size_t>(s)]);
  }
  m.single("ferry_tasks_in_flight", "gauge", "Tasks at workers now.", n(st.in_flight));
  m.single("ferry_tasks_queued", "gauge", "Tasks waiting for a worker.", n(st.queued));
}

void duration_histogram(MetricsWriter& m, const PoolStats& st) {
  m.family("ferry_task_duration_seconds", "histogram",
           "Time from a task's dispatch to its result.");
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < DurationHistogram::kBuckets; ++i) {
    cumulative += st.durations.counts[i];
    const std::string le =
        i + 1 < DurationHistogram::kBuckets ? number(DurationHistogram::kBounds[i]) : "+Inf";
    m.sample("ferry_task_duration_seconds_bucket{le=\"" + le + "\"}",
             static_cast<double>(cumulative));
  }
  m.sample("ferry_task_duration_seconds_sum", st.durations.sum_s);
  m.sample("ferry_task_duration_seconds_count", static_cast<double>(st.durations.count));
}

void worker_metrics(MetricsWriter& m, const std::vector<WorkerStats>& workers) {
  const auto per_worker = [&](const char* name, const char* type, const char* help, auto value) {
    m.family(name, type, help);
    for (const auto& w : workers) {
      const double v = value(w);
      if (v < 0) continue;
      m.sample(std::string(name) + "{worker=\"w" + std::to_string(w.id) + "\",host=\"" +
                   label(w.host) + "\"}",
               v);
    }
  };
  per_worker("ferry_worker_tasks_completed_total", "counter",
             "Tasks (map: chunks) each worker completed.",
             [](const WorkerStats& w) { return static_cast<double>(w.tasks); });
  per_worker("ferry_worker_task_failures_total", "counter", "Tasks that failed on each worker.",
             [](const WorkerStats& w) { return static_cast<double>(w.failures); });
  per_worker("ferry_worker_cpu_seconds_total", "counter", "CPU time of each live worker process.",
             [](const WorkerStats& w) { return w.alive ? w.cpu_s : -1.0; });
  per_worker(
      "ferry_worker_resident_bytes", "gauge", "Resident memory of each live worker process.",
      [](const WorkerStats& w) { return w.alive ? static_cast<double>(w.rss_bytes) : -1.0; });
}

void job_metrics(MetricsWriter& m, const JobProgress& job) {
  m.single("ferry_job_items_total", "gauge", "Items of the running job (-1 while unknown).",
           static_cast<double>(job.total.load()));
  m.single("ferry_job_items_done_total", "counter", "Items of the job with an outcome.",
           static_cast<double>(job.done.load()));
  m.single("ferry_job_items_failed_total", "counter", "Items of the job that failed.",
           static_cast<double>(job.failed.load()));
}

}  // namespace

std::string metrics_text(const Pool& pool, const JobProgress* job) {
  const PoolStats st = pool.stats();
  MetricsWriter m;
  pool_metrics(m, st);
  duration_histogram(m, st);
  worker_metrics(m, observed_workers(st, this_host()));
  if (job) job_metrics(m, *job);
  return m.take();
}

// --- the server -----------------------------------------------------------------------------

struct StatusServer::Impl {
  httplib::Server svr;
  std::thread thread;
  std::string host;
  int port = 0;
  // The throughput history: a sampler thread reads the job's atomics once a second.
  static constexpr std::size_t kSamples = 300;
  std::thread sampler;
  std::mutex m;
  std::condition_variable cv;
  bool stopping = false;
  ThroughputHistory history;
  ThroughputHistory snapshot() {
    std::lock_guard lk(m);
    return history;
  }
};

StatusServer::StatusServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

StatusServer::~StatusServer() {
  {
    std::lock_guard lk(impl_->m);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->sampler.joinable()) impl_->sampler.join();
  impl_->svr.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

std::string StatusServer::url() const {
  const bool v6 = impl_->host.find(':') != std::string::npos;
  return "http://" + (v6 ? "[" + impl_->host + "]" : impl_->host) + ":" +
         std::to_string(impl_->port);
}

Result<std::unique_ptr<StatusServer>> StatusServer::start(const HttpOptions& opt, const Pool& pool,
                                                          const JobProgress* job,
                                                          CoordinatorInfo who) {
  if (auto st = check_http_options(opt); !st) return st.error();
  auto addr = parse_http_address(opt.address);
  auto impl = std::make_unique<Impl>();
  impl->host = addr->first == "localhost" ? "127.0.0.1" : addr->first;
  auto& svr = impl->svr;
  // Two threads answer: a page and a scraper at once, without a pool of idle threads.
  svr.new_task_queue = [] { return new httplib::ThreadPool(2); };
  svr.set_read_timeout(5, 0);
  svr.set_write_timeout(5, 0);
  svr.set_keep_alive_max_count(20);
  const std::string token = opt.token;
  svr.set_pre_routing_handler([token](const httplib::Request& req, httplib::Response& res) {
    if (token.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string given = req.get_param_value("token");
    const std::string auth = req.get_header_value("Authorization");
    if (auth.starts_with("Bearer ")) given = auth.substr(7);
    if (same_token(given, token)) return httplib::Server::HandlerResponse::Unhandled;
    res.status = 401;
    res.set_header("WWW-Authenticate", "Bearer");
    res.set_content(
        "401: this ferry coordinator's HTTP endpoint needs its token "
        "(Authorization: Bearer TOKEN, or ?token=TOKEN)\n",
        "text/plain");
    return httplib::Server::HandlerResponse::Handled;
  });
  const Pool* p = &pool;
  Impl* im = impl.get();
  svr.Get("/api/status", [p, job, who, im](const httplib::Request&, httplib::Response& res) {
    res.set_header("Cache-Control", "no-store");
    res.set_content(status_json(*p, job, who, im->snapshot()), "application/json");
  });
  svr.Get("/metrics", [p, job](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(*p, job), "text/plain; version=0.0.4");
  });
  svr.Get("/", [p, job, who, im](const httplib::Request&, httplib::Response& res) {
    // The first snapshot is in the page itself, so it shows the pool without waiting for a
    // poll (and a browser's DOM dump has it on load).
    std::string page(status_page());
    std::string initial = status_json(*p, job, who, im->snapshot());
    for (std::size_t at = 0; (at = initial.find("</", at)) != std::string::npos; at += 3)
      initial.replace(at, 2, "<\\/");
    const std::string mark = "/*FERRY_INITIAL*/null";
    if (auto at = page.find(mark); at != std::string::npos) page.replace(at, mark.size(), initial);
    res.set_header("Cache-Control", "no-store");
    res.set_content(page, "text/html; charset=utf-8");
  });
  const bool bound = impl->port == 0 && addr->second == 0
                         ? (impl->port = svr.bind_to_any_port(impl->host)) > 0
                         : svr.bind_to_port(impl->host, impl->port = addr->second);
  if (!bound) {
    return Error{Errc::system_error, "--http " + opt.address + ": cannot listen there (" +
                                         std::string(std::strerror(errno)) + ")"};
  }
  if (job) {
    impl->sampler = std::thread([im, job] {
      block_signals();
      std::unique_lock lk(im->m);
      for (;;) {
        const double t = std::chrono::duration<double>(Clock::now() - g_process_start).count();
        if (im->history.size() == Impl::kSamples) im->history.erase(im->history.begin());
        im->history.emplace_back(t, job->done.load(std::memory_order_relaxed));
        if (im->cv.wait_for(lk, std::chrono::seconds(1), [im] { return im->stopping; })) return;
      }
    });
  }
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] {
    block_signals();  // its request threads, started here, inherit the mask
    raw->svr.listen_after_bind();
  });
  return std::unique_ptr<StatusServer>(new StatusServer(std::move(impl)));
}

// --- `status URL` ---------------------------------------------------------------------------

namespace {

std::string text_of(const nlohmann::json& v, int decimals = 1) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_float()) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v.get<double>());
    return buf;
  }
  return v.dump();
}

std::string mib(const nlohmann::json& v) {
  if (!v.is_number()) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v.get<double>() / (1024.0 * 1024.0));
  return buf;
}

void print_table(const nlohmann::json& s) {
  const auto& c = s.at("coordinator");
  const auto& j = s.at("job");
  std::printf("coordinator pid %s on %s, up %s s, transport %s%s\n", text_of(c.at("pid")).c_str(),
              text_of(c.at("host")).c_str(), text_of(c.at("uptime_s")).c_str(),
              text_of(c.at("transport")).c_str(),
              c.value("listen", std::string()).empty()
                  ? ""
                  : (", listening on " + c.value("listen", std::string())).c_str());
  if (j.contains("items_done")) {
    std::printf("job %s: %s/%s items, %s failed, %s/s, ETA %s s%s\n",
                text_of(j.value("task", nlohmann::json())).c_str(),
                text_of(j.at("items_done")).c_str(), text_of(j.at("items_total")).c_str(),
                text_of(j.at("items_failed")).c_str(), text_of(j.at("rate_per_s")).c_str(),
                text_of(j.at("eta_s"), 0).c_str(), j.value("finished", false) ? " (finished)" : "");
  }
  std::printf(
      "tasks: %s submitted, %s completed, %s failed, %s retries, %s in flight, %s queued; %s "
      "worker deaths\n",
      text_of(j.at("tasks_submitted")).c_str(), text_of(j.at("tasks_completed")).c_str(),
      text_of(j.at("tasks_failed")).c_str(), text_of(j.at("retries")).c_str(),
      text_of(j.at("in_flight")).c_str(), text_of(j.at("queued")).c_str(),
      text_of(j.at("worker_deaths")).c_str());
  std::printf("%-6s %-16s %-12s %8s %-6s %-8s %7s %5s %8s %8s %7s\n", "worker", "host", "name",
              "pid", "where", "state", "tasks", "fail", "cpu s", "rss MiB", "heard s");
  for (const auto& w : s.at("workers")) {
    std::printf("%-6s %-16s %-12s %8s %-6s %-8s %7s %5s %8s %8s %7s\n",
                ("w" + text_of(w.at("id"))).c_str(), text_of(w.at("host")).c_str(),
                w.value("name", std::string()).empty() ? "-" : text_of(w.at("name")).c_str(),
                text_of(w.at("pid")).c_str(), w.value("remote", false) ? "remote" : "local",
                text_of(w.at("state")).c_str(), text_of(w.at("tasks_done")).c_str(),
                text_of(w.at("failures")).c_str(), text_of(w.at("cpu_s"), 2).c_str(),
                mib(w.at("rss_bytes")).c_str(), text_of(w.at("heartbeat_age_s")).c_str());
  }
  const auto& fs = s.at("failures");
  if (!fs.empty()) {
    std::printf("recent failures (%zu):\n", fs.size());
    const std::size_t from = fs.size() > 5 ? fs.size() - 5 : 0;
    for (std::size_t i = from; i < fs.size(); ++i)
      std::printf("  %s\n", text_of(fs[i].at("text")).c_str());
  }
}

}  // namespace

int status_command(const StatusArgs& args) {
  std::string base = args.url;
  std::string token = args.token;
  // The page's own URL works too (as deploy/local-cluster.sh --http prints it): its query is
  // dropped, and a token=TOKEN in it is sent as --http-token would be (which, given, wins).
  if (const auto q = base.find('?'); q != std::string::npos) {
    std::string query = base.substr(q + 1);
    base.erase(q);
    for (std::size_t at = 0; at <= query.size();) {
      const auto amp = std::min(query.find('&', at), query.size());
      const std::string_view param(query.data() + at, amp - at);
      if (param.starts_with("token=") && token.empty()) token = param.substr(6);
      at = amp + 1;
    }
  }
  if (base.find("://") == std::string::npos) base = "http://" + base;
  while (base.size() > 1 && base.back() == '/')
    base.pop_back();
  if (!base.starts_with("http://")) {
    std::cerr << "ferry-coordinator: status: '" << args.url
              << "': only http:// URLs are served (--http HOST:PORT)\n";
    return cli::kExitUsage;
  }
  httplib::Client client(base);
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(5, 0);
  if (!token.empty()) client.set_bearer_token_auth(token);
  const bool tty = ::isatty(1) == 1;
  for (unsigned n = 1;; ++n) {
    auto res = client.Get("/api/status");
    if (!res) {
      std::cerr << "ferry-coordinator: status: cannot read " << base
                << "/api/status: " << httplib::to_string(res.error()) << "\n";
      return cli::kExitFailed;
    }
    if (res->status != 200) {
      std::cerr << "ferry-coordinator: status: " << base << "/api/status answered " << res->status
                << (res->status == 401 ? " (give its --http-token)" : "") << "\n";
      return cli::kExitFailed;
    }
    nlohmann::json s;
    try {
      s = nlohmann::json::parse(res->body);
      if (args.json) {
        std::cout << s.dump() << "\n" << std::flush;
      } else {
        if (args.watch && tty) std::fputs("\033[H\033[2J", stdout);
        print_table(s);
        std::fflush(stdout);
      }
    } catch (const nlohmann::json::exception& e) {
      std::cerr << "ferry-coordinator: status: " << base
                << "/api/status is not a ferry status: " << e.what() << "\n";
      return cli::kExitFailed;
    }
    if (!args.watch || (args.count > 0 && n >= args.count)) return cli::kExitOk;
    // The refresh period, not a synchronization: Ctrl-C ends the watch.
    std::this_thread::sleep_for(std::chrono::duration<double>(args.interval_s));
    if (!args.json && !tty) std::fputs("\n", stdout);
  }
}

}  // namespace ferry::coordinator
