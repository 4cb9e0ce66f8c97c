// ferry's cross-process synchronization primitives, all in one include: Lock, RLock,
// Semaphore, BoundedSemaphore, Event, Condition, Barrier, Value<T>, Array<T>.
//
// What Python's multiprocessing offers, plus what it does not: each primitive survives a
// process being killed while it holds or waits on it. A dead holder of a Lock/RLock (and of
// the lock of a Condition, Value or Array) is reported to the next owner as owner_died; the
// units of a dead Semaphore holder are reclaimed; a dead Barrier party breaks the barrier for
// everyone instead of hanging it. No primitive lets a dead peer block the survivors.
// Each header states its primitive's contract; sync_base.hpp the common one (names in
// /dev/shm/ferry.<session>.<name>, move-only handles, the creator removes the name,
// handles serialize by name).
#pragma once

#include "ferry/ipc/sync_barrier.hpp"    // IWYU pragma: export
#include "ferry/ipc/sync_base.hpp"       // IWYU pragma: export
#include "ferry/ipc/sync_event.hpp"      // IWYU pragma: export
#include "ferry/ipc/sync_lock.hpp"       // IWYU pragma: export
#include "ferry/ipc/sync_semaphore.hpp"  // IWYU pragma: export
#include "ferry/ipc/sync_value.hpp"      // IWYU pragma: export
