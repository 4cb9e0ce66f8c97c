// Value<T> and Array<T>: named shared-memory data with an associated robust lock
// (Python's multiprocessing.Value / Array with lock=True). T must be trivially copyable;
// open() checks the element size (and, for Value, the count) against the segment's.
//
// Access:
//   get() / set()          one copy under the lock;
//   lock()                 a guard (Locked / LockedArray) that gives T& / span<T> access and
//                          reports owner_died();
//   with_lock(f)           f(T&) or f(std::span<T>) under the lock, returns f's result;
//   raw()                  no synchronization at all (Python's get_obj()): for atomics via
//                          std::atomic_ref, or to show what the lock prevents.
// Owner death: the lock is a robust mutex (see Lock). lock() reports owner_died to the
// caller, who repairs the data and calls make_consistent(). get/set/with_lock treat a dead
// holder as recoverable and make the lock consistent themselves (a holder killed in the
// middle of its copy can leave a torn value; use lock() when that matters).
//
// Names, ownership, threading: see sync_base.hpp.
#pragma once

#include <cstddef>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "ferry/ipc/sync_base.hpp"

namespace ferry::ipc {
namespace detail {

// The untyped part of Value/Array: a segment with a robust mutex and count * elem_size bytes.
class DataSegment {
 public:
  DataSegment() = default;
  // init: count elements, or one element repeated (repeat = true), or nullptr (zeroes).
  static Result<DataSegment> create(std::string_view name, SyncKind kind, std::size_t elem_size,
                                    std::size_t elem_align, std::size_t count, const void* init,
                                    bool repeat);
  // count == 0: any count (Array); else it must match (Value).
  static Result<DataSegment> open(const std::string& shm_object, SyncKind kind,
                                  std::size_t elem_size, std::size_t count);

  RobustMutex& mutex() const noexcept { return *m_; }
  void* data() const noexcept { return data_.p; }
  std::size_t count() const noexcept { return count_; }
  const Segment& segment() const noexcept { return seg_; }
  // Lock for get/set/with_lock: recovers from a dead holder by itself.
  Result<LockGuard> lock_recovering(Deadline d) const;

 private:
  Segment seg_;
  MovePtr<RobustMutex> m_;
  MovePtr<std::byte> data_;
  std::size_t count_ = 0;
};

// What Value<T> (Handle = Value<T>) and Array<T> share: opening by name, serialization by
// name, the guard of lock(), and running code under the self-recovering lock.
template <class Handle>
class DataHandle {
 public:
  static Result<Handle> open(std::string_view name) { return open_named<Handle>(name); }

  bool valid() const noexcept { return seg_.segment().valid(); }
  const std::string& shm_object() const noexcept { return seg_.segment().shm_object(); }
  template <class Archive>
  void save(Archive& ar) const {
    ar(shm_object());
  }
  template <class Archive>
  void load(Archive& ar) {
    std::string n;
    ar(n);
    auto opened = Handle::open_object(n);
    if (!opened) throw ::ferry::Exception(std::move(opened).error());
    static_cast<Handle&>(*this) = std::move(*opened);
  }

 protected:
  DataHandle() = default;
  explicit DataHandle(DataSegment s) noexcept : seg_(std::move(s)) {}

  // f() under the lock, a dead holder recovered from; Result<R> (Status for void).
  template <class F, class R = std::invoke_result_t<F&>>
  Result<R> locked(F&& f, Deadline d) const {
    auto g = seg_.lock_recovering(d);
    if (!g) return std::move(g).error();
    if constexpr (std::is_void_v<R>) {
      std::invoke(f);
      return {};
    } else {
      return std::invoke(f);
    }
  }
  // The lock for lock(): owner_died is reported, not recovered from.
  Result<LockGuard> guard(Deadline d) const { return LockGuard::acquire(seg_.mutex(), d); }

  DataSegment seg_;
};

// The guard part of Locked<T> and LockedArray<T>.
class LockedData {
 public:
  bool owner_died() const noexcept { return g_.owner_died(); }
  Status make_consistent() noexcept { return g_.make_consistent(); }
  void unlock() noexcept { g_.unlock(); }

 protected:
  explicit LockedData(LockGuard g) noexcept : g_(std::move(g)) {}
  LockGuard g_;
};

}  // namespace detail

// A locked Value: access to the T while the guard lives.
template <class T>
class [[nodiscard]] Locked : public detail::LockedData {
 public:
  Locked(LockGuard g, T* p) noexcept : LockedData(std::move(g)), p_(p) {}
  T& operator*() const noexcept { return *p_; }
  T* operator->() const noexcept { return p_; }

 private:
  T* p_;
};

template <class T>
class Value : public detail::DataHandle<Value<T>> {
  static_assert(std::is_trivially_copyable_v<T>, "Value<T> needs a trivially copyable T");
  using Base = detail::DataHandle<Value<T>>;

 public:
  Value() = default;
  static Result<Value> create(std::string_view name, const T& initial = T{}) {
    auto s = detail::DataSegment::create(name, detail::SyncKind::value, sizeof(T), alignof(T), 1,
                                         &initial, false);
    if (!s) return std::move(s).error();
    return Value(std::move(*s));
  }
  static Result<Value> open_object(const std::string& shm_object) {
    auto s = detail::DataSegment::open(shm_object, detail::SyncKind::value, sizeof(T), 1);
    if (!s) return std::move(s).error();
    return Value(std::move(*s));
  }

  Result<T> get(Deadline d = Deadline::never()) const {
    return this->locked(
        [&] {
          T out;
          std::memcpy(&out, ptr(), sizeof(T));
          return out;
        },
        d);
  }
  Status set(const T& v, Deadline d = Deadline::never()) {
    return this->locked([&] { std::memcpy(ptr(), &v, sizeof(T)); }, d);
  }
  Result<Locked<T>> lock(Deadline d = Deadline::never()) {
    auto g = this->guard(d);
    if (!g) return std::move(g).error();
    return Locked<T>(std::move(*g), ptr());
  }
  // f(T&) under the lock; Result<R> (Status for void).
  template <class F, class R = std::invoke_result_t<F&, T&>>
  Result<R> with_lock(F&& f, Deadline d = Deadline::never()) {
    return this->locked([&]() -> R { return std::invoke(f, *ptr()); }, d);
  }
  // Unsynchronized access.
  T* raw() const noexcept { return ptr(); }

 private:
  explicit Value(detail::DataSegment s) noexcept : Base(std::move(s)) {}
  T* ptr() const noexcept { return static_cast<T*>(this->seg_.data()); }
};

// A locked Array: element access while the guard lives.
template <class T>
class [[nodiscard]] LockedArray : public detail::LockedData {
 public:
  LockedArray(LockGuard g, std::span<T> s) noexcept : LockedData(std::move(g)), s_(s) {}
  T& operator[](std::size_t i) const noexcept { return s_[i]; }
  std::span<T> span() const noexcept { return s_; }
  std::size_t size() const noexcept { return s_.size(); }

 private:
  std::span<T> s_;
};

template <class T>
class Array : public detail::DataHandle<Array<T>> {
  static_assert(std::is_trivially_copyable_v<T>, "Array<T> needs a trivially copyable T");
  using Base = detail::DataHandle<Array<T>>;

 public:
  Array() = default;
  static Result<Array> create(std::string_view name, std::size_t n, const T& fill = T{}) {
    return make(name, n, &fill, true);
  }
  static Result<Array> create(std::string_view name, std::span<const T> init) {
    return make(name, init.size(), init.data(), false);
  }
  static Result<Array> open_object(const std::string& shm_object) {
    auto s = detail::DataSegment::open(shm_object, detail::SyncKind::array, sizeof(T), 0);
    if (!s) return std::move(s).error();
    return Array(std::move(*s));
  }

  std::size_t size() const noexcept { return this->seg_.count(); }

  // invalid_argument if i >= size().
  Result<T> get(std::size_t i, Deadline d = Deadline::never()) const {
    if (i >= size()) return Error(Errc::invalid_argument, "Array index out of range");
    return this->locked(
        [&] {
          T out;
          std::memcpy(&out, ptr() + i, sizeof(T));
          return out;
        },
        d);
  }
  Status set(std::size_t i, const T& v, Deadline d = Deadline::never()) {
    if (i >= size()) return Error(Errc::invalid_argument, "Array index out of range");
    return this->locked([&] { std::memcpy(ptr() + i, &v, sizeof(T)); }, d);
  }
  // A consistent copy of all elements.
  Result<std::vector<T>> snapshot(Deadline d = Deadline::never()) const {
    return this->locked([&] { return std::vector<T>(ptr(), ptr() + size()); }, d);
  }
  Result<LockedArray<T>> lock(Deadline d = Deadline::never()) {
    auto g = this->guard(d);
    if (!g) return std::move(g).error();
    return LockedArray<T>(std::move(*g), raw());
  }
  // f(std::span<T>) under the lock; Result<R> (Status for void).
  template <class F, class R = std::invoke_result_t<F&, std::span<T>>>
  Result<R> with_lock(F&& f, Deadline d = Deadline::never()) {
    return this->locked([&]() -> R { return std::invoke(f, raw()); }, d);
  }
  // Unsynchronized access.
  std::span<T> raw() const noexcept { return {ptr(), size()}; }

 private:
  explicit Array(detail::DataSegment s) noexcept : Base(std::move(s)) {}
  static Result<Array> make(std::string_view name, std::size_t n, const T* init, bool repeat) {
    auto s = detail::DataSegment::create(name, detail::SyncKind::array, sizeof(T), alignof(T), n,
                                         init, repeat);
    if (!s) return std::move(s).error();
    return Array(std::move(*s));
  }
  T* ptr() const noexcept { return static_cast<T*>(this->seg_.data()); }
};

}  // namespace ferry::ipc
