// The worker runtime: connect to a coordinator, handshake, run tasks until told to stop.
//
// A worker process is either the stand-alone ferry-worker or the user's own executable started
// by a Pool in worker mode (self-exec): ferry::init(argc, argv) at the top of main() notices the
// FERRY_WORKER_* environment a Pool sets, runs the worker loop and exits, so the rest of main
// only ever runs in the coordinating process.
//
// Lifetime duties of a local worker (parent pid given): it dies with its coordinator
// (PR_SET_PDEATHSIG, re-checking the parent after setting it, and EOF on the control channel),
// and it ignores SIGINT, since Ctrl-C in a terminal reaches the whole process group and the
// coordinator decides what an interrupt means.
//
// A remote worker (no parent) keeps its link alive with heartbeats: it answers the
// coordinator's pings and, when nothing arrives for the heartbeat timeout or the connection
// drops, reconnects and registers again, for up to reconnect_timeout; then it exits with
// kExitLost and says why. Results of tasks that were running when the link was lost are
// dropped (the coordinator has re-queued those tasks elsewhere).
//
// Threading: a local worker runs tasks on the calling thread, one at a time. A remote worker
// (or slots > 1) reads the channel on the calling thread and runs tasks on `slots` threads.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace ferry::worker {

struct Options {
  std::string endpoint;     // the control channel (pipe:R,W, shm://..., ipc://..., tcp://...)
  std::string name;         // shown in the coordinator's logs
  std::uint32_t slots = 1;  // tasks at once (local workers: 1)
  pid_t parent = 0;         // local worker: the coordinator's pid (0: remote, no death link)
  std::uint32_t worker_id = 0;
  std::string keys;  // CURVE key directory (remote workers over tcp)
  // Remote workers: how long to keep trying to reach a lost coordinator before giving up.
  std::chrono::milliseconds reconnect_timeout{60000};
  // Task libraries to load before serving (files or folders of *.so; --tasks), besides
  // those named by $FERRY_TASK_LIBRARIES.
  std::vector<std::string> task_libraries;
};

// Exit codes of a worker process.
inline constexpr int kExitOk = 0;             // shutdown requested, or the coordinator went away
inline constexpr int kExitConnectFailed = 3;  // could not open the channel or no handshake
inline constexpr int kExitRejected = 4;       // the coordinator refused this worker
inline constexpr int kExitInitFailed = 5;     // the per-worker initializer threw, or a task
                                              // library could not be loaded
inline constexpr int kExitLost = 6;           // lost the coordinator and could not reconnect

// Runs the worker loop; returns the process exit code (messages go to stderr).
int run(const Options& opt);

// Registers the built-in tasks (square, sleep_ms, spin_ms, count_primes, fail, crash, blob).
// Idempotent; must run before the first pool or worker freezes the registry.
void register_builtin_tasks();

}  // namespace ferry::worker

namespace ferry {

// Call first thing in main() of a program that uses ferry::Pool with self-exec workers: in a
// process spawned as a worker it runs the worker and exits; otherwise it registers the
// built-in tasks and returns.
//
// `PROGRAM --ferry-worker --connect EP [--keys DIR] [--slots N] [--name NAME]
// [--reconnect-timeout S]` makes the same program a remote worker (the options and exit codes
// of ferry-worker), serving its own tasks: one binary is the coordinator on one host and the
// workers on others, as MPI programs are deployed.
void init(int argc, char** argv);

}  // namespace ferry
