// libFuzzer target over the frame decoder: header checks, whole-frame parsing and every
// protocol message's bounded payload decoding. Any crash, hang, sanitizer report or
// unbounded allocation is a bug; errors are the expected outcome for most inputs.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "ferry/shared/messages.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const ferry::ByteView in(data, size);
  // Small maximum so length checks are exercised without huge inputs.
  constexpr std::size_t kMax = 1 << 20;
  auto h = ferry::decode_header(in, kMax);
  auto f = ferry::decode_frame(in, kMax);
  if (f) {
    if (!h) std::abort();  // a frame that parses must have a header that parses
    (void)ferry::msg::validate_payload(*f);
  }
  // The payload decoders also see raw bytes directly, as if framing had been skipped.
  ferry::FrameView raw{ferry::FrameHeader{}, in};
  for (std::uint8_t k = 1; k <= static_cast<std::uint8_t>(ferry::MessageKind::last_); ++k) {
    raw.header.kind = static_cast<ferry::MessageKind>(k);
    (void)ferry::msg::validate_payload(raw);
  }
  return 0;
}
