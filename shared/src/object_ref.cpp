// The per-process side of the object store: refs this process made (Pool::put) and a cache of
// objects opened from their names. Segments are mapped here with shm_open + mmap directly
// (not through ferry::ipc): a task library links only this layer.
#include "ferry/shared/object_ref.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <unordered_map>

#include "ferry/shared/session.hpp"
#include "host_object.hpp"

namespace ferry {
namespace {

std::atomic<std::uint64_t> g_decodes{0};
std::atomic<std::uint64_t> g_fetches{0};
std::atomic<std::uint64_t> g_fetch_chunks{0};
std::atomic<std::uint64_t> g_host_reads{0};

// A read-only mapping of a whole segment.
struct Mapping {
  void* p = nullptr;
  std::size_t n = 0;
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (p != nullptr) ::munmap(p, n);
  }
};

ByteView mapping_view(const void* holder) {
  const auto* m = static_cast<const Mapping*>(holder);
  if (m->p == nullptr) return {};
  return ByteView(static_cast<const std::uint8_t*>(m->p), m->n);
}

std::uint64_t cache_bound() {
  if (const char* e = std::getenv("FERRY_OBJECT_CACHE_BYTES")) {
    char* end = nullptr;
    const auto v = std::strtoull(e, &end, 10);
    if (end != e && *end == '\0') return v;
  }
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page = ::sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) {
    return static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page) / 4;
  }
  return std::uint64_t{1} << 30;
}

ByteView bytes_view(const void* holder) {
  const auto* b = static_cast<const Bytes*>(holder);
  return ByteView(b->data(), b->size());
}

struct Cached {
  std::shared_ptr<detail::ObjectBlock> block;
  std::uint64_t last_use = 0;
  // Fetched from a coordinator: no local segment says when it is freed, so only the size
  // bound drops it (names are never reused within a session).
  bool fetched = false;
  // A fetched object's host copy, held while this process caches it (host_object.hpp).
  std::shared_ptr<detail::HostLock> host;
};

struct Store {
  std::mutex m;
  std::unordered_map<std::string, std::weak_ptr<detail::ObjectBlock>> own;
  std::unordered_map<std::string, Cached> cached;
  std::uint64_t cached_bytes = 0;
  std::uint64_t clock = 0;
  std::uint64_t bound = cache_bound();
  detail::ObjectFetcher fetcher;
  std::string host_key;
};

Store& store() {
  // Never destroyed: blocks may be released during static destruction.
  static Store* s = new Store;
  return *s;
}

bool segment_exists(const std::string& name) {
  struct stat st {};
  return ::stat(("/dev/shm/" + name).c_str(), &st) == 0;
}

// s.m held.
void drop_gone_locked(Store& s) {
  for (auto it = s.cached.begin(); it != s.cached.end();) {
    if (!it->second.fetched && !segment_exists(it->first)) {
      s.cached_bytes -= it->second.block->size();
      it = s.cached.erase(it);
    } else {
      ++it;
    }
  }
}

// s.m held: drops the least recently used objects (not `keep`) while over the bound. Tasks
// using a dropped object keep it through their refs.
void bound_locked(Store& s, const std::string& keep) {
  while (s.cached_bytes > s.bound) {
    auto oldest = s.cached.end();
    for (auto it = s.cached.begin(); it != s.cached.end(); ++it) {
      if (it->first == keep) continue;
      if (oldest == s.cached.end() || it->second.last_use < oldest->second.last_use) oldest = it;
    }
    if (oldest == s.cached.end()) return;
    s.cached_bytes -= oldest->second.block->size();
    s.cached.erase(oldest);
  }
}

std::shared_ptr<detail::ObjectBlock> failed(const std::string& name, std::uint64_t size,
                                            std::string why) {
  return std::make_shared<detail::ObjectBlock>(name, size, "object '" + name + "' " + why);
}

ByteView host_view(const void* holder) {
  const auto* m = static_cast<const detail::HostMapping*>(holder);
  if (m->p == nullptr) return {};
  return ByteView(static_cast<const std::uint8_t*>(m->p), m->n);
}

// s.m held (so two tasks of one process fetch an object once). With a host key, through the
// host's shared copy (`host` then holds it); privately if sharing is not possible here.
std::shared_ptr<detail::ObjectBlock> fetch_block(const Store& s, const std::string& name,
                                                 std::uint64_t size,
                                                 std::shared_ptr<detail::HostLock>& host) {
  if (!s.host_key.empty() && detail::host_copies_enabled()) {
    auto copy = detail::host_copy(s.fetcher, s.host_key, name, size);
    if (copy) {
      (copy->fetched ? g_fetches : g_host_reads).fetch_add(1, std::memory_order_relaxed);
      host = std::move(copy->hold);
      return std::make_shared<detail::ObjectBlock>(name, size, std::move(copy->bytes), &host_view,
                                                   /*drop_after_decode=*/true);
    }
    if (copy.error().code != Errc::unsupported) {
      return failed(name, size, "could not be fetched: " + copy.error().message());
    }
    // Not shareable here (see the reason): fetch it for this process alone.
  }
  // Allocated once the coordinator confirmed the size: a ref's size is only a claim.
  auto bytes = std::make_shared<Bytes>();
  auto append = [&](std::uint64_t offset, ByteView part) {
    if (offset == 0) bytes->reserve(size);
    bytes->insert(bytes->end(), part.begin(), part.end());
  };
  if (auto st = s.fetcher(name, size, append); !st) {
    return failed(name, size, "could not be fetched: " + st.error().message());
  }
  g_fetches.fetch_add(1, std::memory_order_relaxed);
  return std::make_shared<detail::ObjectBlock>(name, size, std::shared_ptr<const Bytes>(bytes),
                                               &bytes_view, /*drop_after_decode=*/true);
}

std::shared_ptr<detail::ObjectBlock> open_block(const std::string& name, std::uint64_t size) {
  const std::string ours = shm_name("");
  if (name.size() > 200 || name.find('/') != std::string::npos ||
      name.compare(0, ours.size(), ours) != 0) {
    return failed(name, size,
                  "is not in this process's session (" + ours +
                      "*) and this process has no coordinator to fetch it from");
  }
  const int fd = ::shm_open(("/" + name).c_str(), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return failed(name, size, "no longer exists (freed by its pool)");
    return failed(name, size, std::string("cannot be opened: ") + std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<std::uint64_t>(st.st_size) != size) {
    ::close(fd);
    return failed(
        name, size,
        "holds " + std::to_string(st.st_size) + " bytes, the ref says " + std::to_string(size));
  }
  auto m = std::make_shared<Mapping>();
  if (size > 0) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (p == reinterpret_cast<void*>(std::intptr_t{-1})) {
      const int err = errno;
      ::close(fd);
      return failed(name, size, std::string("cannot be mapped: ") + std::strerror(err));
    }
    m->p = p;
    m->n = size;
  }
  ::close(fd);
  return std::make_shared<detail::ObjectBlock>(name, size, std::move(m), &mapping_view,
                                               /*drop_after_decode=*/true);
}

}  // namespace

std::uint64_t object_decodes() noexcept {
  return g_decodes.load(std::memory_order_relaxed);
}

std::uint64_t object_fetches() noexcept {
  return g_fetches.load(std::memory_order_relaxed);
}

std::uint64_t object_fetch_chunks() noexcept {
  return g_fetch_chunks.load(std::memory_order_relaxed);
}

std::uint64_t object_host_reads() noexcept {
  return g_host_reads.load(std::memory_order_relaxed);
}

std::size_t cached_objects() noexcept {
  Store& s = store();
  std::lock_guard lk(s.m);
  return s.cached.size();
}

namespace detail {

void ObjectBlock::count_decode() noexcept {
  g_decodes.fetch_add(1, std::memory_order_relaxed);
}

void register_object(const std::shared_ptr<ObjectBlock>& b) {
  Store& s = store();
  std::lock_guard lk(s.m);
  for (auto it = s.own.begin(); it != s.own.end();)
    it = it->second.expired() ? s.own.erase(it) : std::next(it);
  s.own[b->name()] = b;
}

std::shared_ptr<ObjectBlock> object_block(const std::string& name, std::uint64_t size) {
  Store& s = store();
  // Opening (and populating the mapping) happens under the lock: two tasks of one process
  // naming a new object then map it once.
  std::lock_guard lk(s.m);
  if (auto it = s.own.find(name); it != s.own.end()) {
    if (auto b = it->second.lock()) return b;
  }
  // Freed objects go first (a task library's cache is not the one its worker sweeps).
  drop_gone_locked(s);
  if (auto it = s.cached.find(name); it != s.cached.end()) {
    if (it->second.block->size() == size) {
      it->second.last_use = ++s.clock;
      return it->second.block;
    }
    return failed(name, size,
                  "was opened here with " + std::to_string(it->second.block->size()) +
                      " bytes, the ref says " + std::to_string(size));
  }
  // Outside this process's session: a remote worker's object lives with its coordinator.
  const std::string ours = shm_name("");
  const bool fetch = s.fetcher && name.compare(0, ours.size(), ours) != 0;
  std::shared_ptr<detail::HostLock> host;
  auto b = fetch ? fetch_block(s, name, size, host) : open_block(name, size);
  if (!b->ok()) return b;  // not cached: a later ref may find it (e.g. after a retry)
  s.cached.emplace(name, Cached{b, ++s.clock, fetch, std::move(host)});
  s.cached_bytes += size;
  bound_locked(s, name);
  return b;
}

std::shared_ptr<ObjectBlock> own_object(const std::string& name) {
  Store& s = store();
  std::lock_guard lk(s.m);
  auto it = s.own.find(name);
  return it == s.own.end() ? nullptr : it->second.lock();
}

bool object_named(const std::string& name) {
  return segment_exists(name);
}

void count_fetch_chunk() noexcept {
  g_fetch_chunks.fetch_add(1, std::memory_order_relaxed);
}

void set_object_fetcher(ObjectFetcher f, std::string host_key) {
  Store& s = store();
  std::lock_guard lk(s.m);
  if (!f) {
    // The connection is over: this process no longer holds the host's copies (the last
    // holder removes each); the decoded values stay cached.
    for (auto& [name, c] : s.cached)
      c.host.reset();
  }
  s.fetcher = std::move(f);
  s.host_key = s.fetcher ? std::move(host_key) : std::string();
}

void sweep_object_cache() {
  Store& s = store();
  std::lock_guard lk(s.m);
  if (!s.cached.empty()) drop_gone_locked(s);
}

}  // namespace detail
}  // namespace ferry
