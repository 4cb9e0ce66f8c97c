// The contract between a task library (a shared object of FERRY_TASKs) and the program that
// loads it (TaskRegistry::load_library: ferry-worker --tasks, ferry-coordinator --tasks,
// PoolOptions::task_libraries).
//
// A task library carries its own copy of ferry's task code (linked statically and kept out of
// its exported symbols), so its FERRY_TASKs register in the library's own registry; the one
// exported symbol below hands that registry's entries to the loader. The loader checks the
// ABI, the protocol version and the entry layout before it touches an entry, so a library
// built against another ferry is refused with a message instead of crashing the program.
//
// Build one with the CMake helper (it adds FERRY_TASK_LIBRARY_ENTRY and the link options):
//   find_package(ferry REQUIRED)
//   ferry_add_task_library(mytasks SOURCES tasks.cpp)      # -> libmytasks.so
//
// Threading: the entry point is called once per load, before the loader's registry freezes.
#pragma once

#include <cstdint>
#include <vector>

#include "ferry/shared/config.hpp"
#include "ferry/shared/task.hpp"

namespace ferry {

// Bumped when TaskLibraryInfo or TaskEntry change in a way the size check cannot see.
inline constexpr std::uint32_t kTaskLibraryAbi = 1;

// What a task library's entry point returns. The first two fields keep their place in every
// ABI, so a loader can name the version it was given.
struct TaskLibraryInfo {
  std::uint32_t abi = kTaskLibraryAbi;
  std::uint16_t protocol_version = kProtocolVersion;
  std::uint32_t entry_size = sizeof(TaskEntry);
  const std::vector<TaskEntry>* (*entries)() = nullptr;
};

}  // namespace ferry

// The entry point's name (C linkage) and the one definition a task library holds.
#define FERRY_TASK_LIBRARY_SYMBOL "ferry_task_library_v1"
#define FERRY_TASK_LIBRARY_ENTRY()                                                       \
  extern "C" __attribute__((visibility("default"))) const ::ferry::TaskLibraryInfo*      \
  ferry_task_library_v1() {                                                              \
    static const ::ferry::TaskLibraryInfo info{                                          \
        ::ferry::kTaskLibraryAbi, ::ferry::kProtocolVersion, sizeof(::ferry::TaskEntry), \
        [] { return &::ferry::TaskRegistry::instance().entries(); }};                    \
    return &info;                                                                        \
  }
