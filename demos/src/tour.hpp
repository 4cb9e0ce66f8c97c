// The demo drivers, one per lesson (see register.cpp for the tour's order and one-line lessons).
// Each returns 0 when the lesson's invariant held.
#pragma once

#include "common.hpp"

namespace ferry::demos {

int countdown(const Options& opt);       // demo_basics.cpp
int local_data(const Options& opt);      // demo_basics.cpp
int race(const Options& opt);            // demo_race.cpp
int lock(const Options& opt);            // demo_race.cpp
int rlock(const Options& opt);           // demo_locks.cpp
int deadlock(const Options& opt);        // demo_locks.cpp
int semaphore(const Options& opt);       // demo_semaphore.cpp
int event(const Options& opt);           // demo_event.cpp
int condition(const Options& opt);       // demo_condition.cpp
int barrier(const Options& opt);         // demo_barrier.cpp
int pipe(const Options& opt);            // demo_channels.cpp
int channel(const Options& opt);         // demo_channels.cpp
int queue(const Options& opt);           // demo_queues.cpp
int ghostbusters(const Options& opt);    // demo_queues.cpp
int pool(const Options& opt);            // demo_pools.cpp
int supervisor(const Options& opt);      // demo_pools.cpp
int distributed(const Options& opt);     // demo_pools.cpp
int cpu_bound(const Options& opt);       // demo_perf.cpp
int io_bound(const Options& opt);        // demo_perf.cpp
int cooperative(const Options& opt);     // demo_cooperative.cpp
int pipeline_graph(const Options& opt);  // demo_graph.cpp
int object_store(const Options& opt);    // demo_objects.cpp
int actors(const Options& opt);          // demo_actors.cpp

}  // namespace ferry::demos
