// ferry::ObjectRef<T>: a handle to a value put once into a pool's object store.
//
//   auto ref = pool.put(big_vector);                // encoded once into /dev/shm
//   auto f = pool.submit(sum_slice, ref, 0, 1000);  // sum_slice takes an ObjectRef<...>
//   const auto& v = ref.get();                      // in the coordinator too (decoded lazily)
//
// A ref travels in a task's arguments as the name and size of its shared-memory segment, not
// the value. A worker on the pool's host maps the segment and decodes the value at most once
// per process: every later task of that process that names the same object reuses the decoded
// value (a per-process cache keyed by the segment name). The cache drops an object once its
// segment is gone (the pool removes it when the object is freed; checked before each task and
// at each lookup) and keeps the total size of what it holds under a bound
// (FERRY_OBJECT_CACHE_BYTES, default a quarter of the machine's memory; objects in use are
// never dropped).
//
// Lifetime: the segment lives while an ObjectRef in the coordinator, or a task whose arguments
// hold one, does (the pool keeps a task's refs until its outcome is final), and no longer than
// the pool: shutting the pool down removes the segments of every object it made (refs the
// caller still holds keep working in the coordinator, which has them mapped).
//
// Remote workers (ferry-worker --connect: another host or session) fetch an object's bytes
// from the coordinator over their connection, in chunks within the frame limit, the first time
// a task of theirs names it, and then decode and cache it like a local worker. The remote
// worker processes of one host serving one coordinator fetch an object once between them: the
// first fetches it into a /dev/shm file (ferry.hostcopy-*), the others map that file; it goes
// when the last process caching the object drops it (cache bound, disconnect, exit) or, after
// they all died, with the sweep ($FERRY_HOST_OBJECTS=0 turns the sharing off). An object the
// pool freed, or a coordinator that went away, makes get() throw ObjectUnavailable naming why
// (each chunk has a deadline: no hang).
//
// Threading: an ObjectRef is a value (copy freely; copies share one object); get() may be
// called from several threads at once. The decoded value is immutable and shared. A task
// library (ferry_add_task_library) has a cache and decode count of its own.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

#include "ferry/shared/codec.hpp"
#include "ferry/shared/frame.hpp"

namespace ferry {

// The value of an ObjectRef cannot be had: its segment is gone (freed), it is of another
// session and there is no coordinator to fetch it from, the fetch failed (the coordinator no
// longer holds it, or went away), it has another size than the ref says, or it does not
// decode as T.
class ObjectUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// How many objects this process has decoded (ObjectRef::get decodes each at most once).
std::uint64_t object_decodes() noexcept;
// How many decoded objects this process's cache holds now.
std::size_t cached_objects() noexcept;
// How many objects this process fetched from a coordinator (remote workers), and how many
// fetch requests (chunks) that took.
std::uint64_t object_fetches() noexcept;
std::uint64_t object_fetch_chunks() noexcept;
// How many objects this process read from a host copy another process of its host fetched.
std::uint64_t object_host_reads() noexcept;

namespace detail {

// One object as a process sees it: its name and encoded size, what keeps its bytes readable
// (the coordinator: the segment it owns; a worker: its read-only mapping), and the value once
// decoded. A block that could not be opened carries the reason instead.
class ObjectBlock {
 public:
  using View = ByteView (*)(const void* holder);
  ObjectBlock(std::string name, std::uint64_t size, std::shared_ptr<const void> holder, View view,
              bool drop_after_decode)
      : name_(std::move(name)),
        size_(size),
        holder_(std::move(holder)),
        view_(view),
        drop_after_decode_(drop_after_decode) {}
  ObjectBlock(std::string name, std::uint64_t size, std::string error)
      : name_(std::move(name)), size_(size), error_(std::move(error)) {}

  const std::string& name() const noexcept { return name_; }
  std::uint64_t size() const noexcept { return size_; }
  bool ok() const noexcept { return error_.empty(); }
  // The encoded bytes while this block keeps them (a block the coordinator put always does);
  // empty once dropped after decoding. Valid while the block lives.
  ByteView encoded() {
    std::lock_guard lk(m_);
    return holder_ ? view_(holder_.get()) : ByteView{};
  }

  template <class T>
  const T& value() {
    std::lock_guard lk(m_);
    if (!error_.empty()) throw ObjectUnavailable(error_);
    if (!value_) {
      const ByteView bytes = holder_ ? view_(holder_.get()) : ByteView{};
      if (bytes.size() != size_) {
        throw ObjectUnavailable("object '" + name_ + "': " + std::to_string(bytes.size()) +
                                " bytes readable, " + std::to_string(size_) + " expected");
      }
      auto v = decode_value<T>(bytes);
      if (!v) {
        throw ObjectUnavailable("object '" + name_ +
                                "' does not decode as the type asked for: " + v.error().message());
      }
      value_ = std::make_shared<const T>(std::move(*v));
      type_ = &typeid(T);
      count_decode();
      // A reader needs only the value now; the mapping's pages can go.
      if (drop_after_decode_) holder_.reset();
    } else if (*type_ != typeid(T)) {
      throw ObjectUnavailable("object '" + name_ + "' was decoded as another type");
    }
    return *static_cast<const T*>(value_.get());
  }

 private:
  static void count_decode() noexcept;

  std::string name_;
  std::uint64_t size_ = 0;
  std::string error_;
  std::mutex m_;
  std::shared_ptr<const void> holder_;  // guarded by m_
  View view_ = nullptr;
  bool drop_after_decode_ = false;
  std::shared_ptr<const void> value_;  // guarded by m_
  const std::type_info* type_ = nullptr;
};

// Registers a block this process made (Pool::put), so a ref to it decoded in this process
// shares it (and keeps it alive) rather than opening the segment again.
void register_object(const std::shared_ptr<ObjectBlock>& b);
// The block for the object a decoded ref names: this process's own if alive, else the cached
// mapping (opened now on first use; one per process). Never throws: a block that cannot be
// opened carries the reason, and get() throws it.
std::shared_ptr<ObjectBlock> object_block(const std::string& name, std::uint64_t size);
// Drops cached objects whose segment is gone (freed by their pool). Workers call it after
// each task.
void sweep_object_cache();
// A block this process put (Pool::put) and still holds, or nullptr: what a coordinator may
// serve to its remote workers.
std::shared_ptr<ObjectBlock> own_object(const std::string& name);
// Whether the object's name is still in /dev/shm (its pool has not shut down, no sweep took
// it): only then can a worker open it by name.
bool object_named(const std::string& name);

// Fetches an object's whole encoded bytes (`size` of them, handed to `sink` a chunk at a time,
// in order, each only once its source confirmed the size) from where it lives (a remote
// worker's connection to its coordinator), or says why it cannot. Set by the worker
// runtime while it serves a coordinator; called by object_block for a name outside this
// process's session, on the thread that decodes a task's arguments. Must not call back into
// the object store. `host_key` names the coordinator as seen from this host (its endpoint and
// session): processes of the host with the same key share one fetched copy of an object
// (empty: no sharing). Clearing the fetcher (nullptr) lets go of this process's host copies.
using ObjectSink = std::function<void(std::uint64_t offset, ByteView bytes)>;
using ObjectFetcher =
    std::function<Status(const std::string& name, std::uint64_t size, const ObjectSink& sink)>;
void set_object_fetcher(ObjectFetcher f, std::string host_key = {});
// A fetcher counts each chunk it asked for (object_fetch_chunks).
void count_fetch_chunk() noexcept;

// While set (by a pool, around encoding a task's arguments), ObjectRef::save adds its object
// here, so the task keeps the object alive until its outcome is final.
inline thread_local std::vector<std::shared_ptr<const void>>* ref_sink = nullptr;
class RefCollector {
 public:
  RefCollector() : prev_(std::exchange(ref_sink, &refs_)) {}
  ~RefCollector() { ref_sink = prev_; }
  RefCollector(const RefCollector&) = delete;
  RefCollector& operator=(const RefCollector&) = delete;
  std::vector<std::shared_ptr<const void>> take() { return std::move(refs_); }

 private:
  std::vector<std::shared_ptr<const void>> refs_;
  std::vector<std::shared_ptr<const void>>* prev_;
};

}  // namespace detail

template <class T>
class ObjectRef {
 public:
  using value_type = T;
  ObjectRef() = default;
  explicit ObjectRef(std::shared_ptr<detail::ObjectBlock> b) : b_(std::move(b)) {}

  bool valid() const noexcept { return b_ != nullptr; }
  // The value (decoded on first use in this process, then shared). Throws ObjectUnavailable.
  const T& get() const {
    if (!b_) throw ObjectUnavailable("get() on an empty ObjectRef");
    return b_->template value<T>();
  }
  // The segment's name and the value's encoded size in bytes.
  const std::string& name() const noexcept {
    static const std::string none;
    return b_ ? b_->name() : none;
  }
  std::uint64_t size() const noexcept { return b_ ? b_->size() : 0; }

  template <class A>
  void save(A& ar) const {
    if (b_ && detail::ref_sink) detail::ref_sink->push_back(b_);
    ar(b_ ? b_->name() : std::string(), b_ ? b_->size() : std::uint64_t{0});
  }
  template <class A>
  void load(A& ar) {
    std::string name;
    std::uint64_t size = 0;
    ar(name, size);
    b_ = name.empty() ? nullptr : detail::object_block(name, size);
  }

 private:
  std::shared_ptr<detail::ObjectBlock> b_;
};

}  // namespace ferry
