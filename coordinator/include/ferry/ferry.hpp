// Everything a ferry user needs: tasks, pools and futures, typed channels and queues,
// cross-process synchronisation. Link ferry::ferry.
#pragma once

#include "ferry/coordinator/actor.hpp"
#include "ferry/coordinator/errors.hpp"
#include "ferry/coordinator/future.hpp"
#include "ferry/coordinator/pool.hpp"
#include "ferry/ipc/sync.hpp"
#include "ferry/ipc/typed.hpp"
#include "ferry/shared/memory.hpp"
#include "ferry/shared/task.hpp"
#include "ferry/worker/builtin_tasks.hpp"
#include "ferry/worker/runtime.hpp"

namespace ferry {
// The synchronisation primitives under the names users know from multiprocessing.
using ipc::Array;
using ipc::Barrier;
using ipc::BoundedSemaphore;
using ipc::Condition;
using ipc::Event;
using ipc::Lock;
using ipc::RLock;
using ipc::Semaphore;
using ipc::Value;
}  // namespace ferry
