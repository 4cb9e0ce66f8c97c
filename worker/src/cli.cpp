#include "ferry/worker/cli.hpp"

#include <cmath>
#include <cstdlib>
#include <iostream>
#include <string>

#include "ferry/ipc/endpoint.hpp"
#include "ferry/shared/cli_support.hpp"
#include "ferry/worker/runtime.hpp"

namespace ferry::worker {

int run_cli(int argc, char** argv) {
  std::string connect;
  std::string keys;
  std::string name;
  unsigned slots = 1;
  CLI::App app{"ferry-worker: run ferry tasks for a coordinator", "ferry-worker"};
  app.set_version_flag("--version", "ferry-worker 0.1.0");
  app.add_option("--connect", connect, "coordinator endpoint (tcp://HOST:PORT, ipc://PATH, ...)");
  app.add_option("--slots", slots, "tasks run at once")->check(CLI::PositiveNumber);
  app.add_option("--keys", keys, "CURVE key directory (from `ferry-coordinator keygen`)");
  app.add_option("--name", name, "name shown in the coordinator's logs");
  std::vector<std::string> tasks;
  app.add_option("--tasks", tasks,
                 "task library to load (a .so built with ferry_add_task_library, or a folder "
                 "of them); repeatable")
      ->take_all()
      ->allow_extra_args(false);
  double reconnect_s = 60;
  app.add_option("--reconnect-timeout", reconnect_s,
                 "seconds to keep trying to reach a lost coordinator before exiting (default 60)")
      ->check(cli::seconds(0.001, 1e6));
  std::string log_level;
  std::string log_format;
  app.add_option("--log-level", log_level,
                 "trace | debug | info (default) | warn | error: the least severe line to write")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  app.add_option("--log-format", log_format,
                 "text (default) | json: one JSON object per line (time, level, pid, host, "
                 "message)")
      ->check(CLI::IsMember({"text", "json"}));
  if (auto code = cli::parse(app, argc, argv)) return *code;
  // Through the environment, which run() reads (as workers a coordinator starts do).
  if (!log_level.empty()) ::setenv("FERRY_LOG_LEVEL", log_level.c_str(), 1);
  if (!log_format.empty()) ::setenv("FERRY_LOG_FORMAT", log_format.c_str(), 1);

  if (connect.empty()) return cli::usage_error(app, "--connect ENDPOINT is required");
  auto ep = ipc::Endpoint::parse(connect);
  if (!ep) {
    std::cerr << "ferry-worker: --connect: " << ep.error().message() << "\n";
    return cli::kExitUsage;
  }
  Options opt;
  opt.keys = keys;
  opt.reconnect_timeout = std::chrono::milliseconds(std::llround(reconnect_s * 1000));
  opt.endpoint = connect;
  opt.name = name;
  opt.slots = slots;
  opt.task_libraries = tasks;
  if (const char* p = std::getenv("FERRY_WORKER_PARENT")) opt.parent = std::atoi(p);
  return run(opt);
}

}  // namespace ferry::worker
