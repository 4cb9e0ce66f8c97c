#include "ferry/demos/demos.hpp"
#include "tour.hpp"

#include <dlfcn.h>

#include "ferry/shared/task.hpp"

namespace ferry::demos {
namespace {

struct Entry {
  const char* name;
  const char* lesson;
  int (*run)(const Options&);
};

// The tour, in order. Keep the lessons in step with README.md ("Demos").
constexpr Entry kTour[] = {
    {"countdown", "start a process, let it count down, wait for it (Process.start/join)",
     countdown},
    {"race", "processes increment a shared Value: updates get lost without a Lock, never with one",
     race},
    {"lock", "mess vs neat: lines written a character at a time interleave without a Lock", lock},
    {"rlock", "a Lock re-acquired by its owner times out; an RLock re-enters", rlock},
    {"deadlock",
     "two processes take two locks in opposite order: timed acquires find the cycle; ordered "
     "locks succeed",
     deadlock},
    {"semaphore", "producers and customers over a bounded buffer counted by two Semaphores",
     semaphore},
    {"event", "an Event as a start barrier for N processes, then as a notification", event},
    {"condition", "producer/consumer on a shared buffer with a Condition variable", condition},
    {"barrier", "N processes meet at a Barrier; one that dies on its way breaks it for all",
     barrier},
    {"local-data",
     "threads share globals (thread_local aside); each worker process has its own copy",
     local_data},
    {"pipe", "producer/consumer over a ferry::Pipe between the main process and a worker", pipe},
    {"queue", "several producers and consumers over a ferry::Queue; every item accounted for",
     queue},
    {"ghostbusters",
     "the Ghostbusters board Ecto-1 at different times, then catch the ghost pool into the trap",
     ghostbusters},
    {"channel",
     "structured objects cross a typed Channel (cereal instead of pickle) and are checked",
     channel},
    {"pool", "Pool.map, imap_unordered, and futures with as_completed", pool},
    {"cpu-bound",
     "the same CPU work sequentially, on N threads and on N processes: wall times, speed-ups, "
     "no GIL",
     cpu_bound},
    {"io-bound",
     "socket-bound tasks against a slow local server: a pool's speed-up exceeds the core count",
     io_bound},
    {"cooperative", "coroutines take turns inside one worker; processes are preempted by the OS",
     cooperative},
    {"supervisor",
     "workers crash at random; the coordinator replaces them and every task completes", supervisor},
    {"distributed",
     "map-reduce (word count, Monte Carlo pi) over all the pool's workers, values in and out",
     distributed},
    {"pipeline-graph",
     "a task graph: futures as arguments, parse -> count -> merge; a failed branch's dependants "
     "are DependencyFailed",
     pipeline_graph},
    {"object-store",
     "one large array put once into the object store, many tasks reading it by handle: the "
     "copies counted",
     object_store},
    {"actors",
     "a bank-account actor: deposits from several threads applied once, in order; its process "
     "killed, calls in it fail with ActorDied, it restarts fresh",
     actors},
};

}  // namespace

void register_all(coordinator::DemoRegistry& registry) {
  // The demos' tasks live in this library: recorded as loaded, so every demo pool's workers
  // load it too (they are copies of the program, which has only its own tasks).
  Dl_info self{};
  if (::dladdr(reinterpret_cast<void*>(&register_all), &self) != 0 && self.dli_fname) {
    if (auto st = TaskRegistry::instance().load_library(self.dli_fname); !st) {
      throw Exception(st.error());
    }
  }
  for (const Entry& e : kTour) {
    registry.add(
        {e.name, e.lesson, [e](const Options& opt) { return guarded(e.name, e.run, opt); }});
  }
}

}  // namespace ferry::demos
