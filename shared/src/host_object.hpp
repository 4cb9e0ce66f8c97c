// Host copies of fetched objects: the worker processes of one host that serve the same
// coordinator fetch an object once between them, into a /dev/shm file the others map.
//
//   ferry.hostclaim-<key>.<object>  the claim: made by the first process that needs the object
//                                   (an O_TMPFILE, locked, then linked: never seen unlocked
//                                   while its claimer lives), filled by its fetch
//   ferry.hostcopy-<key>.<object>   the complete copy: the claim renamed once every byte is in
//
// <key> is a hash of the coordinator's endpoint and session as the worker knows them; the
// object's name carries the coordinator's session too, so a name is never reused for other
// bytes. Each process that has a copy cached holds a shared flock on it; a process dropping
// it unlinks the name when it can take the lock exclusively (nobody else holds it), and so
// does the sweep, so a copy a live process holds is never removed. Sharing is an
// optimisation: when anything about it fails (no O_TMPFILE, a full /dev/shm, a claimer that
// takes longer than the wait limit), the process fetches privately, as before.
//
// Threading: called with the object store's lock held (one fetch per process at a time);
// HostLock is owned by one cache entry.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "ferry/shared/error.hpp"
#include "ferry/shared/object_ref.hpp"

namespace ferry::detail {

// A process's hold on a host copy: released (and the name unlinked if it was the last holder)
// when destroyed.
class HostLock {
 public:
  HostLock(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}
  ~HostLock();
  HostLock(const HostLock&) = delete;
  HostLock& operator=(const HostLock&) = delete;

 private:
  int fd_;
  std::string name_;  // the complete copy's name (what to unlink)
};

// A read-only mapping of a host copy (the bytes a block decodes from).
struct HostMapping {
  void* p = nullptr;
  std::size_t n = 0;
  HostMapping() = default;
  HostMapping(const HostMapping&) = delete;
  HostMapping& operator=(const HostMapping&) = delete;
  ~HostMapping();
};

struct HostCopy {
  std::shared_ptr<HostMapping> bytes;
  std::shared_ptr<HostLock> hold;
  bool fetched = false;  // this process fetched it (else it mapped another's)
};

// The host copy of object `name` for coordinator `key`: mapped if complete, else fetched
// into a claim of this process (or waited for while another process fetches it). Errors:
// Errc::not_found / timeout / ... from the fetch itself (the object cannot be had), or
// Errc::unsupported when sharing is not possible here (the caller then fetches privately).
Result<HostCopy> host_copy(const ObjectFetcher& fetch, const std::string& key,
                           const std::string& name, std::uint64_t size);

// True if host sharing is on for this process ($FERRY_HOST_OBJECTS is not "0").
bool host_copies_enabled();

// The names host copies and claims start with.
inline constexpr const char* kHostCopyPrefix = "ferry.hostcopy-";
inline constexpr const char* kHostClaimPrefix = "ferry.hostclaim-";

}  // namespace ferry::detail
