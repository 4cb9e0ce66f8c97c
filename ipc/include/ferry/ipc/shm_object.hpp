// Write-once shared-memory objects: bytes written once into a named segment in /dev/shm by
// one process, mapped read-only by others that were given its name. A pool passes task
// arguments and results above a threshold this way between processes on one host, so that
// honest large data is not bound by the frame limit (which protects decoding, not memory).
//
// Names are full object names, "ferry.<session>.<rest>" (session.hpp), so the session sweep
// and `ferry-coordinator cleanup` remove what a dead process left.
//
// Ownership: the object that create() returns owns the name and unlinks it when destroyed
// (unless release_name() handed the name on to another process, which then unlinks it);
// one that open() returns never unlinks unless asked to (adopt: unlink()). A SharedObject is
// move-only; share it between threads with a std::shared_ptr (its bytes are immutable once
// made, so concurrent readers need no lock). Errors are values.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "ferry/shared/error.hpp"
#include "ferry/shared/frame.hpp"

namespace ferry::ipc {

class SharedObject {
 public:
  SharedObject() = default;
  SharedObject(SharedObject&& o) noexcept;
  SharedObject& operator=(SharedObject&& o) noexcept;
  SharedObject(const SharedObject&) = delete;
  SharedObject& operator=(const SharedObject&) = delete;
  ~SharedObject();

  // Creates /dev/shm/NAME exclusively (mode 0600, AlreadyExists if taken) holding `bytes`,
  // written with write(2): one pass, and a full /dev/shm is NoSpace naming the size and what
  // is free, never a SIGBUS later. On any failure the name is removed again. The result owns
  // the name. The mapping is made lazily by bytes().
  static Result<SharedObject> create(const std::string& name, ByteView bytes);
  // Maps all of an existing object read-only (NotFound if there is none). `size` is what the
  // sender said it holds: another size is BadHandle (a forged or stale handle). The pages are
  // mapped up front (MAP_POPULATE), since a reader touches all of them. Never unlinks.
  static Result<SharedObject> open(const std::string& name, std::size_t size);

  // The object's bytes (mapped on first use by the creator). Empty if mapping failed.
  ByteView bytes() const noexcept;
  std::size_t size() const noexcept { return size_; }
  const std::string& name() const noexcept { return name_; }
  // Removes the name (mappings stay valid). True if this call removed it.
  bool unlink() noexcept;
  // The name now belongs to someone else (the reader adopts it): never unlink it here.
  void release_name() noexcept { owner_ = false; }
  // Moves the object to `name` (rename(2) inside /dev/shm: no copy, mappings stay valid) and
  // makes this the owner of the new name (unlinked when destroyed). NotFound if the old name
  // is gone (a sweep removed it), AlreadyExists if the new one is taken.
  Status rename_to(const std::string& name);

 private:
  void unmap() noexcept;
  // Maps s's bytes of fd read-only into s (nothing for an empty object); closes fd.
  static Result<SharedObject> map_into(SharedObject s, int fd, int flags);

  std::string name_;
  std::size_t size_ = 0;
  mutable void* map_ = nullptr;  // read-only mapping of size_ bytes (null: none yet)
  bool owner_ = false;           // unlink when destroyed
  bool unlinked_ = false;
};

// "ferry.<session>.<rest>" for the current session with a process-wide counter in <rest>:
// unique among the objects this process makes. `tag` says what it is ("arg", "res-...").
std::string new_object_name(std::string_view tag);

// Removes /dev/shm objects whose name starts with `prefix` (a full name prefix, such as a
// worker's result prefix once that worker is gone). Returns how many it removed.
std::size_t remove_objects_with_prefix(std::string_view prefix);

}  // namespace ferry::ipc
