// Private to ipc/: how close this process is to its file-descriptor limit, and EMFILE/ENFILE
// turned into Errc::too_many_open_files with numbers a user can act on. Running out is worth a
// check of its own because libzmq does not fail cleanly there: it aborts the process when it
// cannot make one of its internal descriptors.
#pragma once

#include <cstddef>
#include <string_view>

#include "ferry/shared/error.hpp"

namespace ferry::ipc::fd_limits {

struct Usage {
  std::size_t open = 0;   // descriptors open in this process
  std::size_t limit = 0;  // RLIMIT_NOFILE's soft limit; 0 when it could not be read
};
// Counts /proc/self/fd. A process already at its limit cannot open that directory: it then
// reports open == limit.
Usage usage() noexcept;

// TooManyOpenFiles (saying "N of M file descriptors in use") unless at least `needed` more
// descriptors can be opened. Ok when the limit cannot be read.
Status check_headroom(std::string_view what, std::size_t needed);

// An error for a call that failed with errno `err`: EMFILE / ENFILE as TooManyOpenFiles (with
// the counts), anything else as system_error(what, err).
Error os_error(std::string_view what, int err);

}  // namespace ferry::ipc::fd_limits
