// A user's program as a downstream build compiles it: <ferry/ferry.hpp> and nothing private.
// ctest compiles it with -Wall -Wextra -Werror (-O2 and -O3: the template code in the headers
// is instantiated and inlined here, where GCC's flow-based warnings see it) and never runs it,
// so a warning that ferry's headers cause in users' builds fails the suite (tests/CMakeLists.txt,
// public_headers_warning_free_*). It touches each kind of header template a user instantiates:
// task registration and invocation, pool calls and futures, the codec, typed channels, queues
// and synchronised values.
#include <ferry/ferry.hpp>

#include <cstdint>
#include <iostream>
#include <map>
#include <numeric>
#include <ranges>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace {

struct Point {
  std::int32_t x = 0;
  double y = 0;
  std::string label;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(x, y, label);
  }
};

}  // namespace

// An actor: state in a process of its own.
class Tally {
 public:
  explicit Tally(std::string name) : name_(std::move(name)) {}
  std::int64_t add(std::int64_t k) { return total_ += k; }
  std::string report() const { return name_ + ": " + std::to_string(total_); }

 private:
  std::string name_;
  std::int64_t total_ = 0;
};
FERRY_ACTOR(Tally, add, report);
FERRY_ACTOR_NEW(Tally, std::string);  // as a task library for ferry-worker would

std::int64_t count_below(std::int64_t n) {
  return n > 0 ? n - 1 : 0;
}
FERRY_TASK(count_below);
std::uint8_t low_byte(std::uint32_t v) {
  return static_cast<std::uint8_t>(v & 0xffu);
}
FERRY_TASK(low_byte);
std::string shout(std::string s, int times) {
  std::string out;
  for (int i = 0; i < times; ++i)
    out += s;
  return out;
}
FERRY_TASK(shout);
ferry::Bytes reversed(ferry::Bytes b) {
  return {b.rbegin(), b.rend()};
}
FERRY_TASK(reversed);
Point moved(Point p, double dy) {
  p.y += dy;
  return p;
}
FERRY_TASK(moved);
std::map<std::string, int> tally(std::vector<std::string> words) {
  std::map<std::string, int> out;
  for (auto& w : words)
    ++out[w];
  return out;
}
FERRY_TASK(tally);
void note(int) {}
FERRY_TASK(note);
int answer() {
  return 42;
}
FERRY_TASK(answer);

int main(int argc, char** argv) {
  ferry::init(argc, argv);

  const ferry::Bytes one = ferry::encode_value(std::tuple<std::int64_t>{4});
  const ferry::Bytes two = ferry::encode_value(std::uint8_t{7});
  ferry::Bytes three;
  ferry::encode_into(three, std::uint32_t{1}, std::uint64_t{1} << 40, std::string("x"));
  const auto back = ferry::decode_value<std::tuple<std::int64_t>>(one);
  const auto small = ferry::decode_value<std::uint8_t>(two);
  const ferry::Frame frame = ferry::make_frame(ferry::MessageKind::data, Point{1, 2.5, "p"});
  const auto point = ferry::decode_value<Point>(frame.payload);

  ferry::Pool pool({.workers = 2, .transport = ferry::Transport::shm});
  auto f = pool.submit(count_below, std::int64_t{1000});
  auto g = pool.submit(low_byte, 0x1234u);
  auto h = pool.submit(reversed, ferry::Bytes{1, 2, 3});
  auto p = pool.submit(moved, Point{3, 1.0, "q"}, 0.5);
  auto t = pool.submit(tally, std::vector<std::string>{"a", "b", "a"});
  auto n = pool.submit(note, 1);
  auto a = pool.submit(answer);
  if (auto maybe = pool.try_submit(count_below, std::int64_t{5})) (void)maybe->get();
  const std::string s = pool.apply(shout, std::string("ab"), 3);
  const auto counts = pool.map(count_below, std::views::iota(std::int64_t{0}, std::int64_t{100}));
  const auto strings =
      pool.starmap(shout, std::vector<std::tuple<std::string, int>>{{"x", 2}, {"y", 1}}, 1);
  std::int64_t streamed = 0;
  std::vector<std::int64_t> inputs{10, 20, 30};
  for (auto& [index, value] : pool.imap_unordered(count_below, inputs))
    streamed += value;
  const std::int64_t sum =
      pool.map_reduce(count_below, inputs, std::int64_t{0}, std::plus<std::int64_t>{});
  std::vector<ferry::Future<std::int64_t>> futures;
  futures.push_back(pool.submit(count_below, std::int64_t{7}));
  auto finished = ferry::as_completed(std::move(futures));
  while (auto done = finished.next())
    streamed += done->get();
  n.wait();

  // Typed channels, queues and synchronised values (their templates, not their use).
  auto pipe = ferry::Pipe<Point>::create();
  if (pipe) (void)pipe->parent.try_send(Point{});
  auto queue = ferry::Queue<std::string>::create("user-q", 16);
  if (queue) {
    (void)queue->try_put("item");
    (void)queue->try_get();
  }
  auto value = ferry::Value<std::int64_t>::create("user-v", 0);
  if (value) (void)value->with_lock([](std::int64_t& v) { return ++v; });

  std::cout << f.get() + g.get() + static_cast<std::int64_t>(h.get().size()) + p.get().x +
                   t.get().at("a") + a.get() + static_cast<std::int64_t>(s.size()) +
                   static_cast<std::int64_t>(counts.size() + strings.size()) + streamed + sum +
                   (back ? std::get<0>(*back) : 0) + (small ? *small : 0) + (point ? point->x : 0) +
                   static_cast<std::int64_t>(three.size())
            << "\n";
  auto tallies = pool.actor<Tally>(ferry::ActorOptions{.max_restarts = 1}, "t");
  std::cout << tallies.call(&Tally::add, std::int64_t{2}).get()
            << tallies.call(&Tally::report).get() << '\n';
  return 0;
}
