#include "ferry/coordinator/cli.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <iostream>
#include <sstream>

#include "ferry/coordinator/http.hpp"
#include "ferry/coordinator/map_command.hpp"
#include "ferry/ipc/curve.hpp"
#include "ferry/ipc/endpoint.hpp"
#include "ferry/shared/cli_support.hpp"
#include "ferry/shared/log.hpp"
#include "ferry/shared/memory.hpp"
#include "ferry/shared/session.hpp"
#include "ferry/shared/task.hpp"

namespace ferry::coordinator {

EventLevel event_level(const Options& opt) noexcept {
  if (opt.log_level == "error") return EventLevel::error;
  if (opt.log_level == "warn") return EventLevel::warn;
  return EventLevel::info;
}

void configure_logging(const Options& opt) {
  log::Config c = log::config();
  c.level = log::parse_level(opt.log_level).value_or(log::Level::info);
  c.format = log::parse_format(opt.log_format).value_or(log::Format::text);
  log::configure(c);
  // Local workers inherit these; their lines come back through this process, which adds
  // the JSON (a worker writing JSON would be wrapped twice).
  ::setenv("FERRY_LOG_LEVEL", opt.log_level.c_str(), 1);
  ::setenv("FERRY_LOG_FORMAT", "text", 1);
}

PoolOptions pool_options(const Options& opt) {
  PoolOptions p;
  p.event_level = event_level(opt);
  p.workers = opt.workers;
  p.transport = parse_transport(opt.transport).value_or(Transport::shm);
  p.max_retries = opt.max_retries;
  // The parser bounds it (0 or 0.001 s to 1e6 s), so this neither overflows nor rounds to 0.
  p.task_timeout = std::chrono::milliseconds(std::llround(opt.task_timeout_s * 1000));
  p.listen = opt.listen;
  p.keys = opt.keys;
  p.insecure = opt.insecure;
  p.heartbeat_interval = std::chrono::milliseconds(opt.heartbeat_interval_ms);
  p.heartbeat_timeout = std::chrono::milliseconds(opt.heartbeat_timeout_ms);
  return p;
}

unsigned workers_to_await(const Options& opt) noexcept {
  if (opt.wait_workers > 0) return opt.wait_workers;
  return opt.workers == 0 ? 1u : 0u;
}

bool await_joined_workers(Pool& pool, const Options& opt,
                          const std::function<bool()>& interrupted) {
  using Clock = std::chrono::steady_clock;
  const unsigned want = workers_to_await(opt);
  if (want == 0) return true;
  if (event_level(opt) <= EventLevel::info) {
    std::ostringstream os;
    os << "listening on " << pool.listen_endpoint() << "; waiting for " << want
       << " worker(s) to join (up to " << opt.wait_timeout_s << " s)";
    log::write(log::Level::info, "ferry", os.str());
  }
  const auto deadline =
      Clock::now() + std::chrono::milliseconds(std::llround(opt.wait_timeout_s * 1000));
  // In slices: a signal handler cannot wake the pool's condition variable, so an interrupt
  // is seen at the end of the slice it arrives in.
  for (auto now = Clock::now(); now < deadline; now = Clock::now()) {
    if (interrupted && interrupted()) return false;
    const auto slice_end = std::min(deadline, now + std::chrono::milliseconds(50));
    if (pool.wait_workers(want, std::chrono::ceil<std::chrono::milliseconds>(slice_end - now))) {
      return true;
    }
    // False before its time was up: the pool is closed (broken), no worker will come.
    if (Clock::now() < slice_end) break;
  }
  if (interrupted && interrupted()) return false;
  std::ostringstream os;
  os << "no job run: fewer than " << want << " worker(s) joined within " << opt.wait_timeout_s
     << " s";
  log::write(log::Level::error, "ferry", os.str());
  return false;
}

namespace {

int run_demo(const Demo& d, const Options& opt) {
  std::cout << "\n=== demo " << d.name << " — " << d.lesson << "\n" << std::flush;
  return d.run(opt);
}

int demo_command(const std::string& what, const DemoRegistry& demos, const Options& opt) {
  if (what == "list") {
    for (const auto& d : demos.all())
      std::printf("%-14s %s\n", d.name.c_str(), d.lesson.c_str());
    if (demos.all().empty()) std::puts("(no demos are built into this ferry-coordinator)");
    return cli::kExitOk;
  }
  if (what == "all") {
    struct Row {
      std::string name;
      int status;
      double seconds;
    };
    std::vector<Row> rows;
    for (const auto& d : demos.all()) {
      const auto t0 = std::chrono::steady_clock::now();
      const int st = run_demo(d, opt);
      const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
      rows.push_back({d.name, st, dt.count()});
    }
    int failed = 0;
    std::printf("\n%-14s %-6s %8s\n", "demo", "result", "wall s");
    for (const auto& r : rows) {
      std::printf("%-14s %-6s %8.2f\n", r.name.c_str(), r.status == 0 ? "ok" : "FAIL", r.seconds);
      failed += r.status != 0;
    }
    std::printf("%zu demos, %d failed\n", rows.size(), failed);
    return failed == 0 ? cli::kExitOk : cli::kExitFailed;
  }
  const Demo* d = demos.find(what);
  if (d == nullptr) {
    std::cerr << "ferry-coordinator: no demo named '" << what << "' (see `demo list`)\n";
    return cli::kExitUsage;
  }
  return run_demo(*d, opt);
}

// One line per removed segment, then a count (scripts and tests read both).
int cleanup_command(bool include_live) {
  const auto removed = sweep_stale_shm(include_live);
  for (const auto& n : removed)
    std::cout << "removed /dev/shm/" << n << "\n";
  if (removed.empty()) {
    std::cout << "cleanup: nothing to remove\n";
  } else {
    std::cout << "cleanup: removed " << removed.size()
              << (removed.size() == 1 ? " segment\n" : " segments\n");
  }
  return cli::kExitOk;
}

// More re-runs than anyone means, and far from the wrap-around of the attempt counter.
constexpr unsigned kMaxRetries = 1'000'000;

// Refuses a malformed endpoint while parsing, so a usage error starts no worker.
CLI::Validator endpoint_check() {
  return CLI::Validator(
      [](std::string& text) {
        auto ep = ipc::Endpoint::parse(text);
        return ep ? std::string() : ep.error().detail;
      },
      "ENDPOINT");
}

// The options every command shares (before the command on the command line).
void add_global_options(CLI::App& app, Options& opt) {
  app.add_option("-w,--workers", opt.workers, "local worker processes (default: CPU count)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("-t,--transport", opt.transport, "local transport: pipe | shm | zmq")
      ->check(CLI::IsMember({"pipe", "shm", "zmq"}));
  app.add_option("--listen", opt.listen, "also accept remote workers (e.g. tcp://0.0.0.0:5555)")
      ->check(endpoint_check());
  app.add_option("--keys", opt.keys, "CURVE key directory (from `keygen`)");
  app.add_flag("--insecure", opt.insecure, "allow plain TCP on a non-loopback address");
  app.add_option("--max-retries", opt.max_retries,
                 "re-runs of a task whose worker died (default 3, at most 1000000)")
      ->check(CLI::Range(0u, kMaxRetries));
  app.add_option("--task-timeout", opt.task_timeout_s,
                 "kill and retry a task that runs longer than this many seconds (0.001 to "
                 "1000000; default 0: none)")
      ->check(cli::seconds(0.001, 1e6, /*zero_means_none=*/true));
  app.add_flag_function(
      "--progress,!--no-progress", [&](std::int64_t n) { opt.progress = n > 0; },
      "progress bar on stderr (default: when it is a terminal)");
  app.add_flag("--json", opt.json, "machine-readable results and summary (JSON lines)");
  app.add_option("--wait-workers", opt.wait_workers,
                 "wait for this many workers to register before starting (default: 1 when "
                 "--workers 0)");
  app.add_option("--wait-timeout", opt.wait_timeout_s, "seconds to wait for them (default 60)")
      ->check(cli::seconds(0.001, 1e6));
  app.add_option("--heartbeat-interval", opt.heartbeat_interval_ms,
                 "ms between pings to remote workers (default 500)")
      ->check(CLI::PositiveNumber);
  app.add_option("--heartbeat-timeout", opt.heartbeat_timeout_ms,
                 "ms of silence after which a remote worker is lost (default 3000)")
      ->check(CLI::PositiveNumber);
  app.add_option("--tasks", opt.task_libraries,
                 "task library to load: a .so built with ferry_add_task_library, or a folder of "
                 "them (repeatable; local workers load it too, remote ones need their own "
                 "--tasks)")
      ->take_all()
      ->allow_extra_args(false);
  app.add_option("--log-level", opt.log_level,
                 "error: failures only | warn: also what went wrong but was handled (a worker "
                 "died, a peer was refused) | info (default): also the news of workers "
                 "joining, leaving and where the coordinator listens | debug: also each failed "
                 "item's whole stack trace, workers starting | trace: also every task a worker "
                 "runs")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  app.add_option("--log-format", opt.log_format,
                 "text (default) | json: one JSON object per line on stderr (time, level, pid, "
                 "host, source, worker where the line is a worker's, message)")
      ->check(CLI::IsMember({"text", "json"}));
  app.add_option("--http", opt.http,
                 "serve a status page, /api/status and /metrics at HOST:PORT (e.g. "
                 "127.0.0.1:8080; a non-loopback address needs --http-token)");
  app.add_option("--http-token", opt.http_token,
                 "token every --http request must carry (Authorization: Bearer TOKEN or "
                 "?token=TOKEN); `status` sends it");
  app.add_option("--http-linger", opt.http_linger_s,
                 "seconds to keep serving --http after the job ends, for a last look or scrape "
                 "(Ctrl-C ends it; default 0)")
      ->check(cli::seconds(0.001, 1e6, /*zero_means_none=*/true));
}

// `map TASK ...`: its arguments land in margs.
CLI::App* add_map_command(CLI::App& app, MapArgs& margs) {
  auto* map = app.add_subcommand("map", "run TASK over items: one result per line on stdout");
  map->add_option("task", margs.task, "a registered task (see `tasks`)")->required();
  map->add_option("--range", margs.range, "integers A..B-1, as A:B");
  // Split by map itself: CLI11's delimiter drops empty items ("1,,2" would map 1 and 2).
  map->add_option("--items", margs.items, "the items, comma separated");
  map->add_flag("--stdin", margs.from_stdin, "one item per line on stdin");
  map->add_option("--chunksize", margs.chunksize, "items per task message (default: automatic)")
      ->check(CLI::PositiveNumber);
  map->add_flag("--unordered", margs.unordered, "print results as they finish");
  map->add_option("--input", margs.input,
                  "how --stdin lines are read: text (default; one number or string per line) | "
                  "json (one JSON value per line: the argument, or an array of the arguments)")
      ->check(CLI::IsMember({"text", "json"}));
  map->add_option("--max-line", margs.max_line,
                  "longest --stdin line in bytes (default 16 MiB); a longer line is a failed "
                  "item, skipped")
      ->check(CLI::Range(std::size_t{1}, kMaxMaxLine));
  return map;
}

// `status URL ...`: its arguments land in sargs.
CLI::App* add_status_command(CLI::App& app, StatusArgs& sargs) {
  auto* status = app.add_subcommand(
      "status", "print a running coordinator's status (from its --http endpoint) as a table");
  status
      ->add_option("url", sargs.url,
                   "the coordinator's --http address, e.g. 127.0.0.1:8080 (or its page's URL, "
                   "?token=TOKEN included)")
      ->required();
  status->add_flag("--watch", sargs.watch, "refresh until interrupted");
  status->add_option("--interval", sargs.interval_s, "seconds between refreshes (default 1)")
      ->check(cli::seconds(0.05, 3600));
  status->add_option("--count", sargs.count, "--watch: stop after this many refreshes");
  return status;
}

}  // namespace

int run_cli(int argc, char** argv, const DemoRegistry& demos) {
  // ferry's own process: chunks of a megabyte or more must not fault fresh pages in each time.
  (void)keep_freed_memory();
  Options opt;
  CLI::App app{"ferry-coordinator: run ferry tasks on a pool of worker processes",
               "ferry-coordinator"};
  app.set_version_flag("--version", "ferry-coordinator 0.1.0");
  app.fallthrough();
  add_global_options(app, opt);

  std::string demo_name;
  auto* demo = app.add_subcommand("demo", "run the demo tour: demo list | demo NAME | demo all");
  demo->add_option("name", demo_name, "list, all, or a demo's name");
  bool cleanup_all = false;
  auto* cleanup = app.add_subcommand(
      "cleanup",
      "remove the /dev/shm/ferry.* segments of sessions whose coordinator is gone, and the "
      "host copies of fetched objects (ferry.hostcopy-*) no process holds, naming each");
  cleanup->add_flag("--all", cleanup_all,
                    "also remove those of running sessions (except this process's own); "
                    "processes that have them mapped keep them, new opens fail");
  MapArgs margs;
  auto* map = add_map_command(app, margs);
  StatusArgs sargs;
  auto* status = add_status_command(app, sargs);
  auto* tasks = app.add_subcommand("tasks", "list the registered tasks");
  std::string key_dir;
  auto* keygen = app.add_subcommand("keygen", "write a coordinator and a worker CURVE key pair");
  keygen->add_option("dir", key_dir, "directory for the keys (created, owner-only)")->required();

  if (auto code = cli::parse(app, argc, argv)) return *code;
  configure_logging(opt);

  // cleanup sweeps itself, to report what it removes.
  if (cleanup->parsed()) return cleanup_command(cleanup_all);
  if (status->parsed()) {
    sargs.token = opt.http_token;
    sargs.json = opt.json;
    return status_command(sargs);
  }
  if (!opt.http.empty()) {
    // Refused before anything starts, like --listen without keys.
    if (auto st = check_http_options({opt.http, opt.http_token}); !st) {
      std::cerr << "ferry-coordinator: " << st.error().detail << "\n";
      return cli::kExitUsage;
    }
  }

  // Segments of coordinators that died without cleaning up are swept on every start.
  sweep_stale_shm(/*include_live=*/false);

  for (const auto& lib : opt.task_libraries) {
    if (auto st = TaskRegistry::instance().load_library(lib); !st) {
      std::cerr << "ferry-coordinator: --tasks: " << st.error().detail << "\n";
      return cli::kExitUsage;
    }
  }

  if (demo->parsed()) {
    if (demo_name.empty()) return cli::usage_error(app, "demo needs a name: list, all, or a demo");
    return demo_command(demo_name, demos, opt);
  }
  if (map->parsed()) return map_command(margs, opt);
  if (tasks->parsed()) return tasks_command(opt);
  if (keygen->parsed()) {
    if (auto st = ipc::write_key_directory(key_dir); !st) {
      std::cerr << "ferry-coordinator: keygen: " << st.error().message() << "\n";
      return cli::kExitFailed;
    }
    std::cout << "wrote CURVE keys to " << key_dir
              << "/: coordinator.{pub,secret}, worker.{pub,secret}, authorized_workers\n"
                 "coordinator host needs coordinator.* and authorized_workers; each worker "
                 "host needs coordinator.pub and worker.*\n";
    return cli::kExitOk;
  }
  return cli::usage_error(app, "a COMMAND is required");
}

}  // namespace ferry::coordinator
