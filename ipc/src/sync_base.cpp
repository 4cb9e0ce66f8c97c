#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <new>
#include <thread>
#include <utility>

#include "ferry/ipc/sync_base.hpp"
#include "ferry/ipc/sync_value.hpp"
#include "ferry/shared/session.hpp"
#include "os_util.hpp"
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

}  // namespace

Status check_name(std::string_view name) {
  return os::check_object_name(name);
}

Segment::Segment() noexcept = default;

Segment::Segment(Segment&& o) noexcept
    : obj_(std::move(o.obj_)), creator_(std::exchange(o.creator_, false)) {}

Segment& Segment::operator=(Segment&& o) noexcept {
  if (this != &o) {
    Segment old(std::move(*this));  // released (and, for a creator, unlinked) on return
    obj_ = std::move(o.obj_);
    creator_ = std::exchange(o.creator_, false);
  }
  return *this;
}

Segment::~Segment() {
  if (obj_ && creator_) obj_->unlink();
}

Result<Segment> Segment::create(std::string_view name, SyncKind kind, std::size_t payload) {
  if (auto c = check_name(name); !c) return std::move(c).error();
  auto obj = os::ShmObject::create(::ferry::shm_name(name), kHeaderSize + payload);
  if (!obj) return std::move(obj).error();
  Segment s;
  s.obj_ = std::make_unique<os::ShmObject>(std::move(*obj));
  s.creator_ = true;  // from here on, s's destructor removes the name on failure
  auto* h = new (s.obj_->data()) SegHeader{};
  h->magic = kMagic;
  h->kind = static_cast<std::uint16_t>(kind);
  h->version = kVersion;
  h->payload = payload;
  return s;
}

void Segment::publish() noexcept {
  reinterpret_cast<SegHeader*>(obj_->data())->ready.store(1, std::memory_order_release);
}

void* Segment::payload() const noexcept {
  return obj_->data() + kHeaderSize;
}

std::size_t Segment::payload_size() const noexcept {
  return obj_->size() - kHeaderSize;
}

const std::string& Segment::shm_object() const noexcept {
  static const std::string none;
  return obj_ ? obj_->name() : none;
}

Result<Segment> Segment::open(const std::string& shm_object, SyncKind kind, std::size_t payload) {
  if (shm_object.rfind("ferry.", 0) != 0 || shm_object.find('/') != std::string::npos) {
    return Error(Errc::invalid_argument, "not a ferry shm object name: " + shm_object);
  }
  const std::string path = "/dev/shm/" + shm_object;
  // The creator may still be between shm_open and ftruncate: open() waits for the size.
  auto obj = os::ShmObject::open(shm_object, kHeaderSize + payload);
  if (!obj) {
    if (obj.code() != Errc::invalid_argument) return std::move(obj).error();
    return Error(Errc::invalid_argument,
                 path + " is too small for a " + kind_name(static_cast<std::uint16_t>(kind)));
  }
  Segment s;
  s.obj_ = std::make_unique<os::ShmObject>(std::move(*obj));
  auto* h = reinterpret_cast<SegHeader*>(s.obj_->data());
  if (!os::wait_briefly([&] { return h->ready.load(std::memory_order_acquire) == 1; })) {
    return Error(Errc::not_found, path + " was never initialised");
  }
  if (h->magic != kMagic || h->version != kVersion) {
    return Error(Errc::invalid_argument, path + " is not a ferry sync primitive");
  }
  if (h->kind != static_cast<std::uint16_t>(kind)) {
    return Error(Errc::invalid_argument, path + " is a " + kind_name(h->kind) + ", not a " +
                                             kind_name(static_cast<std::uint16_t>(kind)));
  }
  if (h->payload < payload || h->payload > s.obj_->size() - kHeaderSize) {
    return Error(Errc::invalid_argument, path + " has an unexpected size");
  }
  return s;
}

Status init_mutex(RobustMutex& m) {
  pthread_mutexattr_t a;
  int rc = ::pthread_mutexattr_init(&a);
  if (rc != 0) return system_error("pthread_mutexattr_init", rc);
  // ERRORCHECK: glibc tells us at once when the owner relocks; lock_mutex() turns that into
  // Python's answers for the try and timed forms and an error (never a hang) for the blocking one.
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
      // The caller holds it, and only the caller could release it: the try form would block,
      // the timed form waits out its deadline as any unavailable lock does (Python's
      // acquire(timeout=...) returns False the same way), the blocking form would wait forever.
      if (d.is_now()) return Errc::would_block;
      if (!d.is_never()) {
        while (!d.expired())
          std::this_thread::sleep_for(d.remaining());
        return Errc::timeout;
      }
      return Error(Errc::invalid_argument,
                   "the lock is already held by the calling thread: a blocking acquire would "
                   "wait forever");
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

ProcId self_proc() noexcept {
  ProcId me;
  me.pid = static_cast<std::int32_t>(::getpid());
  me.ticks = os::self_start_ticks();
  return me;
}

bool proc_alive(const ProcId& p) noexcept {
  return p.pid > 0 && os::process_alive(p.pid, p.ticks);
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
