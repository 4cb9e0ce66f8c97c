// Task entries, no processes (the function is called here): a chunk's batch result as
// invoke_batch encodes it, and the JSON adapters that map --input json and --json use.
#include <doctest/doctest.h>

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "ferry/shared/task.hpp"

using namespace ferry;

namespace {

Bytes sized(std::int64_t n) {
  return Bytes(static_cast<std::size_t>(n), 7);
}

bool is_even(std::int64_t n) {
  if (n < 0) throw std::invalid_argument("negative");
  return n % 2 == 0;
}

// Runs sized over ns as one chunk, appending to a reply that already holds a 4-byte header.
std::vector<ItemText> run_chunk(const std::vector<std::int64_t>& ns, std::size_t max_out,
                                BatchMode& mode, std::size_t& out_size) {
  const TaskEntry e = task_detail::make_entry("sized", &sized);
  std::vector<std::tuple<std::int64_t>> args;
  for (auto n : ns)
    args.emplace_back(n);
  const Bytes in = encode_value(args);
  Bytes out{1, 2, 3, 4};
  e.invoke_batch(e.fn, in, out, max_out);
  out_size = out.size();
  const ByteView batch = ByteView(out).subspan(4);
  mode = static_cast<BatchMode>(batch[0]);
  return e.format_batch(batch).value();
}

}  // namespace

TEST_SUITE("shared.task") {
  TEST_CASE("a task returning bool registers, runs alone and in a chunk with a failing item") {
    const TaskEntry e = task_detail::make_entry("is_even", &is_even);
    CHECK(e.signature == "(long) -> bool");
    Bytes one;
    e.invoke(e.fn, encode_value(std::tuple<std::int64_t>{4}), one);
    CHECK(decode_value<bool>(one).value() == true);
    const Bytes in = encode_value(std::vector<std::tuple<std::int64_t>>{{1}, {-1}, {2}});
    Bytes out;
    e.invoke_batch(e.fn, in, out, 1 << 20);
    const auto items = e.format_batch(out).value();
    REQUIRE(items.size() == 3);
    CHECK(items[0].text == "false");
    CHECK_FALSE(items[1].ok);
    CHECK(items[2].text == "true");
  }

  TEST_CASE("a chunk that fits is sent as values only") {
    BatchMode mode{};
    std::size_t size = 0;
    auto items = run_chunk({10, 20}, 1000, mode, size);
    CHECK(mode == BatchMode::all_ok);
    REQUIRE(items.size() == 2);
    CHECK(items[0].ok);
    CHECK(items[0].text.rfind("10 bytes", 0) == 0);
    CHECK(items[1].text.rfind("20 bytes", 0) == 0);
    CHECK(size <= 1000);
  }

  TEST_CASE("an item too large for any frame becomes a FrameTooLarge item error") {
    BatchMode mode{};
    std::size_t size = 0;
    auto items = run_chunk({10, 100000, 20}, 50000, mode, size);
    CHECK(mode == BatchMode::mixed);
    REQUIRE(items.size() == 3);
    CHECK(items[0].ok);
    CHECK(items[0].text.rfind("10 bytes", 0) == 0);
    CHECK_FALSE(items[1].ok);
    CHECK(items[1].text.rfind("ferry::FrameTooLarge: ", 0) == 0);
    // The value's encoding (a length, then the bytes) and the limit.
    CHECK(items[1].text.find("100008 bytes") != std::string::npos);
    CHECK(items[1].text.find("limit 50000 bytes") != std::string::npos);
    CHECK(items[2].ok);
    CHECK(size <= 50000);
  }

  TEST_CASE("a chunk too large together loses its largest values first, until it fits") {
    BatchMode mode{};
    std::size_t size = 0;
    // 30,000 and 25,000 fit alone; with the others they do not; dropping 30,000 is enough.
    auto items = run_chunk({10, 25000, 30000, 20}, 50000, mode, size);
    CHECK(mode == BatchMode::mixed);
    REQUIRE(items.size() == 4);
    CHECK(items[0].ok);
    CHECK(items[1].ok);
    CHECK(items[1].text.rfind("25000 bytes", 0) == 0);
    CHECK_FALSE(items[2].ok);
    CHECK(items[2].text.find("together") != std::string::npos);
    CHECK(items[2].text.find("30008 bytes") != std::string::npos);
    CHECK(items[2].text.find("limit 50000 bytes") != std::string::npos);
    CHECK(items[3].ok);
    CHECK(size <= 50000);
  }

  TEST_CASE("values smaller than their error are kept even when the chunk cannot fit") {
    BatchMode mode{};
    std::size_t size = 0;
    // Each fits alone (4 + 9 + 9 + 38 = 60 bytes for the largest), not together.
    auto items = run_chunk({10, 20, 30}, 60, mode, size);
    REQUIRE(items.size() == 3);
    for (auto& it : items)
      CHECK(it.ok);
    CHECK(size > 60);  // the worker fails such a chunk as a whole
  }
}

// ---- JSON adapters (task_json.hpp): what `map --input json` reads and `--json` writes.

namespace {

struct Point {
  std::int64_t x = 0;
  std::int64_t y = 0;
  template <class A>
  void serialize(A& ar) {
    ar(CEREAL_NVP(x), CEREAL_NVP(y));
  }
};

// Members without names: cereal calls them value0, value1, ... and reads them in order.
struct Pair {
  int a = 0;
  std::string b;
  template <class A>
  void serialize(A& ar) {
    ar(a, b);
  }
};

// Serializable only by ferry's binary archives: no JSON form, and no build error either.
struct BinaryOnly {
  int v = 0;
  void save(BufferOutputArchive& ar) const { ar(v); }
  void load(BoundedInputArchive& ar) { ar(v); }
};

Point mirror(Point p) {
  return {-p.x, -p.y};
}
Point shift(Point p, std::int64_t dx) {
  return {p.x + dx, p.y};
}
std::string label(int n, std::string s) {
  return s + std::to_string(n);
}
std::int8_t small(std::int8_t v) {
  return v;
}
Pair swap_pair(Pair p) {
  return p;
}
std::int64_t nothing() {
  return 7;
}
void ignore(std::int64_t) {}
double halve(double x) {
  return x / 2;
}
BinaryOnly binary_only(BinaryOnly b) {
  return b;
}
std::vector<BinaryOnly> binary_only_vector(std::vector<BinaryOnly> b) {
  return b;
}
std::int64_t takes_binary_only(std::int64_t, BinaryOnly b) {
  return b.v;
}
std::string echo(std::string s) {
  if (s == "throw") throw std::runtime_error("asked to throw");
  return s;
}

// Runs a task as a worker would: JSON line -> arguments -> call -> result as JSON.
std::string run_json(const TaskEntry& e, std::string_view line) {
  REQUIRE((e.parse_json != nullptr));
  auto args = e.parse_json(line);
  REQUIRE_MESSAGE(args, args.error().detail);
  Bytes out;
  e.invoke(e.fn, *args, out);
  auto json = e.format_json(out);
  REQUIRE_MESSAGE(json, json.error().detail);
  return *json;
}

std::string json_error(const TaskEntry& e, std::string_view line) {
  REQUIRE((e.parse_json != nullptr));
  auto args = e.parse_json(line);
  REQUIRE_FALSE(args);
  return args.error().detail;
}

}  // namespace

TEST_SUITE("shared.task.json") {
  TEST_CASE("a struct parameter is an object with its cereal names, in any order") {
    const TaskEntry e = task_detail::make_entry("mirror", &mirror);
    CHECK(run_json(e, R"({"x": 1, "y": -2})") == R"({"x":-1,"y":2})");
    CHECK(run_json(e, R"({"y": 5, "x": 4, "extra": true})") == R"({"x":-4,"y":-5})");
    // The text form of a struct result is its JSON too.
    Bytes out;
    e.invoke(e.fn, encode_value(std::tuple<Point>{{3, 4}}), out);
    CHECK(e.format_result(out) == R"({"x":-3,"y":-4})");
  }

  TEST_CASE("unnamed members are value0, value1, ... and are read in order") {
    const TaskEntry e = task_detail::make_entry("swap_pair", &swap_pair);
    CHECK(run_json(e, R"({"value0": 1, "value1": "b"})") == R"({"value0":1,"value1":"b"})");
  }

  TEST_CASE("several parameters are a JSON array with one value each") {
    const TaskEntry shift_e = task_detail::make_entry("shift", &shift);
    CHECK(run_json(shift_e, R"([{"x": 1, "y": 2}, 10])") == R"({"x":11,"y":2})");
    const TaskEntry label_e = task_detail::make_entry("label", &label);
    CHECK(run_json(label_e, R"([3, "abc"])") == R"("abc3")");
    const TaskEntry none = task_detail::make_entry("nothing", &nothing);
    CHECK(run_json(none, "[]") == "7");
  }

  TEST_CASE("one scalar parameter is the value itself, and results are real JSON values") {
    const TaskEntry e = task_detail::make_entry("halve", &halve);
    CHECK(run_json(e, "3") == "1.5");
    CHECK(run_json(e, "  0.25 ") == "0.125");
    // JSON has no NaN: cereal reads it, the output writes null.
    CHECK(run_json(e, "NaN") == "null");
    const TaskEntry v = task_detail::make_entry("ignore", &ignore);
    CHECK(run_json(v, "1") == "null");
    const TaskEntry s = task_detail::make_entry("echo", &echo);
    CHECK(run_json(s, R"("a \"quoted\"\nline")") == R"("a \"quoted\"\nline")");
    // Invalid UTF-8 in a string result is replaced, so the output is still JSON.
    Bytes out;
    s.invoke(s.fn, encode_value(std::tuple<std::string>{"a\xff"}), out);
    CHECK(s.format_json(out).value() == "\"a\xEF\xBF\xBD\"");
    // Bytes print as their summary, as in text.
    const TaskEntry b = task_detail::make_entry("sized", &sized);
    CHECK(run_json(b, "3").rfind("\"3 bytes fnv1a=", 0) == 0);
  }

  TEST_CASE("bad lines are refused with the parameter types and the reason") {
    const TaskEntry e = task_detail::make_entry("label", &label);
    const std::string types = "not valid JSON for (int, std::string): ";
    CHECK(json_error(e, R"([3 "abc"])") ==
          types + "Missing a comma or ']' after an array element (at byte 3)");
    CHECK(json_error(e, "") == types + "The document is empty (at byte 0)");
    CHECK(json_error(e, "[3, \"a\"] 4") ==
          types + "The document root must not be followed by other values (at byte 9)");
    CHECK(json_error(e, "[3]") ==
          types + "wants an array of 2 values (one per parameter), got 1 value");
    CHECK(json_error(e, R"({"a": 3})") ==
          types + "wants an array of 2 values (one per parameter), got an object");
    CHECK(json_error(e, R"(["3", "abc"])") ==
          types +
              "parameter 0 (int): wants an integer from -2147483648 to 2147483647, got a "
              "string");
    CHECK(json_error(e, "[3, 4]") == types +
                                         "parameter 1 (std::string): wants a string, got an "
                                         "integer");
    CHECK(json_error(e, "[3.5, \"x\"]") ==
          types +
              "parameter 0 (int): wants an integer from -2147483648 to 2147483647, got a "
              "number with a fraction or an exponent");
    CHECK(json_error(e, "[4294967296, \"x\"]") ==
          types +
              "parameter 0 (int): wants an integer from -2147483648 to 2147483647, got "
              "4294967296");
    // cereal would cast 300 into an int8_t: the range is checked first.
    const TaskEntry s = task_detail::make_entry("small", &small);
    CHECK(json_error(s, "300") ==
          "not valid JSON for (signed char): wants an integer from -128 to 127, got 300");
    const TaskEntry m = task_detail::make_entry("mirror", &mirror);
    CHECK(json_error(m, R"({"x": 1})") == "not valid JSON for (Point): no member \"y\"");
    CHECK(json_error(m, R"({"x": 1, "y": "2"})") == "not valid JSON for (Point): wants an integer");
    CHECK(json_error(m, "[1, 2]") == "not valid JSON for (Point): no member \"x\"");
    CHECK(json_error(m, "7") == "not valid JSON for (Point): wants an object or an array");
  }

  TEST_CASE("a string holding a NUL character is refused rather than cut short") {
    const TaskEntry e = task_detail::make_entry("echo", &echo);
    CHECK(json_error(e, R"("a\u0000b")") ==
          "not valid JSON for (std::string): a string holds \\u0000, where cereal's JSON archive "
          "would cut it short");
    CHECK(json_error(e, R"({"a\u0000": 1})").find("\\u0000") != std::string::npos);
    // Written out, a NUL is kept.
    Bytes out;
    e.invoke(e.fn, encode_value(std::tuple<std::string>{std::string("a\0b", 3)}), out);
    CHECK(e.format_json(out).value() == R"("a\u0000b")");
  }

  TEST_CASE("nesting beyond the limit is refused without recursing") {
    const TaskEntry e = task_detail::make_entry("echo", &echo);
    const std::string deep(1'000'000, '[');
    CHECK(json_error(e, deep) == "not valid JSON for (std::string): nested deeper than 256 levels");
    const std::string ok = std::string(255, '[') + std::string(255, ']');
    CHECK(json_error(e, ok) == "not valid JSON for (std::string): wants a string, got an array");
  }

  TEST_CASE(
      "a type cereal's JSON archive cannot handle leaves the adapters null, not a build "
      "error") {
    const TaskEntry e = task_detail::make_entry("binary_only", &binary_only);
    CHECK((e.parse_json == nullptr));
    CHECK((e.format_json == nullptr));
    CHECK((e.format_json_batch == nullptr));
    CHECK(e.no_json.find("parameter 0 (BinaryOnly) has no JSON form") != std::string::npos);
    CHECK(e.no_json.find("the result (BinaryOnly) has no JSON form") != std::string::npos);
    // The task itself still runs, and text output says what it cannot show.
    Bytes out;
    e.invoke(e.fn, encode_value(std::tuple<BinaryOnly>{{5}}), out);
    CHECK(decode_value<BinaryOnly>(out).value().v == 5);
    CHECK(e.format_result(out) == "<value of (anonymous namespace)::BinaryOnly>");
    // Inside a container too (cereal's own trait says yes to any std::vector).
    const TaskEntry v = task_detail::make_entry("binary_only_vector", &binary_only_vector);
    CHECK((v.parse_json == nullptr));
    CHECK((v.format_json == nullptr));
    CHECK(v.no_json.find("std::vector<BinaryOnly>") != std::string::npos);
    // What standard types hold counts, each way.
    static_assert(task_json::readable_v<std::vector<Point>> && task_json::writable_v<Point>);
    static_assert(task_json::writable_v<std::map<std::string, std::vector<std::int64_t>>>);
    static_assert(!task_json::writable_v<std::optional<BinaryOnly>>);
    static_assert(!task_json::readable_v<std::map<std::string, BinaryOnly>>);
    static_assert(!task_json::writable_v<std::pair<int, BinaryOnly>>);
    static_assert(!task_json::readable_v<std::tuple<Point, std::vector<BinaryOnly>>>);
    // A readable result is still written when only a parameter is not readable.
    const TaskEntry t = task_detail::make_entry("takes_binary_only", &takes_binary_only);
    CHECK((t.parse_json == nullptr));
    CHECK((t.format_json != nullptr));
    CHECK(t.no_json == "parameter 1 (BinaryOnly) has no JSON form");
  }

  TEST_CASE("a chunk's results as JSON: values as JSON, failures as their error text") {
    const TaskEntry e = task_detail::make_entry("echo", &echo);
    std::vector<Bytes> items;
    for (const char* line : {R"("a")", R"("throw")", R"("c")"})
      items.push_back(e.parse_json(line).value());
    // A chunk is the items' encodings joined, as if the vector had been encoded at once.
    const Bytes chunk = encode_sequence(items);
    CHECK(chunk == encode_value(std::vector<std::tuple<std::string>>{{"a"}, {"throw"}, {"c"}}));
    Bytes out;
    e.invoke_batch(e.fn, chunk, out, 1 << 20);
    auto r = e.format_json_batch(out);
    REQUIRE(r);
    REQUIRE(r->size() == 3);
    CHECK((*r)[0].ok);
    CHECK((*r)[0].text == R"("a")");
    CHECK_FALSE((*r)[1].ok);
    CHECK((*r)[1].text == "std::runtime_error: asked to throw");
    CHECK((*r)[2].text == R"("c")");
  }
}
