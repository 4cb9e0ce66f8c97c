// The type-independent half of task_json.hpp: scanning input lines, compacting cereal's output,
// and wording errors. cereal's json.hpp comes first: it configures rapidjson (assertions throw,
// NaN and infinities allowed) for every translation unit alike.
#include "ferry/shared/task_json.hpp"

#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cmath>
#include <cstring>
#include <istream>
#include <optional>
#include <sstream>
#include <streambuf>
#include <utility>

#include "ferry/shared/task.hpp"

namespace ferry::task_json {
namespace {

// Iterative: a line of 16 MiB of '[' must not recurse 16 million calls deep. The other flags
// are those cereal's own parser uses (its RAPIDJSON_PARSE_DEFAULT_FLAGS), so both accept the
// same documents.
constexpr unsigned kParseFlags = rapidjson::kParseIterativeFlag |
                                 rapidjson::kParseFullPrecisionFlag |
                                 rapidjson::kParseNanAndInfFlag;

// Records the root and its elements' kinds and refuses nesting beyond kMaxDepth.
class ShapeHandler : public rapidjson::BaseReaderHandler<rapidjson::UTF8<>, ShapeHandler> {
 public:
  explicit ShapeHandler(LineShape& shape) : shape_(shape) {}

  bool Null() { return value({Kind::null}); }
  bool Bool(bool) { return value({Kind::boolean}); }
  bool Int(int i) { return value({Kind::integer, i}); }
  bool Uint(unsigned u) { return value({Kind::integer, u}); }
  bool Int64(std::int64_t i) { return value({Kind::integer, i}); }
  bool Uint64(std::uint64_t u) {
    if (u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      return value({Kind::integer, static_cast<std::int64_t>(u)});
    return value({Kind::big_unsigned, 0, u});
  }
  bool Double(double) { return value({Kind::fraction}); }
  bool RawNumber(const char*, rapidjson::SizeType, bool) { return value({Kind::fraction}); }
  bool String(const char* s, rapidjson::SizeType n, bool) {
    return whole(s, n) && value({Kind::string});
  }
  bool StartObject() { return value({Kind::object}) && enter(); }
  bool Key(const char* s, rapidjson::SizeType n, bool) { return whole(s, n); }
  bool EndObject(rapidjson::SizeType) { return leave(); }
  bool StartArray() { return value({Kind::array}) && enter(); }
  bool EndArray(rapidjson::SizeType) { return leave(); }

  bool too_deep() const { return too_deep_; }
  bool has_nul() const { return has_nul_; }

 private:
  // cereal reads a string through its char*, so it would end at a "\u0000": refused instead.
  bool whole(const char* s, rapidjson::SizeType n) {
    has_nul_ = std::memchr(s, 0, n) != nullptr;
    return !has_nul_;  // false stops the parse
  }
  bool value(Scanned s) {
    if (depth_ == 0) {
      shape_.root = s;
    } else if (depth_ == 1 && shape_.root.kind == Kind::array) {
      if (shape_.elements.size() < LineShape::kMaxRecorded) shape_.elements.push_back(s);
      ++shape_.size;
    }
    return true;
  }
  bool enter() {
    if (++depth_ <= kMaxDepth) return true;
    too_deep_ = true;
    return false;  // stops the parse
  }
  bool leave() {
    --depth_;
    return true;
  }

  LineShape& shape_;
  std::size_t depth_ = 0;
  bool too_deep_ = false;
  bool has_nul_ = false;
};

// Appends s with each invalid UTF-8 sequence replaced by U+FFFD, so the output stays JSON.
bool valid_utf8(std::string_view s, std::size_t& i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  std::size_t len = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the second byte's range (excludes overlongs, surrogates)
  if (c < 0x80) {
    ++i;
    return true;
  } else if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return false;
  }
  if (i + len > s.size() || byte(i + 1) < lo || byte(i + 1) > hi) return false;
  for (std::size_t k = 2; k < len; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return false;
  }
  i += len;
  return true;
}

std::string sanitized(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t start = i;
    if (valid_utf8(s, i)) {
      out.append(s.substr(start, i - start));
    } else {
      out.append("\xEF\xBF\xBD");
      ++i;
    }
  }
  return out;
}

bool is_valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    if (!valid_utf8(s, i)) return false;
  }
  return true;
}

using Writer = rapidjson::Writer<rapidjson::StringBuffer, rapidjson::UTF8<>, rapidjson::UTF8<>,
                                 rapidjson::CrtAllocator, rapidjson::kWriteNoFlags>;

// Passes cereal's document to a compact writer, leaving out the root object and its one key.
class MemberHandler : public rapidjson::BaseReaderHandler<rapidjson::UTF8<>, MemberHandler> {
 public:
  explicit MemberHandler(Writer& w) : w_(w) {}

  bool Null() { return w_.Null(); }
  bool Bool(bool b) { return w_.Bool(b); }
  bool Int(int i) { return w_.Int(i); }
  bool Uint(unsigned u) { return w_.Uint(u); }
  bool Int64(std::int64_t i) { return w_.Int64(i); }
  bool Uint64(std::uint64_t u) { return w_.Uint64(u); }
  bool Double(double d) { return std::isfinite(d) ? w_.Double(d) : w_.Null(); }
  bool String(const char* s, rapidjson::SizeType n, bool) { return text(s, n, false); }
  bool StartObject() { return depth_++ == 0 || w_.StartObject(); }
  bool Key(const char* s, rapidjson::SizeType n, bool) { return depth_ == 1 || text(s, n, true); }
  bool EndObject(rapidjson::SizeType n) { return --depth_ == 0 || w_.EndObject(n); }
  bool StartArray() {
    ++depth_;
    return w_.StartArray();
  }
  bool EndArray(rapidjson::SizeType n) {
    --depth_;
    return w_.EndArray(n);
  }

 private:
  bool text(const char* s, rapidjson::SizeType n, bool key) {
    const std::string_view v(s, n);
    if (is_valid_utf8(v)) return key ? w_.Key(s, n) : w_.String(s, n);
    const std::string clean = sanitized(v);
    const auto size = static_cast<rapidjson::SizeType>(clean.size());
    return key ? w_.Key(clean.data(), size) : w_.String(clean.data(), size);
  }

  Writer& w_;
  std::size_t depth_ = 0;
};

std::string parse_error(const rapidjson::ParseResult& r) {
  std::string why = rapidjson::GetParseError_En(r.Code());
  if (!why.empty() && why.back() == '.') why.pop_back();
  return why + " (at byte " + std::to_string(r.Offset()) + ")";
}

// Drops ", NAME<...>" (a defaulted template argument) from a demangled name.
void drop_argument(std::string& s, std::string_view name) {
  const std::string marker = ", " + std::string(name) + "<";
  for (auto at = s.find(marker); at != std::string::npos; at = s.find(marker, at)) {
    std::size_t end = at + marker.size();
    for (int open = 1; end < s.size() && open > 0; ++end) {
      if (s[end] == '<') ++open;
      if (s[end] == '>') --open;
    }
    // "vector<long, std::allocator<long> >": the space before the closing '>' goes too.
    if (end + 1 < s.size() && s[end] == ' ' && s[end + 1] == '>') ++end;
    s.erase(at, end - at);
  }
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  for (auto at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
}

// A std::streambuf reading from memory, for cereal's std::istream interface.
class ViewBuf : public std::streambuf {
 public:
  explicit ViewBuf(std::string_view s) {
    char* p = const_cast<char*>(s.data());  // read only: the get area is never written
    setg(p, p, p + s.size());
  }
};

}  // namespace

struct JsonReader::Impl {
  explicit Impl(std::string_view doc) : buf(doc), stream(&buf), archive(stream) {}
  ViewBuf buf;
  std::istream stream;
  cereal::JSONInputArchive archive;
};

JsonReader::JsonReader(std::string_view doc) : impl_(std::make_unique<Impl>(doc)) {}
JsonReader::~JsonReader() = default;
cereal::JSONInputArchive& JsonReader::archive() noexcept {
  return impl_->archive;
}

struct JsonWriter::Impl {
  std::ostringstream stream;
  std::optional<cereal::JSONOutputArchive> archive;
};

JsonWriter::JsonWriter() : impl_(std::make_unique<Impl>()) {
  impl_->archive.emplace(impl_->stream, cereal::JSONOutputArchive::Options::NoIndent());
}
JsonWriter::~JsonWriter() = default;
cereal::JSONOutputArchive& JsonWriter::archive() noexcept {
  return *impl_->archive;
}
Result<std::string> JsonWriter::finish() {
  impl_->archive.reset();  // its destructor closes the document
  return compact_member(impl_->stream.str());
}

Result<LineShape> scan_line(std::string_view line) {
  LineShape shape;
  ShapeHandler handler(shape);
  rapidjson::MemoryStream in(line.data(), line.size());
  rapidjson::Reader reader;
  const rapidjson::ParseResult r = reader.Parse<kParseFlags>(in, handler);
  if (handler.too_deep()) {
    return Error{Errc::invalid_argument,
                 "nested deeper than " + std::to_string(kMaxDepth) + " levels"};
  }
  if (handler.has_nul()) {
    return Error{Errc::invalid_argument,
                 "a string holds \\u0000, where cereal's JSON archive would cut it short"};
  }
  if (r.IsError()) return Error{Errc::invalid_argument, parse_error(r)};
  return shape;
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::null:
      return "null";
    case Kind::boolean:
      return "true or false";
    case Kind::integer:
    case Kind::big_unsigned:
      return "an integer";
    case Kind::fraction:
      return "a number with a fraction or an exponent";
    case Kind::string:
      return "a string";
    case Kind::array:
      return "an array";
    case Kind::object:
      return "an object";
  }
  return "a value";
}

Result<std::string> compact_member(std::string_view cereal_json) {
  rapidjson::StringBuffer buffer;
  Writer writer(buffer);
  MemberHandler handler(writer);
  rapidjson::MemoryStream in(cereal_json.data(), cereal_json.size());
  rapidjson::Reader reader;
  const rapidjson::ParseResult r = reader.Parse<kParseFlags>(in, handler);
  if (r.IsError()) {
    return Error{Errc::malformed_payload,
                 "cereal's JSON output did not parse back: " + parse_error(r)};
  }
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string string_value(std::string_view text) {
  rapidjson::StringBuffer buffer;
  Writer writer(buffer);
  const std::string clean = sanitized(text);
  writer.String(clean.data(), static_cast<rapidjson::SizeType>(clean.size()));
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string explain(std::string_view what) {
  // rapidjson reports a value of the wrong kind as a failed assertion in its getter.
  static constexpr std::pair<std::string_view, std::string_view> kGetters[] = {
      {"IsBool()", "wants true or false"},
      {"& kIntFlag", "wants an integer from -2147483648 to 2147483647"},
      {"& kUintFlag", "wants an integer from 0 to 4294967295"},
      {"& kInt64Flag", "wants an integer"},
      {"& kUint64Flag", "wants an integer from 0 to 18446744073709551615"},
      {"IsNumber()", "wants a number"},
      {"IsString()", "wants a string"},
      {"IsNull()", "wants null"},
      // cereal enters anything that is not an array as an object.
      {"IsObject()", "wants an object or an array"},
      {"IsArray()", "wants an array"},
  };
  if (what.find("rapidjson internal assertion failure") != std::string_view::npos) {
    for (const auto& [expr, words] : kGetters) {
      if (what.find(expr) != std::string_view::npos) return std::string(words);
    }
  }
  if (what == "No more objects in input") return "too few values (an array or object ends early)";
  constexpr std::string_view kNvp = "JSON Parsing failed - provided NVP (";
  if (what.rfind(kNvp, 0) == 0) {
    const auto name = what.substr(kNvp.size(), what.find(')', kNvp.size()) - kNvp.size());
    return "no member \"" + std::string(name) + "\"";
  }
  return std::string(what);
}

std::string readable_type(const std::type_info& t) {
  std::string s = task_detail::type_name_of(t);
  for (std::string_view arg : {"std::char_traits", "std::allocator", "std::less", "std::hash",
                               "std::equal_to", "std::default_delete"})
    drop_argument(s, arg);
  replace_all(s, "std::__cxx11::", "std::");
  replace_all(s, "(anonymous namespace)::", "");
  replace_all(s, "std::basic_string<char>", "std::string");
  return s;
}

std::string type_list(std::initializer_list<std::reference_wrapper<const std::type_info>> types) {
  std::string s = "(";
  for (const auto& t : types) {
    if (s.size() > 1) s += ", ";
    s += readable_type(t.get());
  }
  return s + ")";
}

}  // namespace ferry::task_json
