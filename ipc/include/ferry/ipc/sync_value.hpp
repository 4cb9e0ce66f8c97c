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

}  // namespace detail

// A locked Value: access to the T while the guard lives.
template <class T>
class [[nodiscard]] Locked {
 public:
  Locked(LockGuard g, T* p) noexcept : g_(std::move(g)), p_(p) {}
  T& operator*() const noexcept { return *p_; }
  T* operator->() const noexcept { return p_; }
  bool owner_died() const noexcept { return g_.owner_died(); }
  Status make_consistent() noexcept { return g_.make_consistent(); }
  void unlock() noexcept { g_.unlock(); }

 private:
  LockGuard g_;
  T* p_;
};

template <class T>
class Value {
  static_assert(std::is_trivially_copyable_v<T>, "Value<T> needs a trivially copyable T");

 public:
  Value() = default;
  static Result<Value> create(std::string_view name, const T& initial = T{}) {
    auto s = detail::DataSegment::create(name, detail::SyncKind::value, sizeof(T), alignof(T), 1,
                                         &initial, false);
    if (!s) return std::move(s).error();
    return Value(std::move(*s));
  }
  static Result<Value> open(std::string_view name) {
    if (auto c = detail::check_name(name); !c) return std::move(c).error();
    return open_object(::ferry::shm_name(name));
  }
  static Result<Value> open_object(const std::string& shm_object) {
    auto s = detail::DataSegment::open(shm_object, detail::SyncKind::value, sizeof(T), 1);
    if (!s) return std::move(s).error();
    return Value(std::move(*s));
  }

  Result<T> get(Deadline d = Deadline::never()) const {
    auto g = seg_.lock_recovering(d);
    if (!g) return std::move(g).error();
    T out;
    std::memcpy(&out, seg_.data(), sizeof(T));
    return out;
  }
  Status set(const T& v, Deadline d = Deadline::never()) {
    auto g = seg_.lock_recovering(d);
    if (!g) return std::move(g).error();
    std::memcpy(seg_.data(), &v, sizeof(T));
    return {};
  }
  Result<Locked<T>> lock(Deadline d = Deadline::never()) {
    auto g = LockGuard::acquire(seg_.mutex(), d);
    if (!g) return std::move(g).error();
    return Locked<T>(std::move(*g), ptr());
  }
  // f(T&) under the lock; Result<R> (Status for void).
  template <class F, class R = std::invoke_result_t<F&, T&>>
  Result<R> with_lock(F&& f, Deadline d = Deadline::never()) {
    auto g = seg_.lock_recovering(d);
    if (!g) return std::move(g).error();
    if constexpr (std::is_void_v<R>) {
      std::invoke(f, *ptr());
      return {};
    } else {
      return std::invoke(f, *ptr());
    }
  }
  // Unsynchronized access.
  T* raw() const noexcept { return ptr(); }

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
    auto opened = open_object(n);
    if (!opened) throw ::ferry::Exception(std::move(opened).error());
    *this = std::move(*opened);
  }

 private:
  explicit Value(detail::DataSegment s) noexcept : seg_(std::move(s)) {}
  T* ptr() const noexcept { return static_cast<T*>(seg_.data()); }
  detail::DataSegment seg_;
};

// A locked Array: element access while the guard lives.
template <class T>
class [[nodiscard]] LockedArray {
 public:
  LockedArray(LockGuard g, std::span<T> s) noexcept : g_(std::move(g)), s_(s) {}
  T& operator[](std::size_t i) const noexcept { return s_[i]; }
  std::span<T> span() const noexcept { return s_; }
  std::size_t size() const noexcept { return s_.size(); }
  bool owner_died() const noexcept { return g_.owner_died(); }
  Status make_consistent() noexcept { return g_.make_consistent(); }
  void unlock() noexcept { g_.unlock(); }

 private:
  LockGuard g_;
  std::span<T> s_;
};

template <class T>
class Array {
  static_assert(std::is_trivially_copyable_v<T>, "Array<T> needs a trivially copyable T");

 public:
  Array() = default;
  static Result<Array> create(std::string_view name, std::size_t n, const T& fill = T{}) {
    auto s = detail::DataSegment::create(name, detail::SyncKind::array, sizeof(T), alignof(T), n,
                                         &fill, true);
    if (!s) return std::move(s).error();
    return Array(std::move(*s));
  }
  static Result<Array> create(std::string_view name, std::span<const T> init) {
    auto s = detail::DataSegment::create(name, detail::SyncKind::array, sizeof(T), alignof(T),
                                         init.size(), init.data(), false);
    if (!s) return std::move(s).error();
    return Array(std::move(*s));
  }
  static Result<Array> open(std::string_view name) {
    if (auto c = detail::check_name(name); !c) return std::move(c).error();
    return open_object(::ferry::shm_name(name));
  }
  static Result<Array> open_object(const std::string& shm_object) {
    auto s = detail::DataSegment::open(shm_object, detail::SyncKind::array, sizeof(T), 0);
    if (!s) return std::move(s).error();
    return Array(std::move(*s));
  }

  std::size_t size() const noexcept { return seg_.count(); }

  // invalid_argument if i >= size().
  Result<T> get(std::size_t i, Deadline d = Deadline::never()) const {
    if (i >= size()) return Error(Errc::invalid_argument, "Array index out of range");
    auto g = seg_.lock_recovering(d);
    if (!g) return std::move(g).error();
    T out;
    std::memcpy(&out, ptr() + i, sizeof(T));
    return out;
  }
  Status set(std::size_t i, const T& v, Deadline d = Deadline::never()) {
    if (i >= size()) return Error(Errc::invalid_argument, "Array index out of range");
    auto g = seg_.lock_recovering(d);
    if (!g) return std::move(g).error();
    std::memcpy(ptr() + i, &v, sizeof(T));
    return {};
  }
  // A consistent copy of all elements.
  Result<std::vector<T>> snapshot(Deadline d = Deadline::never()) const {
    auto g = seg_.lock_recovering(d);
    if (!g) return std::move(g).error();
    return std::vector<T>(ptr(), ptr() + size());
  }
  Result<LockedArray<T>> lock(Deadline d = Deadline::never()) {
    auto g = LockGuard::acquire(seg_.mutex(), d);
    if (!g) return std::move(g).error();
    return LockedArray<T>(std::move(*g), raw());
  }
  // f(std::span<T>) under the lock; Result<R> (Status for void).
  template <class F, class R = std::invoke_result_t<F&, std::span<T>>>
  Result<R> with_lock(F&& f, Deadline d = Deadline::never()) {
    auto g = seg_.lock_recovering(d);
    if (!g) return std::move(g).error();
    if constexpr (std::is_void_v<R>) {
      std::invoke(f, raw());
      return {};
    } else {
      return std::invoke(f, raw());
    }
  }
  // Unsynchronized access.
  std::span<T> raw() const noexcept { return {ptr(), size()}; }

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
    auto opened = open_object(n);
    if (!opened) throw ::ferry::Exception(std::move(opened).error());
    *this = std::move(*opened);
  }

 private:
  explicit Array(detail::DataSegment s) noexcept : seg_(std::move(s)) {}
  T* ptr() const noexcept { return static_cast<T*>(seg_.data()); }
  detail::DataSegment seg_;
};

}  // namespace ferry::ipc
