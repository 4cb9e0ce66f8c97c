// Errors as values for the transport and codec layers, and the exception the upper layers throw.
//
// Threading: all types here are plain values; no shared state.
// Ownership: Result<T> owns its T or its Error.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace ferry {

// Every failure the runtime reports has one of these names. Keep in sync with errc_name().
enum class Errc : std::uint8_t {
  ok = 0,
  would_block,               // try-form call found nothing to do; not a failure of the channel
  timeout,                   // timed-form call's deadline passed
  channel_closed,            // peer closed or died; the channel will never deliver again
  queue_full,                // try-form send found no room
  frame_too_large,           // declared frame length exceeds the configured maximum
  truncated,                 // fewer bytes than the header or declared length needs
  bad_magic,                 // not a ferry frame
  bad_version,               // a ferry frame of another protocol version
  bad_kind,                  // unknown message kind
  malformed_payload,         // payload does not decode as the message it claims to be
  length_exceeds_remaining,  // an inner length claims more bytes than the frame has left
  trailing_bytes,            // payload decoded but bytes were left over
  system_error,              // an OS call failed; Error::sys holds errno
  invalid_argument,
  not_found,
  already_exists,
  owner_died,  // a lock was acquired from a holder that died; state may be inconsistent
  broken,      // a barrier (or similar) can no longer complete
  cancelled,
  rejected,  // handshake refused (version or task-set mismatch, unknown key)
  unsupported,
  no_space,             // no room to back a resource (a full /dev/shm); detail names it
  too_many_open_files,  // the process (EMFILE) or system (ENFILE) file-descriptor limit
  bad_handle,           // a shared-memory object handle names no object its sender may pass
};

constexpr std::string_view errc_name(Errc e) noexcept {
  switch (e) {
    case Errc::ok:
      return "ok";
    case Errc::would_block:
      return "WouldBlock";
    case Errc::timeout:
      return "Timeout";
    case Errc::channel_closed:
      return "ChannelClosed";
    case Errc::queue_full:
      return "QueueFull";
    case Errc::frame_too_large:
      return "FrameTooLarge";
    case Errc::truncated:
      return "Truncated";
    case Errc::bad_magic:
      return "BadMagic";
    case Errc::bad_version:
      return "BadVersion";
    case Errc::bad_kind:
      return "BadKind";
    case Errc::malformed_payload:
      return "MalformedPayload";
    case Errc::length_exceeds_remaining:
      return "LengthExceedsRemaining";
    case Errc::trailing_bytes:
      return "TrailingBytes";
    case Errc::system_error:
      return "SystemError";
    case Errc::invalid_argument:
      return "InvalidArgument";
    case Errc::not_found:
      return "NotFound";
    case Errc::already_exists:
      return "AlreadyExists";
    case Errc::owner_died:
      return "OwnerDied";
    case Errc::broken:
      return "Broken";
    case Errc::cancelled:
      return "Cancelled";
    case Errc::rejected:
      return "Rejected";
    case Errc::unsupported:
      return "Unsupported";
    case Errc::no_space:
      return "NoSpace";
    case Errc::too_many_open_files:
      return "TooManyOpenFiles";
    case Errc::bad_handle:
      return "BadHandle";
  }
  return "Unknown";
}

// A named error with the reason it happened.
struct Error {
  Errc code = Errc::ok;
  std::string detail;  // what was wrong, for a human; may be empty for would_block/timeout
  int sys = 0;         // errno when code == system_error

  Error() = default;
  Error(Errc c, std::string d = {}, int sys_errno = 0)
      : code(c), detail(std::move(d)), sys(sys_errno) {}

  // "ChannelClosed: peer closed the pipe" style text.
  std::string message() const;
  friend bool operator==(const Error& e, Errc c) noexcept { return e.code == c; }
};

Error system_error(std::string_view what, int err);

// Thrown by the upper layers (pool, typed channels) where exceptions are the C++ idiom.
class Exception : public std::runtime_error {
 public:
  explicit Exception(Error e);
  const Error& error() const noexcept { return error_; }
  Errc code() const noexcept { return error_.code; }

 private:
  Error error_;
};

// A value or a named error (expected-like; std::expected is C++23).
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Error e) : v_(std::in_place_index<1>, std::move(e)) {}      // NOLINT
  Result(Errc c) : v_(std::in_place_index<1>, Error{c}) {}           // NOLINT

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & {
    check();
    return std::get<0>(v_);
  }
  const T& value() const& {
    check();
    return std::get<0>(v_);
  }
  T&& value() && {
    check();
    return std::get<0>(std::move(v_));
  }
  T& operator*() & noexcept { return *std::get_if<0>(&v_); }
  const T& operator*() const& noexcept { return *std::get_if<0>(&v_); }
  T* operator->() noexcept { return std::get_if<0>(&v_); }
  const T* operator->() const noexcept { return std::get_if<0>(&v_); }

  const Error& error() const& noexcept { return *std::get_if<1>(&v_); }
  Error&& error() && noexcept { return std::move(*std::get_if<1>(&v_)); }
  Errc code() const noexcept { return has_value() ? Errc::ok : error().code; }

 private:
  void check() const {
    if (!has_value()) throw Exception(error());
  }
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() noexcept = default;
  Result(Error e) : e_(std::move(e)), failed_(true) {}  // NOLINT
  Result(Errc c) : e_(c), failed_(c != Errc::ok) {}     // NOLINT

  bool has_value() const noexcept { return !failed_; }
  explicit operator bool() const noexcept { return !failed_; }
  void value() const {
    if (failed_) throw Exception(e_);
  }
  const Error& error() const& noexcept { return e_; }
  Error&& error() && noexcept { return std::move(e_); }
  Errc code() const noexcept { return failed_ ? e_.code : Errc::ok; }

 private:
  Error e_;
  bool failed_ = false;
};

using Status = Result<void>;

}  // namespace ferry
