// The codec as a user's small TU uses it, compiled like user_program.cpp (tests/CMakeLists.txt)
// and kept apart from it: whether GCC inlines the encoder into its caller, which is where its
// flow-based warnings look, depends on what else the TU instantiates. This shape, constants
// encoded into fresh buffers several times in a row, made GCC 12 at -O3 report a bogus
// -Wstringop-overflow inside archive.hpp (BufferOutputArchive::saveBinary has the fix and says
// why), so it stays here as the case that catches it coming back.
#include <ferry/ferry.hpp>

#include <cstdint>
#include <iostream>
#include <string>
#include <tuple>

namespace {

void emit(const ferry::Bytes& b) {
  std::cout.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

}  // namespace

int main() {
  emit(ferry::encode_value(std::tuple<std::int64_t>{4}));
  emit(ferry::encode_value(std::int64_t{16}));
  emit(ferry::encode_value(std::uint8_t{16}));
  emit(ferry::encode_value(std::string("abc")));
  ferry::Bytes b;
  ferry::encode_into(b, std::uint32_t{1}, std::uint64_t{1} << 40);
  emit(b);
  return 0;
}
