// Encodes a protocol message into a frame and decodes it back with the installed ferry.
#include <ferry/shared/messages.hpp>
#include <iostream>

int main() {
  ferry::msg::Hello hello;
  hello.host = "downstream";
  hello.slots = 4;
  const ferry::Frame f = ferry::make_frame(ferry::MessageKind::hello, hello);
  const ferry::Bytes wire = ferry::encode_frame(f.header, f.payload);
  auto view = ferry::decode_frame(wire);
  if (!view) {
    std::cerr << view.error().message() << "\n";
    return 1;
  }
  auto back = ferry::msg::decode<ferry::msg::Hello>(*view, ferry::MessageKind::hello);
  if (!back || back->host != "downstream" || back->slots != 4) return 1;
  std::cout << "round trip ok\n";
  return 0;
}
