// ferry::keep_freed_memory(): keep glibc's allocator from handing freed large blocks back to
// the kernel after each use.
//
// By default glibc returns a freed block above its dynamic mmap threshold (and the heap's
// top above twice that) to the kernel, so a process that allocates and frees a buffer of a
// megabyte or more per task pays a fresh page fault for every page of it each time (microseconds
// per page on a VM): map over zmq ran 12x slower with that than with the memory kept. After
// this call the process serves blocks up to 32 MiB from its heap and keeps up to 128 MiB of
// freed heap for reuse. Worker processes call it at start; ferry-coordinator too. A program
// driving a Pool over large data may call it at the top of main. It does nothing (and returns
// false) when the operator has set GLIBC_TUNABLES, MALLOC_TRIM_THRESHOLD_ or
// MALLOC_MMAP_THRESHOLD_, whose settings win, or with another allocator than glibc's.
//
// Threading: call it before other threads allocate (mallopt is not meant to race them).
#pragma once

namespace ferry {

bool keep_freed_memory() noexcept;

}  // namespace ferry
