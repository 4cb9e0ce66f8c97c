// JSON forms of task arguments and results, for the command line (`map --input json`,
// `--json`), read and written by cereal's JSON archives (cereal/archives/json.hpp, rapidjson).
//
// What the user writes, one JSON value per line:
//   - a task with one parameter: the value itself: `3`, `"abc"`, `{"values": [1, 2]}`;
//   - any other number of parameters: an array with one value per parameter: `[3, "abc"]`
//     for f(int, std::string), `[]` for f().
// A struct is an object whose members are named as its cereal serialize names them:
// ar(CEREAL_NVP(x)) or ar(cereal::make_nvp("x", x)) is member "x", found by name in any order;
// unnamed members (ar(x, y)) are written "value0", "value1", ... and read back in order, whatever
// their names. Standard types take cereal's JSON forms (a vector is an array, a pair is
// {"first", "second"}, a map an array of {"key", "value"}, an optional {"nullopt", "data"}).
// Results are written in the same forms, on one line; NaN and infinities as null (JSON has
// none; on input cereal accepts NaN, Infinity and -Infinity).
//
// A type that cereal's JSON archives cannot read (or write) has no JSON form: its adapters are
// left null (the command line says so) instead of breaking the build. The check asks cereal's
// traits about the type and, through standard containers, pairs, tuples, variants, optionals
// and smart pointers, about what they hold (cereal's own trait says yes to a std::vector<T>
// whatever T is). A generic `template <class A> void serialize(A&)` whose body compiles only
// for binary archives cannot be seen through: restrict it to the archives it supports (an
// overload per archive, or a requires-clause).
//
// Cost: task.hpp includes this header, so every FERRY_TASK instantiates the adapters for its
// types; everything that does not depend on the types lives in task_json.cpp.
//
// Threading: pure functions, safe from any thread.
#pragma once

#include <cereal/archives/json.hpp>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <initializer_list>
#include <limits>
#include <memory>
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

namespace ferry::task_json {

// ---- which types have a JSON form

template <class T>
struct form;

template <class T>
concept container_like = requires {
  typename T::value_type;
};
template <class T>
concept pointer_like = !container_like<T> && requires {
  typename T::element_type;
};

// What a type holds, as far as its JSON form depends on it: nothing by default; the elements
// of a container (value_type, a pair for maps) or the target of a smart pointer.
template <class T>
struct held {
  static constexpr bool out = true;
  static constexpr bool in = true;
};
template <container_like T>
struct held<T> : form<std::remove_cv_t<typename T::value_type>> {};
template <pointer_like T>
struct held<T> : form<std::remove_cv_t<typename T::element_type>> {};
template <class... Ts>
struct held_all {
  static constexpr bool out = (form<std::remove_cv_t<Ts>>::out && ...);
  static constexpr bool in = (form<std::remove_cv_t<Ts>>::in && ...);
};
template <class A, class B>
struct held<std::pair<A, B>> : held_all<A, B> {};
template <class... Ts>
struct held<std::tuple<Ts...>> : held_all<Ts...> {};
template <class... Ts>
struct held<std::variant<Ts...>> : held_all<Ts...> {};

template <class T>
struct form {
  static constexpr bool out =
      std::conjunction_v<cereal::traits::is_output_serializable<T, cereal::JSONOutputArchive>,
                         std::bool_constant<held<T>::out>>;
  static constexpr bool in =
      std::conjunction_v<cereal::traits::is_input_serializable<T, cereal::JSONInputArchive>,
                         std::bool_constant<held<T>::in>>;
};

// Whether cereal's JSON archive can write / read a T.
template <class T>
inline constexpr bool writable_v = form<std::remove_cv_t<T>>::out;
template <class T>
inline constexpr bool readable_v = form<std::remove_cv_t<T>>::in;

// ---- the parts that do not depend on the types (task_json.cpp)

// Deeper nesting in an input line is refused: cereal reads a document recursively.
inline constexpr std::size_t kMaxDepth = 256;

enum class Kind : std::uint8_t {
  null,
  boolean,
  integer,
  big_unsigned,
  fraction,
  string,
  array,
  object
};

// One value of an input line as the scanner saw it (kinds and integers, for clear messages
// and range checks before cereal reads it).
struct Scanned {
  Kind kind = Kind::null;
  std::int64_t integer = 0;  // Kind::integer
  std::uint64_t big = 0;     // Kind::big_unsigned (above INT64_MAX)
};

struct LineShape {
  Scanned root;
  std::size_t size = 0;           // elements, when the root is an array
  std::vector<Scanned> elements;  // the first kMaxRecorded of them
  static constexpr std::size_t kMaxRecorded = 64;
};

// Checks that line is one JSON value nested at most kMaxDepth deep, without building it.
// Error: the parser's reason and the byte offset where it stopped.
Result<LineShape> scan_line(std::string_view line);
// "a string", "an object", ...
const char* kind_name(Kind k);
// cereal writes a value as the member "value" of a root object, over several lines: this is
// that member's value alone, on one line, with non-finite numbers as null and invalid UTF-8 in
// strings replaced by U+FFFD, so that it is always valid JSON.
Result<std::string> compact_member(std::string_view cereal_json);
// text as a JSON string.
std::string string_value(std::string_view text);
// cereal's (or rapidjson's) reason for a failed read, in words ("wants a string").
std::string explain(std::string_view what);
// A type's name as a user would write it (std::string, std::vector<long>).
std::string readable_type(const std::type_info& t);
// "(long, std::string)".
std::string type_list(std::initializer_list<std::reference_wrapper<const std::type_info>> types);

// cereal's JSON archives, made and finished in task_json.cpp: their constructors and
// destructors instantiate rapidjson's whole parser and writer, which would otherwise be
// compiled again in every source that registers a task. Both throw what cereal throws.
class JsonReader {
 public:
  // doc must outlive the reader.
  explicit JsonReader(std::string_view doc);
  ~JsonReader();
  JsonReader(const JsonReader&) = delete;
  JsonReader& operator=(const JsonReader&) = delete;
  cereal::JSONInputArchive& archive() noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class JsonWriter {
 public:
  JsonWriter();
  ~JsonWriter();
  JsonWriter(const JsonWriter&) = delete;
  JsonWriter& operator=(const JsonWriter&) = delete;
  cereal::JSONOutputArchive& archive() noexcept;
  // Ends the document; the value saved as "value", on one line (compact_member).
  Result<std::string> finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- values to JSON

template <class T>
Result<std::string> to_json(const T& value) {
  try {
    JsonWriter w;
    w.archive()(cereal::make_nvp("value", value));
    return w.finish();
  } catch (const std::exception& e) {
    return Error{Errc::invalid_argument, explain(e.what())};
  }
}

// ---- argument tuples from JSON

// cereal writes these as strings, not numbers (long long, unsigned long long, long double):
// they are left to cereal.
template <class T>
inline constexpr bool cereal_string_number_v =
    std::is_same_v<T, long double> ||
    ((std::is_same_v<T, long long> ||
      std::is_same_v<T, unsigned long long>)&&!std::is_same_v<T, std::int64_t> &&
     !std::is_same_v<T, std::uint64_t>);

// Why the scanned value cannot be a T ("" if it can, or if only cereal can tell). cereal reads
// small integers through int and casts them, so the range is checked here.
template <class T>
std::string check_scalar(const Scanned& s) {
  const std::string got = std::string(", got ") + kind_name(s.kind);
  if constexpr (std::is_same_v<T, bool>) {
    if (s.kind != Kind::boolean) return "wants true or false" + got;
  } else if constexpr (std::is_integral_v<T> && !cereal_string_number_v<T>) {
    using L = std::numeric_limits<T>;
    const std::string range =
        "an integer from " + std::to_string(+L::min()) + " to " + std::to_string(+L::max());
    // Any integer but the very largest fits a 64-bit signed parameter: no range worth naming.
    const std::string wanted =
        std::is_signed_v<T> && sizeof(T) == 8 ? std::string("an integer") : range;
    if (s.kind == Kind::integer) {
      const bool fits = std::is_signed_v<T>
                            ? s.integer >= static_cast<std::int64_t>(L::min()) &&
                                  s.integer <= static_cast<std::int64_t>(L::max())
                            : s.integer >= 0 && static_cast<std::uint64_t>(s.integer) <=
                                                    static_cast<std::uint64_t>(L::max());
      if (!fits) return "wants " + range + ", got " + std::to_string(s.integer);
    } else if (s.kind == Kind::big_unsigned) {
      if (std::is_signed_v<T> || s.big > static_cast<std::uint64_t>(L::max()))
        return "wants " + range + ", got " + std::to_string(s.big);
    } else {
      return "wants " + wanted + got;
    }
  } else if constexpr (std::is_floating_point_v<T> && !cereal_string_number_v<T>) {
    if (s.kind != Kind::integer && s.kind != Kind::big_unsigned && s.kind != Kind::fraction)
      return "wants a number" + got;
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (s.kind != Kind::string) return "wants a string" + got;
  }
  return {};
}

// Reads a line into the argument tuple Args (see the top of this file) and returns its binary
// encoding, as a task message carries it. Errors name the parameter types, the parameter and
// the reason: "not valid JSON for (long, std::string): parameter 1 (std::string): wants a
// string, got a number".
template <class... Ts>
std::string types_of(const std::tuple<Ts...>*) {
  return type_list({typeid(Ts)...});
}

// Reads parameter I of Args from ar (cereal takes unnamed values in order), once its scanned
// kind (if it was recorded) fits; returns why not, or "".
template <class Args, std::size_t I>
std::string read_parameter(cereal::JSONInputArchive& ar, Args& args, const LineShape& shape) {
  using T = std::tuple_element_t<I, Args>;
  constexpr bool alone = std::tuple_size_v<Args> == 1;
  const Scanned* scanned = alone                       ? &shape.root
                           : I < shape.elements.size() ? &shape.elements[I]
                                                       : nullptr;
  std::string why = scanned ? check_scalar<T>(*scanned) : std::string();
  if (why.empty()) {
    try {
      ar(std::get<I>(args));
      return {};
    } catch (const std::exception& e) {
      why = explain(e.what());
    }
  }
  if constexpr (alone) {
    return why;
  } else {
    return "parameter " + std::to_string(I) + " (" + readable_type(typeid(T)) + "): " + why;
  }
}

// The parameters in order, up to the first that fails (so the error names that one).
template <class Args, std::size_t... I>
std::string read_parameters(cereal::JSONInputArchive& ar, Args& args, const LineShape& shape,
                            std::index_sequence<I...>) {
  std::string why;
  (void)(... && (why = read_parameter<Args, I>(ar, args, shape)).empty());
  return why;
}

// Reads a line into the argument tuple Args (see the top of this file) and returns its binary
// encoding, as a task message carries it. Errors name the parameter types, the parameter and
// the reason: "not valid JSON for (long, std::string): parameter 1 (std::string): wants a
// string, got an integer".
template <class Args>
Result<Bytes> parse_args(std::string_view line) {
  constexpr std::size_t n = std::tuple_size_v<Args>;
  const auto fail = [](const std::string& why) {
    return Error{Errc::invalid_argument,
                 "not valid JSON for " + types_of(static_cast<const Args*>(nullptr)) + ": " + why};
  };
  auto shape = scan_line(line);
  if (!shape) return fail(shape.error().detail);
  std::string wrapped;
  std::string_view doc = line;
  if constexpr (n == 1) {
    // cereal reads unnamed values in order from a root array: the value becomes [value] (safe:
    // the scan has checked that the line is exactly one value).
    wrapped.reserve(line.size() + 2);
    wrapped.append("[").append(line).append("]");
    doc = wrapped;
  } else {
    const std::string wants =
        "wants an array of " + std::to_string(n) + " values (one per parameter), got ";
    if (shape->root.kind != Kind::array) return fail(wants + kind_name(shape->root.kind));
    if (shape->size != n) {
      return fail(wants + std::to_string(shape->size) + (shape->size == 1 ? " value" : " values"));
    }
  }
  Args args{};
  std::string why;
  try {
    JsonReader reader(doc);
    why = read_parameters(reader.archive(), args, *shape, std::make_index_sequence<n>{});
  } catch (const std::exception& e) {
    why = explain(e.what());
  }
  if (!why.empty()) return fail(why);
  return encode_value(args);
}

}  // namespace ferry::task_json
