// Writes the seed corpus for fuzz_frame: one valid frame per message kind plus a few
// classic malformed shapes. Run: fuzz_make_seeds tests/fuzz/corpus/frame
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "ferry/shared/messages.hpp"

using namespace ferry;

static void write(const std::string& dir, const std::string& name, const Bytes& b) {
  std::ofstream out(dir + "/" + name, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

static void frame(const std::string& dir, const std::string& name, const Frame& f) {
  write(dir, name, encode_frame(f.header, f.payload));
}

template <class M>
static void frame(const std::string& dir, const std::string& name, MessageKind k, const M& m) {
  frame(dir, name, make_frame(k, m, 7));
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_make_seeds DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  frame(dir, "hello", MessageKind::hello, msg::Hello{kProtocolVersion, 1, "h", "n", 2, 3});
  frame(dir, "welcome", MessageKind::welcome,
        msg::Welcome{1,
                     "1-2",
                     500,
                     2500,
                     msg::Welcome::kNoFunction,
                     {},
                     {0, 1, 2},
                     1 << 20,
                     "ferry.1-2.res1-w1-"});
  frame(dir, "offer", MessageKind::offer,
        msg::Offer{{{"square", "(long) -> long", 42}, {"crash", "(int) -> void", 7}}});
  frame(dir, "reject", MessageKind::reject, msg::Reject{"registry mismatch"});
  frame(dir, "task",
        msg::make_task_frame({1, 2, false}, encode_value(std::tuple<std::int64_t>{4}), 7));
  frame(dir, "task-batch",
        msg::make_task_frame({1, 2, true},
                             encode_value(std::vector<std::tuple<std::int64_t>>{{1}, {2}}), 7));
  frame(dir, "result", msg::make_result_frame({1}, encode_value(std::int64_t{16}), 7));
  frame(dir, "task-object",
        msg::make_task_frame({1, 2, false}, msg::ObjectHandle{"ferry.1-2.arg-1", 1 << 21}, 7));
  frame(dir, "result-object",
        msg::make_result_frame({1}, msg::ObjectHandle{"ferry.1-2.res1-w1-1", 1 << 21}, 7));
  frame(dir, "error", MessageKind::error, msg::TaskError{1, "E", "what", 3, "h", "#0"});
  frame(dir, "heartbeat", MessageKind::heartbeat, msg::Heartbeat{9});
  frame(dir, "cancel", MessageKind::cancel, msg::Cancel{});
  frame(dir, "shutdown", MessageKind::shutdown, msg::Shutdown{true});
  frame(dir, "log", MessageKind::log, msg::Log{1, "a line"});
  // An Error whose type string claims 2^40 bytes.
  Bytes p;
  encode_into(p, std::uint32_t{1}, std::uint64_t{1} << 40);
  p.push_back(0);
  FrameHeader h;
  h.kind = MessageKind::error;
  write(dir, "error-huge-length", encode_frame(h, p));
  // A Task whose header (attempt, function, batch) is cut short.
  p.clear();
  encode_into(p, std::uint32_t{1}, std::uint16_t{2});
  h.kind = MessageKind::task;
  write(dir, "task-short-header", encode_frame(h, p));
  // A header that declares more payload than arrives.
  h.length = 1000;
  auto hb = encode_header(h);
  write(dir, "truncated", Bytes(hb.begin(), hb.end()));
  std::puts("seeds written");
  return 0;
}
