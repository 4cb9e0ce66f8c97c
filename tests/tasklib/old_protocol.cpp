// A task library as one built against protocol 2 would look to the loader.
#include "ferry/shared/task_library.hpp"

extern "C" __attribute__((visibility("default"))) const ferry::TaskLibraryInfo*
ferry_task_library_v1() {
  static const ferry::TaskLibraryInfo info{ferry::kTaskLibraryAbi, 2, sizeof(ferry::TaskEntry), [] {
                                             return &ferry::TaskRegistry::instance().entries();
                                           }};
  return &info;
}
