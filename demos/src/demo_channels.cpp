// pipe: producer/consumer over a ferry::Pipe (Python: pipemp.py).
// channel: structured objects sent between processes and checked on arrival (Python:
// channel.py, with cereal where Python uses pickle).
#include <unistd.h>

#include <bit>
#include <cereal/types/map.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tour.hpp"

namespace ferry::demos {
namespace {

// ---- pipe

struct Parcel {
  std::string text;
  std::int64_t n = 0;
  bool done = false;  // the producer has nothing more (Python sends None)
  template <class A>
  void serialize(A& ar) {
    ar(text, n, done);
  }
};

// The consumer: reads parcels from its end of the pipe until the producer is done, then
// answers over the same pipe (a Pipe is duplex) and returns what it got.
std::vector<std::int64_t> pipe_consume(std::string child_end) {
  auto ch = Channel<Parcel>::open(child_end, ipc::Role::connect).value();
  std::vector<std::int64_t> got;
  std::int64_t sum = 0;
  for (;;) {
    const Parcel p = ch.recv_for(10s).value();
    if (p.done) break;
    got.push_back(p.n);
    sum += p.n;
  }
  ch.send(Parcel{"got " + std::to_string(got.size()) + " items from pid " +
                     std::to_string(::getppid()) + ", sum " + std::to_string(sum),
                 sum, true})
      .value();
  return got;
}

// ---- channel

struct Origin {
  std::string lab;
  std::int32_t year = 0;
  std::vector<std::string> staff;
  template <class A>
  void serialize(A& ar) {
    ar(lab, year, staff);
  }
  bool operator==(const Origin&) const = default;
};

struct Specimen {
  std::int64_t id = 0;
  std::string name;
  std::vector<std::vector<std::int32_t>> grid;
  std::map<std::string, std::vector<double>> readings;
  std::map<std::int32_t, std::string> notes;
  Origin origin;
  std::optional<std::string> remark;
  std::uint64_t checksum = 0;  // of the fields above, computed by the sender
  // Filled in by the receiver.
  std::int32_t checked_by = 0;
  bool intact = false;
  template <class A>
  void serialize(A& ar) {
    ar(id, name, grid, readings, notes, origin, remark, checksum, checked_by, intact);
  }
  bool same_content(const Specimen& o) const {
    return id == o.id && name == o.name && grid == o.grid && readings == o.readings &&
           notes == o.notes && origin == o.origin && remark == o.remark && checksum == o.checksum;
  }
};

// FNV-1a over every field, walked field by field: independent of the wire encoding, so the
// receiver can tell that what it decoded is what the sender meant.
class Fnv {
 public:
  void bytes(const void* p, std::size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < n; ++i)
      h_ = (h_ ^ b[i]) * 1099511628211ull;
  }
  void str(const std::string& s) {
    num(s.size());
    bytes(s.data(), s.size());
  }
  template <class T>
  void num(T v) {
    bytes(&v, sizeof v);
  }
  std::uint64_t value() const { return h_; }

 private:
  std::uint64_t h_ = 14695981039346656037ull;
};

std::uint64_t fingerprint(const Specimen& s) {
  Fnv f;
  f.num(s.id);
  f.str(s.name);
  f.num(s.grid.size());
  for (const auto& row : s.grid) {
    f.num(row.size());
    for (auto x : row)
      f.num(x);
  }
  f.num(s.readings.size());
  for (const auto& [k, series] : s.readings) {
    f.str(k);
    f.num(series.size());
    for (double d : series)
      f.num(std::bit_cast<std::uint64_t>(d));
  }
  f.num(s.notes.size());
  for (const auto& [k, note] : s.notes) {
    f.num(k);
    f.str(note);
  }
  f.str(s.origin.lab);
  f.num(s.origin.year);
  f.num(s.origin.staff.size());
  for (const auto& p : s.origin.staff)
    f.str(p);
  f.num(s.remark.has_value());
  if (s.remark) f.str(*s.remark);
  return f.value();
}

// The receiving process: says hello (so a ZeroMQ bind side learns who it talks to), then
// checks each specimen against its checksum, signs it and sends it back.
std::int64_t channel_inspect(std::string endpoint, std::int64_t count) {
  auto ch = Channel<Specimen>::open(endpoint, ipc::Role::connect).value();
  Specimen hello;
  hello.id = -1;
  hello.name = "ready";
  ch.send(hello).value();
  std::int64_t intact = 0;
  for (std::int64_t k = 0; k < count; ++k) {
    Specimen s = ch.recv_for(10s).value();
    s.intact = fingerprint(s) == s.checksum;
    s.checked_by = static_cast<std::int32_t>(::getpid());
    intact += s.intact ? 1 : 0;
    ch.send(s).value();
  }
  return intact;
}

Specimen make_specimen(std::int64_t id) {
  static const char* kNames[] = {"Slimer",       "Stay Puft", "Zuul",
                                 "Vinz Clortho", "Gozer",     "Library ghost"};
  Specimen s;
  s.id = id;
  s.name = kNames[static_cast<std::size_t>(id) % std::size(kNames)];
  const auto side = static_cast<std::size_t>(2 + id);
  for (std::size_t r = 0; r < side; ++r) {
    s.grid.emplace_back();
    for (std::size_t c = 0; c < side; ++c)
      s.grid.back().push_back(static_cast<std::int32_t>(r * 10 + c) -
                              static_cast<std::int32_t>(id));
  }
  s.readings["pke"] = {0.5 * static_cast<double>(id), 1.25, -3.0e-7};
  s.readings["temperature"] = {-12.5, -13.0 - static_cast<double>(id)};
  if (id % 2 == 0) s.readings["ectoplasm (ml)"] = {1.0 / 3.0};
  s.notes[1] = "sighted on " + std::to_string(10 + id) + "th floor";
  s.notes[42] = "UTF-8 survives: \u00e9ctoplasme \u2605";
  s.origin = {"Columbia University", 1984, {"Venkman", "Stantz", "Spengler"}};
  if (id % 3 == 1) s.remark = "handle with care";
  s.checksum = fingerprint(s);
  return s;
}

}  // namespace

FERRY_TASK(pipe_consume);
FERRY_TASK(channel_inspect);

int pipe(const Options& opt) {
  Verdict v;
  say("The main process makes a Pipe, starts its workers (they inherit the child's end), and");
  say("one worker consumes what main produces (Python: multiprocessing.Pipe with a consumer");
  say("Process). The end is announced with a 'done' parcel; the consumer answers over the same");
  say("pipe, which carries values both ways.");
  auto pipe = Pipe<Parcel>::create().value();
  Pool pool(lesson_pool(opt));
  await_workers(pool);
  pipe.close_child_end();  // every worker has its copy now
  auto consumer = pool.submit(pipe_consume, pipe.child_end);

  std::vector<std::int64_t> sent;
  std::string list;
  for (std::int64_t i = 1; i <= 8; ++i) {
    pipe.parent.send(Parcel{"item " + std::to_string(i), i * 11, false}).value();
    sent.push_back(i * 11);
    list += " " + std::to_string(i * 11);
  }
  pipe.parent.send(Parcel{"", 0, true}).value();
  sayf("  main sent:%s, then done", list.c_str());
  const Parcel answer = pipe.parent.recv_for(10s).value();
  const auto got = consumer.get();
  list.clear();
  for (auto x : got)
    list += " " + std::to_string(x);
  sayf("  the consumer received:%s", list.c_str());
  sayf("  its answer over the pipe: \"%s\"", answer.text.c_str());
  std::int64_t sum = 0;
  for (auto x : sent)
    sum += x;
  v.check(got == sent, strf("the consumer received all %zu items, in order", sent.size()));
  v.check(answer.done && answer.n == sum,
          strf("its answer came back over the pipe (sum %lld)", static_cast<long long>(answer.n)));
  return v.exit_code();
}

int channel(const Options& opt) {
  Verdict v;
  constexpr std::int64_t kCount = 6;
  say("Structured objects (nested vectors, maps, optional strings, a nested struct) go from");
  say("the main process to a worker and back through a typed Channel<Specimen>. cereal turns");
  say("them into bytes where Python would pickle them; the worker checks each one against the");
  say("sender's checksum, signs it, and sends it back to be compared with the original.");

  // The endpoint kind follows --transport: a Pipe, a shared-memory ring, or a ZeroMQ socket.
  std::optional<Pipe<Specimen>> pipe;
  Channel<Specimen> mine;
  std::string endpoint;
  const std::string name = unique_name("channel");
  if (opt.transport == "pipe") {
    pipe = Pipe<Specimen>::create().value();
    endpoint = pipe->child_end;
  } else if (opt.transport == "zmq") {
    mine = Channel<Specimen>::open("ipc:///dev/shm/" + shm_name(name) + ".sock", ipc::Role::bind)
               .value();
    endpoint = mine.endpoint();
  } else {
    mine = Channel<Specimen>::open("shm://" + name, ipc::Role::bind).value();
    endpoint = mine.endpoint();
  }
  Channel<Specimen>& ch = pipe ? pipe->parent : mine;
  sayf("  transport %s, the worker connects to %s", opt.transport.c_str(), endpoint.c_str());

  Pool pool(lesson_pool(opt));
  await_workers(pool);
  if (pipe) pipe->close_child_end();
  auto inspector = pool.submit(channel_inspect, endpoint, kCount);
  const Specimen hello = ch.recv_for(10s).value();
  bool equal = hello.id == -1;
  bool intact = true;
  for (std::int64_t id = 0; id < kCount; ++id) {
    const Specimen s = make_specimen(id);
    ch.send(s).value();
    const Specimen back = ch.recv_for(10s).value();
    const bool same = back.same_content(s);
    sayf(
        "  specimen %lld %-16s %zux%zu grid, %zu series, %zu notes: %4zu bytes; worker %d: %s; "
        "back equal: %s",
        static_cast<long long>(id), ("'" + s.name + "'").c_str(), s.grid.size(), s.grid.size(),
        s.readings.size(), s.notes.size(), encode_value(s).size(), back.checked_by,
        back.intact ? "intact" : "CORRUPT", same ? "yes" : "NO");
    equal = equal && same;
    intact = intact && back.intact;
  }
  const std::int64_t confirmed = inspector.get();
  v.check(intact && confirmed == kCount, strf("the worker found all %lld objects intact on arrival",
                                              static_cast<long long>(confirmed)));
  v.check(equal, "every object came back equal to the one sent");
  return v.exit_code();
}

}  // namespace ferry::demos
