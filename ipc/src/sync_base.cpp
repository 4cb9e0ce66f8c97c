#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <csignal>
#include <cstring>
#include <new>
#include <thread>

#include "ferry/ipc/sync_base.hpp"
#include "ferry/ipc/sync_value.hpp"
#include "ferry/shared/session.hpp"
#include "sync_internal.hpp"

namespace ferry::ipc {
namespace detail {

namespace {

constexpr std::uint32_t kMagic = 0x4e595346;  // "FSYN"
constexpr std::uint16_t kVersion = 1;
constexpr std::size_t kHeaderSize = 64;

struct SegHeader {
  std::uint32_t magic;
  std::uint16_t kind;
  std::uint16_t version;
  std::uint64_t payload;
  std::atomic<std::uint32_t> ready;
};
static_assert(sizeof(SegHeader) <= kHeaderSize);

const char* kind_name(std::uint16_t k) {
  switch (static_cast<SyncKind>(k)) {
    case SyncKind::lock:
      return "Lock";
    case SyncKind::rlock:
      return "RLock";
    case SyncKind::semaphore:
      return "Semaphore";
    case SyncKind::bounded_semaphore:
      return "BoundedSemaphore";
    case SyncKind::event:
      return "Event";
    case SyncKind::condition:
      return "Condition";
    case SyncKind::barrier:
      return "Barrier";
    case SyncKind::value:
      return "Value";
    case SyncKind::array:
      return "Array";
  }
  return "unknown primitive";
}

timespec to_timespec(Clock::duration d) {
  const auto s = std::chrono::duration_cast<std::chrono::seconds>(d);
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d - s);
  return timespec{static_cast<time_t>(s.count()), static_cast<long>(ns.count())};
}

// Bounded wait for another process's initialisation step (create() between shm_open and
// publish() is a few syscalls): short sleeps, at most ~1 s.
template <class Pred>
bool wait_briefly(Pred ready) {
  for (int i = 0; i < 1000; ++i) {
    if (ready()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return ready();
}

}  // namespace

Status check_name(std::string_view name) {
  if (name.empty() || name.size() > 200 || name.find('/') != std::string_view::npos ||
      name.find('\0') != std::string_view::npos) {
    return Error(Errc::invalid_argument,
                 "sync primitive names are 1-200 characters without '/': " + std::string(name));
  }
  return {};
}

Segment::~Segment() {
  if (base_ != nullptr) ::munmap(base_, size_);
  if (creator_) ::shm_unlink(("/" + name_).c_str());
}

Result<Segment> Segment::create(std::string_view name, SyncKind kind, std::size_t payload) {
  if (auto c = check_name(name); !c) return std::move(c).error();
  Segment s;
  s.name_ = ::ferry::shm_name(name);
  const std::string path = "/" + s.name_;
  const int fd = ::shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int e = errno;
    if (e == EEXIST) return Error(Errc::already_exists, "/dev/shm" + path + " exists", e);
    return system_error("shm_open " + path, e);
  }
  s.creator_ = true;  // from here on, s's destructor removes the name on failure
  s.size_ = kHeaderSize + payload;
  if (::ftruncate(fd, static_cast<off_t>(s.size_)) != 0) {
    const int e = errno;
    ::close(fd);
    return system_error("ftruncate " + path, e);
  }
  void* p = ::mmap(nullptr, s.size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int e = errno;
  ::close(fd);
  if (p == MAP_FAILED) return system_error("mmap " + path, e);
  s.base_ = p;
  auto* h = new (p) SegHeader{};
  h->magic = kMagic;
  h->kind = static_cast<std::uint16_t>(kind);
  h->version = kVersion;
  h->payload = payload;
  return s;
}

void Segment::publish() noexcept {
  static_cast<SegHeader*>(base_)->ready.store(1, std::memory_order_release);
}

void* Segment::payload() const noexcept {
  return static_cast<char*>(base_) + kHeaderSize;
}

std::size_t Segment::payload_size() const noexcept {
  return size_ - kHeaderSize;
}

Result<Segment> Segment::open(const std::string& shm_object, SyncKind kind, std::size_t payload) {
  if (shm_object.rfind("ferry.", 0) != 0 || shm_object.find('/') != std::string::npos) {
    return Error(Errc::invalid_argument, "not a ferry shm object name: " + shm_object);
  }
  Segment s;
  s.name_ = shm_object;
  const std::string path = "/" + shm_object;
  const int fd = ::shm_open(path.c_str(), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) {
    const int e = errno;
    if (e == ENOENT) return Error(Errc::not_found, "/dev/shm" + path + " does not exist", e);
    return system_error("shm_open " + path, e);
  }
  struct stat st {};
  const bool sized = wait_briefly([&] {
    return ::fstat(fd, &st) == 0 && static_cast<std::size_t>(st.st_size) >= kHeaderSize + payload;
  });
  if (!sized) {
    ::close(fd);
    return Error(Errc::invalid_argument, "/dev/shm" + path + " is too small for a " +
                                             kind_name(static_cast<std::uint16_t>(kind)));
  }
  s.size_ = static_cast<std::size_t>(st.st_size);
  void* p = ::mmap(nullptr, s.size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int e = errno;
  ::close(fd);
  if (p == MAP_FAILED) return system_error("mmap " + path, e);
  s.base_ = p;
  auto* h = static_cast<SegHeader*>(p);
  if (!wait_briefly([&] { return h->ready.load(std::memory_order_acquire) == 1; })) {
    return Error(Errc::not_found, "/dev/shm" + path + " was never initialised");
  }
  if (h->magic != kMagic || h->version != kVersion) {
    return Error(Errc::invalid_argument, "/dev/shm" + path + " is not a ferry sync primitive");
  }
  if (h->kind != static_cast<std::uint16_t>(kind)) {
    return Error(Errc::invalid_argument, "/dev/shm" + path + " is a " + kind_name(h->kind) +
                                             ", not a " +
                                             kind_name(static_cast<std::uint16_t>(kind)));
  }
  if (h->payload < payload || h->payload > s.size_ - kHeaderSize) {
    return Error(Errc::invalid_argument, "/dev/shm" + path + " has an unexpected size");
  }
  return s;
}

Status init_mutex(RobustMutex& m) {
  pthread_mutexattr_t a;
  int rc = ::pthread_mutexattr_init(&a);
  if (rc != 0) return system_error("pthread_mutexattr_init", rc);
  // ERRORCHECK: relocking by the owner is an error value instead of a self-deadlock.
  rc = ::pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
  if (rc == 0) rc = ::pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  if (rc == 0) rc = ::pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  if (rc == 0) rc = ::pthread_mutex_init(&m.m, &a);
  ::pthread_mutexattr_destroy(&a);
  if (rc != 0) return system_error("pthread_mutex_init (robust, process-shared)", rc);
  return {};
}

namespace {
constexpr int kTidMask = 0x3fffffff;         // FUTEX_TID_MASK
constexpr int kNotRecoverable = 0x7ffffffe;  // glibc's PTHREAD_MUTEX_NOTRECOVERABLE owner mark

// glibc 2.36's pthread_mutex_trylock, on a robust mutex marked not-recoverable, takes the
// futex word and returns ENOTRECOVERABLE without giving the word back (it compares the
// word's old value, 0, with the caller's tid). Everyone else would then block on it while
// the caller lives. Give the word back as glibc's lock() does on the same path.
void release_word_after_notrecoverable(RobustMutex& m) noexcept {
  int* word = &m.m.__data.__lock;
  const int w = __atomic_load_n(word, __ATOMIC_RELAXED);
  if ((w & kTidMask) != static_cast<int>(::gettid())) return;
  const int old = __atomic_exchange_n(word, 0, __ATOMIC_RELEASE);
  if ((static_cast<unsigned>(old) & FUTEX_WAITERS) != 0) {
    ::syscall(SYS_futex, word, FUTEX_WAKE, 1, nullptr, nullptr, 0);
  }
}
}  // namespace

Status lock_mutex(RobustMutex& m, Deadline d) noexcept {
  int rc;
  if (d.is_now()) {
    // Once not-recoverable, always so: answer without touching the word (see above).
    if (__atomic_load_n(&m.m.__data.__owner, __ATOMIC_RELAXED) == kNotRecoverable) {
      rc = ENOTRECOVERABLE;
    } else {
      rc = ::pthread_mutex_trylock(&m.m);
      if (rc == ENOTRECOVERABLE) release_word_after_notrecoverable(m);
    }
  } else if (d.is_never()) {
    rc = ::pthread_mutex_lock(&m.m);
  } else {
    // pthread_mutex_timedlock takes CLOCK_REALTIME; the Deadline is steady. Convert the time
    // left, and go round again if the wall clock was stepped back and the lock timed out early.
    for (;;) {
      const auto left = d.remaining();
      if (left <= Clock::duration::zero()) {
        Status last = lock_mutex(m, Deadline::now());
        if (last.code() == Errc::would_block) return Errc::timeout;
        return last;
      }
      timespec now{};
      ::clock_gettime(CLOCK_REALTIME, &now);
      const timespec l = to_timespec(left);
      timespec abs{now.tv_sec + l.tv_sec, now.tv_nsec + l.tv_nsec};
      if (abs.tv_nsec >= 1000000000L) {
        abs.tv_nsec -= 1000000000L;
        abs.tv_sec += 1;
      }
      rc = ::pthread_mutex_timedlock(&m.m, &abs);
      if (rc == ETIMEDOUT && !d.expired()) continue;
      break;
    }
  }
  switch (rc) {
    case 0:
      return {};
    case EOWNERDEAD:
      return Error(Errc::owner_died, "the previous owner died holding the lock; it is now held");
    case EBUSY:
      return Errc::would_block;
    case ETIMEDOUT:
      return Errc::timeout;
    case ENOTRECOVERABLE:
      return Error(Errc::broken,
                   "lock is unrecoverable: an owner took it over from a dead one and released "
                   "it without make_consistent()");
    case EDEADLK:
      return Error(Errc::invalid_argument, "the lock is already held by the calling thread");
    default:
      return system_error("pthread_mutex_lock", rc);
  }
}

Status unlock_mutex(RobustMutex& m) noexcept {
  const int rc = ::pthread_mutex_unlock(&m.m);
  if (rc == 0) return {};
  if (rc == EPERM) return Error(Errc::invalid_argument, "the lock is not held by this thread");
  return system_error("pthread_mutex_unlock", rc);
}

Status make_mutex_consistent(RobustMutex& m) noexcept {
  const int rc = ::pthread_mutex_consistent(&m.m);
  if (rc == 0) return {};
  if (rc == EINVAL) {
    return Error(Errc::invalid_argument, "the lock is not held after an owner died");
  }
  return system_error("pthread_mutex_consistent", rc);
}

bool mutex_owned_by_me(const RobustMutex& m) noexcept {
  // glibc keeps the owner's tid in the futex word of a robust mutex (the kernel clears it
  // when the owner dies), so this cannot mistake a dead owner's recycled tid for ours.
  const int word = __atomic_load_n(&m.m.__data.__lock, __ATOMIC_RELAXED);
  return (word & kTidMask) == static_cast<int>(::gettid());
}

void futex_wait(const std::atomic<std::uint32_t>& w, std::uint32_t expected, Deadline d,
                Clock::duration slice) noexcept {
  if (d.is_now()) return;
  Clock::duration left = d.remaining();
  if (!d.is_never() && left <= Clock::duration::zero()) return;
  if (slice > Clock::duration::zero() && slice < left) left = slice;
  timespec ts{};
  const timespec* tp = nullptr;
  if (left != Clock::duration::max()) {
    ts = to_timespec(left);
    tp = &ts;
  }
  // Not FUTEX_PRIVATE: the word is shared between processes. EAGAIN (value already changed),
  // EINTR and ETIMEDOUT all just mean "re-check".
  ::syscall(SYS_futex, reinterpret_cast<const std::uint32_t*>(&w), FUTEX_WAIT, expected, tp,
            nullptr, 0);
}

void futex_wake(std::atomic<std::uint32_t>& w, int n) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&w), FUTEX_WAKE, n, nullptr, nullptr, 0);
}

namespace {
// pid, state and start time of /proc/<pid>/stat; false if it cannot be read.
bool read_stat(std::int32_t pid, char& state, std::uint64_t& ticks) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[1024];
  const auto n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  // The command name (field 2) may hold spaces and ')'; fields resume after the last ')'.
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr || p[1] == '\0') return false;
  p += 2;
  state = *p;
  // Skip from field 3 (state) to field 22 (starttime).
  for (int field = 3; field < 22; ++field) {
    p = std::strchr(p, ' ');
    if (p == nullptr) return false;
    ++p;
  }
  char* end = nullptr;
  ticks = std::strtoull(p, &end, 10);
  return end != p;
}
}  // namespace

ProcId self_proc() noexcept {
  static std::atomic<std::int32_t> cached_pid{0};
  static std::atomic<std::uint64_t> cached_ticks{0};
  const auto pid = static_cast<std::int32_t>(::getpid());
  if (cached_pid.load(std::memory_order_acquire) != pid) {
    char state = 0;
    std::uint64_t ticks = 0;
    if (!read_stat(pid, state, ticks)) ticks = 0;
    cached_ticks.store(ticks, std::memory_order_relaxed);
    cached_pid.store(pid, std::memory_order_release);
  }
  ProcId me;
  me.pid = pid;
  me.ticks = cached_ticks.load(std::memory_order_relaxed);
  return me;
}

bool proc_alive(const ProcId& p) noexcept {
  if (p.pid <= 0) return false;
  if (::kill(p.pid, 0) != 0 && errno == ESRCH) return false;
  char state = 0;
  std::uint64_t ticks = 0;
  if (!read_stat(p.pid, state, ticks)) return false;
  if (state == 'Z' || state == 'X') return false;  // exited, not yet reaped
  return ticks == p.ticks;
}

// ---- Value / Array storage

namespace {
struct DataHeader {
  RobustMutex m;
  std::uint64_t elem_size;
  std::uint64_t count;
  std::uint64_t data_offset;  // from the payload start
};
std::size_t round_up(std::size_t n, std::size_t a) {
  return (n + a - 1) / a * a;
}
}  // namespace

Result<DataSegment> DataSegment::create(std::string_view name, SyncKind kind, std::size_t elem_size,
                                        std::size_t elem_align, std::size_t count, const void* init,
                                        bool repeat) {
  if (elem_size == 0 || count > (std::size_t{1} << 40) / elem_size) {
    return Error(Errc::invalid_argument, "shared array too large");
  }
  const std::size_t off = round_up(sizeof(DataHeader), elem_align < 64 ? 64 : elem_align);
  auto seg = Segment::create(name, kind, off + elem_size * count);
  if (!seg) return std::move(seg).error();
  auto* h = new (seg->payload()) DataHeader{};
  if (auto st = init_mutex(h->m); !st) return std::move(st).error();
  h->elem_size = elem_size;
  h->count = count;
  h->data_offset = off;
  auto* data = static_cast<std::byte*>(seg->payload()) + off;
  if (init != nullptr) {
    if (repeat) {
      for (std::size_t i = 0; i < count; ++i)
        std::memcpy(data + i * elem_size, init, elem_size);
    } else if (count != 0) {
      std::memcpy(data, init, elem_size * count);
    }
  }
  seg->publish();
  DataSegment d;
  d.m_ = &h->m;
  d.data_ = data;
  d.count_ = count;
  d.seg_ = std::move(*seg);
  return d;
}

Result<DataSegment> DataSegment::open(const std::string& shm_object, SyncKind kind,
                                      std::size_t elem_size, std::size_t count) {
  auto seg = Segment::open(shm_object, kind, sizeof(DataHeader));
  if (!seg) return std::move(seg).error();
  auto* h = static_cast<DataHeader*>(seg->payload());
  if (h->elem_size != elem_size || (count != 0 && h->count != count)) {
    return Error(Errc::invalid_argument, shm_object + " holds elements of " +
                                             std::to_string(h->elem_size) + " bytes, not " +
                                             std::to_string(elem_size));
  }
  if (h->data_offset + h->elem_size * h->count > seg->payload_size()) {
    return Error(Errc::invalid_argument, shm_object + " has an unexpected size");
  }
  DataSegment d;
  d.m_ = &h->m;
  d.data_ = static_cast<std::byte*>(seg->payload()) + h->data_offset;
  d.count_ = h->count;
  d.seg_ = std::move(*seg);
  return d;
}

Result<LockGuard> DataSegment::lock_recovering(Deadline d) const {
  auto g = LockGuard::acquire(*m_, d);
  if (g && g->owner_died()) {
    if (auto st = g->make_consistent(); !st) return std::move(st).error();
  }
  return g;
}

}  // namespace detail

// ---- LockGuard

Result<LockGuard> LockGuard::acquire(detail::RobustMutex& m, Deadline d) {
  Status st = detail::lock_mutex(m, d);
  if (st) return LockGuard(&m, false);
  if (st.code() == Errc::owner_died) return LockGuard(&m, true);
  return std::move(st).error();
}

Status LockGuard::make_consistent() noexcept {
  if (m_ == nullptr) return Error(Errc::invalid_argument, "the guard holds no lock");
  if (!died_) return {};
  Status st = detail::make_mutex_consistent(*m_);
  if (st) died_ = false;
  return st;
}

void LockGuard::unlock() noexcept {
  if (m_ != nullptr) (void)detail::unlock_mutex(*std::exchange(m_, nullptr));
  died_ = false;
}

}  // namespace ferry::ipc
