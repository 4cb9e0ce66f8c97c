// Task registry: functions that workers can run, under stable names.
//
//   int square(int x) { return x * x; }
//   FERRY_TASK(square);              // at namespace scope, in any source of the executable
//
// Arguments travel as a cereal-encoded std::tuple of the parameter types (decayed), the
// result as the cereal encoding of the return type (nothing for void). Each task has a
// signature (its argument and result types, readable) and a signature hash (name and
// signature): a worker announces the tasks it serves with their hashes, and the coordinator
// sends a task only to workers that serve it with the same hash, so a worker built with
// another version of a task is never given it.
//
// Task libraries: a shared object built with ferry_add_task_library (CMake) carries its own
// FERRY_TASKs; load_library() adds them to this registry (task_library.hpp has the contract).
//
// Threading: registration happens during static initialisation (or before the first pool or
// worker starts, via TaskRegistry::add); after freeze() the registry is read-only and safe to
// read from any thread. Adding after freeze() throws std::logic_error.
#pragma once

#include <array>
#include <charconv>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <variant>
#include <vector>

#include "ferry/shared/codec.hpp"
#include "ferry/shared/error.hpp"
#include "ferry/shared/object_ref.hpp"
#include "ferry/shared/task_json.hpp"

namespace ferry {

// What a worker sends back for one item of a chunked (batch) task when it threw.
struct ItemError {
  std::string type;
  std::string what;
  std::string stack{};  // where it threw, symbolized (protocol v4); empty when unknown
  template <class A>
  void serialize(A& ar) {
    ar(type, what, stack);
  }
};

// The error type a worker reports for a result (or a chunk item's result) too large to send in
// one frame; the task is not retried and the worker carries on.
inline constexpr std::string_view kFrameTooLargeType = "ferry::FrameTooLarge";

// Any function pointer, as the registry stores it (cast back to its real type to call).
using AnyFn = void (*)();

// One item of a chunk's result, as text (for the command line).
struct ItemText {
  bool ok = true;
  std::string text;
  std::string stack{};  // a failed item's stack trace, if the worker had one
};

struct TaskEntry {
  std::string name;
  std::string signature;             // readable types: "(long, std::string) -> long"
  std::uint64_t signature_hash = 0;  // of name and signature; what workers and pools compare
  std::string library;               // the task library it came from ("" : this program)
  AnyFn fn = nullptr;
  // Decodes the argument tuple from args, runs the function, encodes the result into out.
  // Throws what the function throws; decoding failures throw ferry::Exception.
  void (*invoke)(AnyFn fn, ByteView args, Bytes& out) = nullptr;
  // The same over a chunk: args is a vector of argument tuples; out gets a batch result
  // (see BatchMode). Per-item exceptions are caught and reported per item. out is kept within
  // max_out bytes (what it held before included) where values alone are the excess: an item
  // whose value could never fit becomes a kFrameTooLargeType item error, and while the chunk
  // is still too large its largest remaining values do too.
  void (*invoke_batch)(AnyFn fn, ByteView args, Bytes& out, std::size_t max_out) = nullptr;
  // As invoke, for arguments encoded as a tuple of task_detail::RefOr (TaskHeader::ref_args):
  // each one the value or an ObjectRef to it (pool.submit(task, ref) where task takes T or
  // const T&). A const T& parameter gets the object's decoded value itself, not a copy.
  void (*invoke_refs)(AnyFn fn, ByteView args, Bytes& out) = nullptr;
  // Command-line adapters (map TASK --range/--items): parse one item into an encoded
  // argument tuple, and print one encoded result. Null if the types have no text form.
  Result<Bytes> (*parse_item)(std::string_view text) = nullptr;
  std::string (*format_result)(ByteView value) = nullptr;
  // Encodes a vector of items parsed from text as one chunk's argument bytes.
  Result<Bytes> (*parse_chunk)(std::span<const std::string> items) = nullptr;
  // Prints a chunk's batch result, one entry per item (ok: the value; else "Type: what").
  Result<std::vector<ItemText>> (*format_batch)(ByteView batch) = nullptr;
  // Checks that value decodes as this task's result (batch: as a chunk's result), so a pool
  // can tell a worker's garbage from a value before it reaches the caller.
  Status (*check_result)(ByteView value, bool batch) = nullptr;
  // JSON adapters (map --input json, --json; task_json.hpp says what the user writes).
  // parse_json: one line (a value; an array of them for other than one parameter) into an
  // encoded argument tuple. Null if a parameter type has no JSON form.
  Result<Bytes> (*parse_json)(std::string_view line) = nullptr;
  // One encoded result, and a chunk's batch result (ok items' text is JSON; errors stay
  // "Type: what"), as JSON. Null if the result type has no JSON form.
  Result<std::string> (*format_json)(ByteView value) = nullptr;
  Result<std::vector<ItemText>> (*format_json_batch)(ByteView batch) = nullptr;
  // Why an adapter above is null ("" when none is): "parameter 0 (Foo) has no JSON form".
  std::string no_json;
  // As invoke_batch, for a chunk whose items are tuples of task_detail::RefOr (a map's items
  // holding ObjectRefs where the task takes T or const T&; TaskHeader::batch and ref_args).
  // An item whose object cannot be read fails alone (ObjectUnavailable).
  void (*invoke_batch_refs)(AnyFn fn, ByteView args, Bytes& out, std::size_t max_out) = nullptr;
};

class TaskRegistry {
 public:
  static TaskRegistry& instance();

  // Registers e (idempotent for the same name and function). Throws std::logic_error after
  // freeze() or for a name registered with a different function.
  void add(TaskEntry e);
  // Loads a task library (a .so built with ferry_add_task_library) and registers its tasks;
  // a directory loads each *.so in it, in name order. Loading the same file again does
  // nothing. Errors name the file: missing, not a task library, built for another protocol
  // or ABI, a task name this program already has with another function, or after freeze().
  Status load_library(const std::string& path);
  // The libraries loaded, as absolute paths in load order (local workers load the same).
  const std::vector<std::string>& libraries() const noexcept { return libraries_; }
  // Sorts the entries and fixes their indices; called by the first pool or worker.
  void freeze();
  bool frozen() const noexcept { return frozen_; }

  // Valid after freeze().
  const std::vector<TaskEntry>& entries() const noexcept { return entries_; }
  std::uint64_t hash() const noexcept { return hash_; }
  Result<std::uint32_t> index_of(std::string_view name) const;
  Result<std::uint32_t> index_of(AnyFn fn) const;
  const TaskEntry* at(std::uint32_t index) const noexcept;

  // FERRY_COMBINE(fn, combine): `combined` maps a chunk with fn and folds it with combine in
  // the worker (Pool::map_reduce with combine_in_workers finds it by the pair).
  void add_combined(AnyFn fn, AnyFn combine, AnyFn combined);
  std::optional<AnyFn> combined_of(AnyFn fn, AnyFn combine) const;
  // Its twin for chunks whose items are ObjectRefs feeding fn's T / const T& parameter
  // (each item a task_detail::RefOr): a task "fn+combine[refs]".
  void add_combined_refs(AnyFn fn, AnyFn combine, AnyFn combined);
  std::optional<AnyFn> combined_refs_of(AnyFn fn, AnyFn combine) const;

 private:
  std::vector<TaskEntry> entries_;
  std::map<std::pair<AnyFn, AnyFn>, AnyFn> combined_;
  std::map<std::pair<AnyFn, AnyFn>, AnyFn> combined_refs_;
  std::map<std::string, std::uint32_t, std::less<>> by_name_;
  std::map<AnyFn, std::uint32_t> by_fn_;
  std::vector<std::string> libraries_;
  std::uint64_t hash_ = 0;
  bool frozen_ = false;
};

// Where a spawned worker finds the task libraries its pool loaded: absolute paths, one per
// line (set by the pool for its local workers; read by ferry::init and ferry-worker).
inline constexpr const char* kTaskLibrariesEnv = "FERRY_TASK_LIBRARIES";
// Loads each library named in $FERRY_TASK_LIBRARIES; the first failure is returned.
Status load_task_libraries_from_env();
// The hash of a task's name and signature (as TaskEntry::signature_hash).
std::uint64_t signature_hash(std::string_view name, std::string_view signature) noexcept;

// Outcome of a chunk, as a worker encodes it: all items succeeded (values only), or a
// per-item list. Decoded by the coordinator into one result or error per item.
enum class BatchMode : std::uint8_t { all_ok = 0, mixed = 1 };
// The items of a BatchMode::mixed result: (true, the value's encoding) or (false, an
// ItemError's encoding), one per item in input order.
using MixedItems = std::vector<std::pair<bool, Bytes>>;

namespace task_detail {

template <class F>
struct fn_traits;
template <class R, class... Args>
struct fn_traits<R (*)(Args...)> {
  using result = R;
  using args = std::tuple<std::decay_t<Args>...>;
  using stored_result = std::conditional_t<std::is_void_v<R>, std::monostate, std::decay_t<R>>;
};
template <class R, class... Args>
struct fn_traits<R (*)(Args...) noexcept> : fn_traits<R (*)(Args...)> {};

template <class T>
[[noreturn]] void throw_decode(const Error& e, const char* what) {
  throw Exception(Error{e.code, std::string(what) + ": " + e.detail});
}

template <class F>
typename fn_traits<F>::stored_result call(F f, typename fn_traits<F>::args& args) {
  if constexpr (std::is_void_v<typename fn_traits<F>::result>) {
    std::apply(f, std::move(args));
    return {};
  } else {
    return std::apply(f, std::move(args));
  }
}

template <class F>
void invoke(AnyFn fn, ByteView in, Bytes& out) {
  using T = fn_traits<F>;
  auto args = decode_value<typename T::args>(in);
  if (!args) throw_decode<F>(args.error(), "decoding the task's arguments");
  auto r = call(reinterpret_cast<F>(fn), *args);
  if constexpr (!std::is_void_v<typename T::result>) encode_into(out, r);
}

// One argument of a task called with ObjectRef arguments (TaskEntry::invoke_refs): a tag,
// then the value T or an ObjectRef<T> (its name and size).
template <class T>
struct RefOr {
  bool is_ref = false;
  T value{};
  ObjectRef<T> ref;

  template <class A>
  static RefOr from(A&& a) {
    RefOr r;
    if constexpr (std::is_same_v<std::remove_cvref_t<A>, ObjectRef<T>>) {
      r.is_ref = true;
      r.ref = std::forward<A>(a);
    } else {
      r.value = T(std::forward<A>(a));
    }
    return r;
  }
  template <class A>
  void save(A& ar) const {
    ar(is_ref);
    if (is_ref) {
      ar(ref);
    } else {
      ar(value);
    }
  }
  template <class A>
  void load(A& ar) {
    ar(is_ref);
    if (is_ref) {
      ar(ref);
    } else {
      ar(value);
    }
  }
};

// What a parameter of type P gets from its RefOr: a const T& is the object's shared decoded
// value (no copy); any other form takes a T (moved from a value, copied from an object).
template <class P, class T>
std::conditional_t<std::is_same_v<P, const T&>, const T&, T> pass_arg(RefOr<T>& a) {
  if constexpr (std::is_same_v<P, const T&>) {
    return a.is_ref ? a.ref.get() : a.value;
  } else {
    if (!a.is_ref) return std::move(a.value);
    if constexpr (std::is_copy_constructible_v<T>) {
      return T(a.ref.get());
    } else {
      throw ObjectUnavailable("object '" + a.ref.name() +
                              "': the task takes its value by value, and it cannot be copied");
    }
  }
}

template <class F>
struct ref_call;
template <class R, class... Args>
struct ref_call<R (*)(Args...)> {
  using args = std::tuple<RefOr<std::decay_t<Args>>...>;
  static auto run(R (*f)(Args...), args& a) {
    return std::apply([f](auto&... x) { return f(pass_arg<Args>(x)...); }, a);
  }
};
template <class R, class... Args>
struct ref_call<R (*)(Args...) noexcept> {
  using args = std::tuple<RefOr<std::decay_t<Args>>...>;
  static auto run(R (*f)(Args...) noexcept, args& a) {
    return std::apply([f](auto&... x) { return f(pass_arg<Args>(x)...); }, a);
  }
};

template <class F>
void invoke_refs(AnyFn fn, ByteView in, Bytes& out) {
  using C = ref_call<F>;
  auto args = decode_value<typename C::args>(in);
  if (!args) throw_decode<F>(args.error(), "decoding the task's arguments");
  if constexpr (std::is_void_v<typename fn_traits<F>::result>) {
    C::run(reinterpret_cast<F>(fn), *args);
  } else {
    auto r = C::run(reinterpret_cast<F>(fn), *args);
    encode_into(out, r);
  }
}

std::string type_name_of(const std::type_info& t);
// A type's name as a person writes it (std::string, not std::__cxx11::basic_string<...>).
std::string readable_type_name(const std::type_info& t);

template <class R, class... Args>
std::string readable_signature(R (*)(Args...)) {
  std::string s = "(";
  bool first = true;
  ((s += (first ? "" : ", "), s += readable_type_name(typeid(std::decay_t<Args>)), first = false),
   ...);
  s += ") -> ";
  s += std::is_void_v<R> ? std::string("void") : readable_type_name(typeid(std::decay_t<R>));
  return s;
}
std::string current_exception_type();
std::string current_exception_what();
// The stack of the exception being handled (inside a catch), as the worker recorded it where
// it was thrown; empty outside a ferry worker.
std::string current_exception_stack();

// Appends BatchMode::mixed and items to out, first turning values into kFrameTooLargeType
// item errors as invoke_batch describes, so that out stays within max_out where it can.
void encode_mixed(Bytes& out, MixedItems& items, std::size_t max_out);

// Runs call_one(item) over a decoded chunk and encodes the batch result into out (see
// TaskEntry::invoke_batch): all values, or per item a value or an ItemError.
template <class R, class Items, class CallOne>
void run_batch(Items& items, CallOne call_one, Bytes& out, std::size_t max_out) {
  std::vector<R> values;
  values.reserve(items.size());
  std::size_t i = 0;
  std::exception_ptr first_failure;
  for (; i < items.size(); ++i) {
    try {
      values.push_back(call_one(items[i]));
    } catch (...) {
      first_failure = std::current_exception();
      break;
    }
  }
  const std::size_t start = out.size();
  if (i == items.size()) {
    encode_into(out, BatchMode::all_ok, values);
    if (out.size() <= max_out) return;
    // Too large together: the items are reported one by one, some of them as errors.
    out.resize(start);
    out.shrink_to_fit();  // it held the whole oversized encoding
  }
  // Some item threw (or the chunk is too large): re-run nothing, report each item.
  MixedItems mixed;
  mixed.reserve(items.size());
  for (auto&& v : values)
    mixed.emplace_back(true, encode_value(static_cast<const R&>(v)));  // vector<bool>: a proxy
  values.clear();
  for (; i < items.size(); ++i) {
    try {
      if (first_failure) std::rethrow_exception(std::exchange(first_failure, nullptr));
      mixed.emplace_back(true, encode_value(call_one(items[i])));
    } catch (...) {
      mixed.emplace_back(false,
                         encode_value(ItemError{current_exception_type(), current_exception_what(),
                                                current_exception_stack()}));
    }
  }
  encode_mixed(out, mixed, max_out);
}

template <class F>
void invoke_batch(AnyFn fn, ByteView in, Bytes& out, std::size_t max_out) {
  using T = fn_traits<F>;
  auto items = decode_value<std::vector<typename T::args>>(in);
  if (!items) throw_decode<F>(items.error(), "decoding a chunk of arguments");
  auto f = reinterpret_cast<F>(fn);
  run_batch<typename T::stored_result>(
      *items, [f](typename T::args& a) { return call(f, a); }, out, max_out);
}

template <class F>
void invoke_batch_refs(AnyFn fn, ByteView in, Bytes& out, std::size_t max_out) {
  using C = ref_call<F>;
  using R = typename fn_traits<F>::stored_result;
  // Each item's refs resolve through the process's object cache: one decode per object.
  auto items = decode_value<std::vector<typename C::args>>(in);
  if (!items) throw_decode<F>(items.error(), "decoding a chunk of arguments");
  auto f = reinterpret_cast<F>(fn);
  run_batch<R>(
      *items,
      [f](typename C::args& a) -> R {
        if constexpr (std::is_void_v<typename fn_traits<F>::result>) {
          C::run(f, a);
          return {};
        } else {
          return C::run(f, a);
        }
      },
      out, max_out);
}

template <class T>
constexpr bool is_text_arg_v = std::is_arithmetic_v<T> || std::is_same_v<T, std::string>;

template <class T>
Result<T> parse_text(std::string_view s) {
  if constexpr (std::is_same_v<T, std::string>) {
    return std::string(s);
  } else if constexpr (std::is_same_v<T, bool>) {
    if (s == "true" || s == "1") return true;
    if (s == "false" || s == "0") return false;
    return Error{Errc::invalid_argument, "not a bool: '" + std::string(s) + "'"};
  } else {
    T v{};
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size()) {
      return Error{Errc::invalid_argument, "not a number: '" + std::string(s) + "'"};
    }
    return v;
  }
}

std::string format_bytes_summary(ByteView b);

template <class R>
std::string format_value(const R& v) {
  if constexpr (std::is_same_v<R, std::monostate>) {
    return "ok";
  } else if constexpr (std::is_same_v<R, Bytes>) {
    return format_bytes_summary(v);
  } else if constexpr (std::is_same_v<R, std::string>) {
    return v;
  } else if constexpr (std::is_same_v<R, bool>) {
    return v ? "true" : "false";
  } else if constexpr (std::is_integral_v<R>) {
    // to_chars: a map prints millions of these, and a stream per number costs ~10x.
    std::array<char, 24> buf{};
    const auto r = std::to_chars(buf.data(), buf.data() + buf.size(), +v);
    return std::string(buf.data(), r.ptr);
  } else if constexpr (std::is_arithmetic_v<R>) {
    std::ostringstream os;
    os << +v;
    return os.str();
  } else if constexpr (task_json::writable_v<R>) {
    // No text form of its own: its JSON is the most readable thing there is.
    auto json = task_json::to_json(v);
    if (json) return std::move(*json);
    return "<value of " + type_name_of(typeid(R)) + ": " + json.error().detail + ">";
  } else {
    return "<value of " + type_name_of(typeid(R)) + ">";
  }
}

template <class F>
constexpr bool has_text_form() {
  using A = typename fn_traits<F>::args;
  if constexpr (std::tuple_size_v<A> != 1) {
    return false;
  } else {
    return is_text_arg_v<std::tuple_element_t<0, A>>;
  }
}

template <class F>
Result<Bytes> parse_item(std::string_view text) {
  using A = typename fn_traits<F>::args;
  auto v = parse_text<std::tuple_element_t<0, A>>(text);
  if (!v) return std::move(v).error();
  return encode_value(A{std::move(*v)});
}

template <class F>
Result<Bytes> parse_chunk(std::span<const std::string> items) {
  using A = typename fn_traits<F>::args;
  std::vector<A> args;
  args.reserve(items.size());
  for (const auto& s : items) {
    auto v = parse_text<std::tuple_element_t<0, A>>(s);
    if (!v) return std::move(v).error();
    args.emplace_back(std::move(*v));
  }
  return encode_value(args);
}

template <class F>
std::string format_result(ByteView value) {
  using R = typename fn_traits<F>::stored_result;
  if constexpr (std::is_same_v<R, std::monostate>) {
    return "ok";
  } else {
    auto v = decode_value<R>(value);
    if (!v) return "<undecodable result: " + v.error().message() + ">";
    return format_value(*v);
  }
}

// Walks a chunk's batch result: item(value) for each value, "Type: what" for each item error.
template <class R, class Item>
Result<std::vector<ItemText>> format_batch_items(ByteView in, Item item) {
  BatchMode mode{};
  if (auto st = decode_prefix(in, mode); !st) return std::move(st).error();
  std::vector<ItemText> out;
  if (mode == BatchMode::all_ok) {
    std::vector<R> values;
    if (auto st = decode_prefix(in, values); !st) return std::move(st).error();
    out.reserve(values.size());
    for (auto&& v : values)
      out.push_back(item(v));
    return out;
  }
  MixedItems mixed;
  if (auto st = decode_prefix(in, mixed); !st) return std::move(st).error();
  for (auto& [ok, bytes] : mixed) {
    if (ok) {
      auto v = decode_value<R>(bytes);
      if (!v) return std::move(v).error();
      out.push_back(item(*v));
    } else {
      auto e = decode_value<ItemError>(bytes);
      if (!e) return std::move(e).error();
      out.push_back({false, e->type + ": " + e->what, std::move(e->stack)});
    }
  }
  return out;
}

template <class F>
Result<std::vector<ItemText>> format_batch(ByteView in) {
  using R = typename fn_traits<F>::stored_result;
  return format_batch_items<R>(in, [](const R& v) { return ItemText{true, format_value(v)}; });
}

template <class T>
Status decodes_as(ByteView in) {
  auto v = decode_value<T>(in);
  if (!v) return std::move(v).error();
  return {};
}

template <class F>
Status check_result(ByteView in, bool batch) {
  using R = typename fn_traits<F>::stored_result;
  if (!batch) return decodes_as<R>(in);
  BatchMode mode{};
  if (auto st = decode_prefix(in, mode); !st) return st;
  if (mode == BatchMode::all_ok) return decodes_as<std::vector<R>>(in);
  auto mixed = decode_value<MixedItems>(in);
  if (!mixed) return std::move(mixed).error();
  for (auto& [ok, bytes] : *mixed) {
    if (auto st = ok ? decodes_as<R>(bytes) : decodes_as<ItemError>(bytes); !st) return st;
  }
  return {};
}

// ---- JSON adapters (TaskEntry::parse_json, format_json, format_json_batch)

template <class R>
Result<std::string> json_of(const R& v) {
  if constexpr (std::is_same_v<R, std::monostate>) {
    return std::string("null");
  } else if constexpr (std::is_same_v<R, Bytes>) {
    // As in text: the bytes themselves are rarely what a terminal or a script wants.
    return task_json::string_value(format_bytes_summary(v));
  } else {
    return task_json::to_json(v);
  }
}

template <class R>
constexpr bool has_json_result() {
  return std::is_same_v<R, std::monostate> || std::is_same_v<R, Bytes> || task_json::writable_v<R>;
}

template <class F>
Result<Bytes> parse_json(std::string_view line) {
  return task_json::parse_args<typename fn_traits<F>::args>(line);
}

template <class F>
Result<std::string> format_json(ByteView value) {
  using R = typename fn_traits<F>::stored_result;
  if constexpr (std::is_same_v<R, std::monostate>) {
    return json_of(R{});
  } else {
    auto v = decode_value<R>(value);
    if (!v) return std::move(v).error();
    return json_of(*v);
  }
}

template <class F>
Result<std::vector<ItemText>> format_json_batch(ByteView in) {
  using R = typename fn_traits<F>::stored_result;
  return format_batch_items<R>(in, [](const R& v) -> ItemText {
    auto json = json_of(v);
    if (!json) return {false, "writing the result as JSON: " + json.error().detail};
    return {true, std::move(*json)};
  });
}

template <class... Ts>
constexpr bool all_readable(const std::tuple<Ts...>*) {
  return (task_json::readable_v<Ts> && ...);
}

// The first parameter type without a JSON form, as "parameter I (T)".
template <class Args, std::size_t... I>
std::string unreadable_parameter(std::index_sequence<I...>) {
  std::string which;
  const auto check = [&](std::size_t i, bool readable, const std::type_info& t) {
    if (!readable)
      which = "parameter " + std::to_string(i) + " (" + task_json::readable_type(t) + ")";
    return !readable;
  };
  (void)(... || check(I, task_json::readable_v<std::tuple_element_t<I, Args>>,
                      typeid(std::tuple_element_t<I, Args>)));
  return which;
}

template <class F>
void add_json_adapters(TaskEntry& e) {
  using A = typename fn_traits<F>::args;
  using R = typename fn_traits<F>::stored_result;
  if constexpr (all_readable(static_cast<const A*>(nullptr))) {
    e.parse_json = &parse_json<F>;
  } else {
    e.no_json = unreadable_parameter<A>(std::make_index_sequence<std::tuple_size_v<A>>{}) +
                " has no JSON form";
  }
  if constexpr (has_json_result<R>()) {
    e.format_json = &format_json<F>;
    e.format_json_batch = &format_json_batch<F>;
  } else {
    e.no_json += std::string(e.no_json.empty() ? "" : "; ") + "the result (" +
                 task_json::readable_type(typeid(R)) + ") has no JSON form";
  }
}

template <class F>
TaskEntry make_entry(std::string name, F f) {
  TaskEntry e;
  e.name = std::move(name);
  e.signature = readable_signature(f);
  e.signature_hash = signature_hash(e.name, e.signature);
  e.fn = reinterpret_cast<AnyFn>(f);
  e.invoke = &invoke<F>;
  e.invoke_batch = &invoke_batch<F>;
  e.invoke_refs = &invoke_refs<F>;
  e.invoke_batch_refs = &invoke_batch_refs<F>;
  if constexpr (has_text_form<F>()) {
    e.parse_item = &parse_item<F>;
    e.parse_chunk = &parse_chunk<F>;
  }
  e.format_result = &format_result<F>;
  e.format_batch = &format_batch<F>;
  e.check_result = &check_result<F>;
  add_json_adapters<F>(e);
  return e;
}

}  // namespace task_detail

// Registers f under name; what FERRY_TASK expands to.
struct TaskRegistrar {
  template <class R, class... Args>
  TaskRegistrar(const char* name, R (*f)(Args...)) {
    TaskRegistry::instance().add(task_detail::make_entry(name, f));
  }
};

namespace task_detail {
// A chunk of fn's inputs, each mapped with Fn and folded into T{} with Combine, in the worker.
template <auto Fn, auto Combine>
std::decay_t<typename fn_traits<decltype(Combine)>::result> combine_chunk(
    std::vector<std::decay_t<std::tuple_element_t<0, typename fn_traits<decltype(Fn)>::args>>>
        items) {
  std::decay_t<typename fn_traits<decltype(Combine)>::result> acc{};
  for (auto& x : items)
    acc = Combine(std::move(acc), Fn(std::move(x)));
  return acc;
}

template <class F>
struct first_param;
template <class R, class A, class... Rest>
struct first_param<R (*)(A, Rest...)> {
  using type = A;
};
template <class R, class A, class... Rest>
struct first_param<R (*)(A, Rest...) noexcept> {
  using type = A;
};
template <class T>
struct is_object_ref : std::false_type {};
template <class T>
struct is_object_ref<ObjectRef<T>> : std::true_type {};

// As combine_chunk, for items that are each the value or an ObjectRef to it (RefOr): what
// map_reduce sends when its items are refs feeding fn's T / const T& parameter.
template <auto Fn, auto Combine>
std::decay_t<typename fn_traits<decltype(Combine)>::result> combine_chunk_refs(
    std::vector<RefOr<std::decay_t<typename first_param<decltype(Fn)>::type>>> items) {
  using P = typename first_param<decltype(Fn)>::type;
  std::decay_t<typename fn_traits<decltype(Combine)>::result> acc{};
  for (auto& x : items)
    acc = Combine(std::move(acc), Fn(pass_arg<P>(x)));
  return acc;
}
}  // namespace task_detail

// Registers the worker-side fold of fn's results with combine; what FERRY_COMBINE expands to.
struct CombineRegistrar {
  template <auto Fn, auto Combine>
  static CombineRegistrar make(const char* fn_name, const char* combine_name) {
    auto combined = &task_detail::combine_chunk<Fn, Combine>;
    TaskRegistry::instance().add(
        task_detail::make_entry(std::string(fn_name) + "+" + combine_name, combined));
    TaskRegistry::instance().add_combined(reinterpret_cast<AnyFn>(Fn),
                                          reinterpret_cast<AnyFn>(Combine),
                                          reinterpret_cast<AnyFn>(combined));
    using Item = std::decay_t<typename task_detail::first_param<decltype(Fn)>::type>;
    if constexpr (!task_detail::is_object_ref<Item>::value) {
      auto refs = &task_detail::combine_chunk_refs<Fn, Combine>;
      TaskRegistry::instance().add(
          task_detail::make_entry(std::string(fn_name) + "+" + combine_name + "[refs]", refs));
      TaskRegistry::instance().add_combined_refs(reinterpret_cast<AnyFn>(Fn),
                                                 reinterpret_cast<AnyFn>(Combine),
                                                 reinterpret_cast<AnyFn>(refs));
    }
    return {};
  }
};

// The function pointer a task is known by (for lookups from Pool::submit(fn, ...)).
template <class R, class... Args>
AnyFn task_key(R (*f)(Args...)) noexcept {
  return reinterpret_cast<AnyFn>(f);
}

}  // namespace ferry

#define FERRY_TASK_CAT2(a, b) a##b
#define FERRY_TASK_CAT(a, b) FERRY_TASK_CAT2(a, b)
// FERRY_TASK(fn): registers fn (a function, at namespace scope) as a task named "fn".
#define FERRY_TASK(fn)                                                                           \
  [[maybe_unused]] static const ::ferry::TaskRegistrar FERRY_TASK_CAT(ferry_task_, __COUNTER__)( \
      #fn, &fn)
// FERRY_COMBINE(fn, combine): lets Pool::map_reduce(fn, items, init, combine,
// {.combine_in_workers = true}) fold each chunk inside the worker: a task named "fn+combine"
// that maps a chunk with fn and folds the results into T{} with combine (T combine(T, R)).
#define FERRY_COMBINE(fn, combine)                                        \
  [[maybe_unused]] static const ::ferry::CombineRegistrar FERRY_TASK_CAT( \
      ferry_combine_, __COUNTER__) = ::ferry::CombineRegistrar::make<&fn, &combine>(#fn, #combine)
