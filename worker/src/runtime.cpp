#include "ferry/worker/runtime.hpp"

#include "ferry/worker/cli.hpp"

#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ferry/ipc/factory.hpp"
#include "ferry/ipc/shm_object.hpp"
#include "ferry/shared/codec.hpp"
#include "ferry/shared/frame_batch.hpp"
#include "ferry/shared/log.hpp"
#include "ferry/shared/memory.hpp"
#include "ferry/shared/messages.hpp"
#include "ferry/shared/object_ref.hpp"
#include "ferry/shared/proc_usage.hpp"
#include "ferry/shared/session.hpp"
#include "ferry/shared/task.hpp"
#include "throw_site.hpp"

namespace ferry::worker {
namespace {

using Clock = std::chrono::steady_clock;

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

FrameView view_of(const Frame& f) {
  return FrameView{f.header, f.payload};
}

// Shared-memory objects as the Welcome allowed them (threshold 0: none, as for a remote
// worker, which refuses any handle it is sent).
struct Objects {
  std::uint64_t threshold = 0;
  std::string prefix;          // results: prefix + a number
  std::string session_prefix;  // "ferry.<session>.": arguments must be named inside it
  std::atomic<std::uint64_t> seq{1};
};

constexpr const char* kBadHandleType = "ferry::BadHandle";

// Runs one task message; returns the reply frame (result or error). A reply never exceeds
// max_frame: a result too large for one frame is a kFrameTooLargeType error (per item, for a
// chunk), since a frame the channel refuses would end the worker and cost the task retries
// that can only fail the same way. With objects allowed, arguments may come as a handle (the
// worker maps the object and decodes from the mapping) and a value above the threshold goes
// back as an object the coordinator adopts; then no frame limit applies to either.
Frame execute(const Frame& in, std::int32_t pid, const std::string& host, std::size_t max_frame,
              const std::vector<std::uint32_t>& task_map, Objects& objects) {
  const std::uint64_t id = in.header.request_id;
  // Decoded objects (ObjectRef) whose pool freed them go before the next task runs.
  ferry::detail::sweep_object_cache();
  auto error = [&](std::uint32_t attempt, std::string type, std::string what,
                   std::string stack = {}) {
    msg::TaskError err{attempt, std::move(type), std::move(what), pid, host, std::move(stack)};
    return make_frame(MessageKind::error, err, id);
  };
  auto task = msg::decode_task(view_of(in));
  if (!task) return error(0, "ferry::DecodeError", "task message: " + task.error().message());
  const msg::TaskHeader& h = task->header;
  // The pool numbers its tasks its own way; the welcome said which of ours each one is.
  const TaskEntry* e =
      h.function < task_map.size() ? TaskRegistry::instance().at(task_map[h.function]) : nullptr;
  if (!e) {
    return error(h.attempt, "ferry::DecodeError",
                 "task number " + std::to_string(h.function) + " is not one this worker serves");
  }
  if (log::enabled(log::Level::trace)) {
    log::write(log::Level::trace, "ferry-worker[" + std::to_string(pid) + "]",
               "task " + std::to_string(id) + ": " + e->name + (h.batch ? " (chunk)" : "") +
                   ", attempt " + std::to_string(h.attempt));
  }
  ByteView args = task->args;
  std::optional<ipc::SharedObject> arg_object;  // mapped until the task has run
  if (task->object) {
    const auto& name = task->object->name;
    if (objects.threshold == 0) {
      return error(h.attempt, kBadHandleType,
                   "refused the shared-memory object '" + name +
                       "': this worker takes none (it is not on the coordinator's host)");
    }
    if (name.compare(0, objects.session_prefix.size(), objects.session_prefix) != 0) {
      return error(h.attempt, kBadHandleType,
                   "refused the shared-memory object '" + name + "': not in this session (" +
                       objects.session_prefix + "*)");
    }
    auto o = ipc::SharedObject::open(name, task->object->size);
    if (!o) {
      return error(h.attempt, "ferry::" + std::string(errc_name(o.error().code)),
                   "the task's arguments: " + o.error().message());
    }
    arg_object = std::move(*o);
    args = arg_object->bytes();
  }
  // A batch's values may exceed a frame when they can go back as an object.
  const std::size_t max_out = objects.threshold > 0 ? SIZE_MAX / 2 : max_frame;
  // The value is encoded straight into the reply's payload, behind its header: no copy.
  Frame out = msg::start_result_frame(msg::ResultHeader{h.attempt}, id);
  const std::size_t head = out.payload.size();
  try {
    const detail::ArmThrowSite arm;  // record where the task throws, for its stack trace
    if (h.batch) {
      (h.ref_args ? e->invoke_batch_refs : e->invoke_batch)(e->fn, args, out.payload, max_out);
    } else if (h.ref_args) {
      e->invoke_refs(e->fn, args, out.payload);
    } else {
      e->invoke(e->fn, args, out.payload);
    }
  } catch (...) {
    return error(h.attempt, task_detail::current_exception_type(),
                 task_detail::current_exception_what(), detail::current_exception_stack());
  }
  arg_object.reset();
  if (objects.threshold > 0 && out.payload.size() - head > objects.threshold) {
    const std::string name = objects.prefix + std::to_string(objects.seq.fetch_add(1));
    const ByteView value = ByteView(out.payload).subspan(head);
    auto o = ipc::SharedObject::create(name, value);
    if (!o) {
      return error(h.attempt, "ferry::" + std::string(errc_name(o.error().code)),
                   "the task's result: " + o.error().message());
    }
    o->release_name();  // the coordinator adopts it and unlinks it once read
    return msg::make_result_frame(msg::ResultHeader{h.attempt},
                                  msg::ObjectHandle{name, value.size()}, id);
  }
  if (out.payload.size() > max_frame) {
    const std::size_t value = out.payload.size() - head;
    return error(
        h.attempt, std::string(kFrameTooLargeType),
        std::string(h.batch ? "the chunk's results encode to " : "the result encodes to ") +
            std::to_string(value) + " bytes, more than one frame can carry (limit " +
            std::to_string(max_frame) + " bytes)");
  }
  msg::finish_frame(out);
  return out;
}

enum class Outcome { stop, lost, fatal, restart };

// A remote worker's object fetches in flight: a task thread sends an ObjectFetch per chunk and
// waits here; the reader thread files each ObjectData under its request id. Closed (waking
// every waiter with `why`) when the link ends.
struct Fetches {
  std::mutex m;
  std::condition_variable cv;
  std::map<std::uint64_t, std::optional<Frame>> waiting;  // request id -> its reply, once in
  std::uint64_t next = 1;
  bool closed = false;
  std::string why;
};

// The most one ObjectData may carry: within the frame limit (with room for its header), or
// less if FERRY_OBJECT_FETCH_CHUNK says so (a test's way to see chunking on small objects).
std::uint64_t fetch_chunk_bytes(std::size_t max_frame) {
  std::uint64_t n = max_frame > 8192 ? max_frame - 4096 : max_frame / 2;
  if (const char* e = std::getenv("FERRY_OBJECT_FETCH_CHUNK")) {
    char* end = nullptr;
    const auto v = std::strtoull(e, &end, 10);
    if (end != e && *end == '\0' && v > 0) n = std::min<std::uint64_t>(n, v);
  }
  return std::max<std::uint64_t>(n, 1);
}

// How long one chunk may take to come back before get() gives up (the link's heartbeat
// timeout usually ends a dead coordinator's fetches sooner).
constexpr auto kFetchChunkTimeout = std::chrono::seconds(30);

// argv of this process, for a remote worker told to restart (a stuck task's thread cannot be
// stopped any other way).
std::vector<std::string>& saved_argv() {
  static std::vector<std::string> v;
  return v;
}

[[noreturn]] void restart_self(std::int32_t pid) {
  log::write(log::Level::warn, "ferry-worker[" + std::to_string(pid) + "]",
             "the coordinator asked for a restart (a task ran past its timeout); restarting");
  std::vector<char*> argv;
  for (auto& a : saved_argv())
    argv.push_back(a.data());
  argv.push_back(nullptr);
  if (!saved_argv().empty()) ::execv("/proc/self/exe", argv.data());
  std::_Exit(kExitLost);  // cannot re-exec: a supervisor (systemd, k8s) restarts us
}

class Worker {
 public:
  explicit Worker(const Options& opt)
      : opt_(opt),
        host_(host_name()),
        pid_(::getpid()),
        source_("ferry-worker[" + std::to_string(pid_) + "]") {}

  int run() {
    const bool remote = opt_.parent == 0;
    Clock::time_point lost_since{};
    std::string why_lost;
    for (;;) {
      ipc::ChannelOptions co;
      co.keys_dir = opt_.keys;
      max_frame_ = co.max_frame;
      auto ch = ipc::open_channel(opt_.endpoint, ipc::Role::connect, co);
      if (!ch) {
        if (!remote)
          return fail(kExitConnectFailed,
                      "cannot open " + opt_.endpoint + ": " + ch.error().message());
        why_lost = ch.error().message();
      } else {
        ch_ = std::move(*ch);
        int rc = handshake();
        if (rc == kStopQuietly) return kExitOk;
        if (rc == kExitOk) {
          if (lost_since != Clock::time_point{}) note("reconnected and registered again");
          lost_since = {};
          const Outcome o = threaded_ ? serve_threaded() : serve();
          if (o == Outcome::stop) return kExitOk;
          if (o == Outcome::restart) restart_self(pid_);
          if (o == Outcome::fatal || !remote) return exit_code_;
          why_lost = why_;
        } else if (!remote || rc == kExitRejected || rc == kExitInitFailed) {
          return rc;
        } else {
          why_lost = why_;
        }
        ch_.reset();
      }
      // Remote: keep trying for a bounded time.
      if (lost_since == Clock::time_point{}) {
        lost_since = Clock::now();
        note("lost the coordinator at " + opt_.endpoint + " (" + why_lost +
             "); reconnecting for up to " + std::to_string(opt_.reconnect_timeout.count() / 1000) +
             " s");
      }
      if (Clock::now() - lost_since > opt_.reconnect_timeout) {
        return fail(kExitLost, "gave up: could not reach the coordinator at " + opt_.endpoint +
                                   " for " + std::to_string(opt_.reconnect_timeout.count() / 1000) +
                                   " s (last error: " + why_lost + ")");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));  // reconnect back-off
    }
  }

 private:
  static constexpr int kStopQuietly = -1;

  int fail(int code, const std::string& why) {
    log::write(log::Level::error, source_, why);
    return code;
  }
  void note(const std::string& what) { log::write(log::Level::warn, source_, what); }

  int handshake() {
    auto& reg = TaskRegistry::instance();
    msg::Hello hello;
    hello.pid = pid_;
    hello.host = host_;
    hello.name = opt_.name;
    hello.slots = opt_.slots;
    hello.registry_hash = reg.hash();
    msg::Offer offer;
    offer.tasks.reserve(reg.entries().size());
    for (const auto& e : reg.entries())
      offer.tasks.push_back({e.name, e.signature, e.signature_hash});
    const Frame greeting[] = {make_frame(MessageKind::hello, hello),
                              make_frame(MessageKind::offer, offer)};
    Status sent;
    for (const Frame& g : greeting) {
      if (!sent) break;
      sent = ch_->send_for(g, std::chrono::seconds(10));
    }
    if (!sent) {
      why_ = "sending hello: " + sent.error().message();
      return opt_.parent ? fail(kExitConnectFailed, why_) : kExitConnectFailed;
    }
    Frame f;
    // A remote coordinator may be down: wait a bounded time, then count it as a lost link.
    const std::chrono::milliseconds wait =
        opt_.parent ? std::chrono::milliseconds(30000)
                    : std::clamp(opt_.reconnect_timeout, std::chrono::milliseconds(200),
                                 std::chrono::milliseconds(5000));
    if (auto st = ch_->recv_for(f, wait); !st) {
      why_ = "no welcome from the coordinator: " + st.error().message() +
             (opt_.keys.empty() ? "" : " (if this repeats: is this worker's key authorized?)");
      return opt_.parent ? fail(kExitConnectFailed, why_) : kExitConnectFailed;
    }
    if (f.header.kind == MessageKind::shutdown) return kStopQuietly;
    if (f.header.kind == MessageKind::reject) {
      auto r = msg::decode<msg::Reject>(view_of(f), MessageKind::reject);
      return fail(kExitRejected,
                  "rejected by the coordinator: " + (r ? r->reason : r.error().message()));
    }
    auto w = msg::decode<msg::Welcome>(view_of(f), MessageKind::welcome);
    if (!w) return fail(kExitConnectFailed, "bad welcome: " + w.error().message());
    heartbeat_timeout_ = std::chrono::milliseconds(w->heartbeat_timeout_ms);
    task_map_ = std::move(w->task_map);
    objects_.threshold = w->object_threshold;
    objects_.prefix = w->object_prefix;
    objects_.session_prefix = "ferry." + w->session + ".";
    coordinator_session_ = w->session;
    // Result objects must carry the prefix the coordinator will accept and sweep, and a
    // worker on another host shares no /dev/shm with it.
    if (opt_.parent == 0) objects_.threshold = 0;
    if (objects_.threshold > 0 &&
        objects_.prefix.compare(0, objects_.session_prefix.size(), objects_.session_prefix) != 0) {
      objects_.threshold = 0;
    }
    threaded_ = opt_.slots > 1 || w->heartbeat_ms > 0;
    if (w->init_function != msg::Welcome::kNoFunction && !initialized_) {
      const TaskEntry* e =
          w->init_function < task_map_.size() ? reg.at(task_map_[w->init_function]) : nullptr;
      if (!e)
        return fail(kExitInitFailed, "the pool's initializer is not a task this worker serves");
      try {
        Bytes ignored;
        e->invoke(e->fn, w->init_args, ignored);
        initialized_ = true;
      } catch (...) {
        return fail(kExitInitFailed, "initializer " + e->name + " threw " +
                                         task_detail::current_exception_type() + ": " +
                                         task_detail::current_exception_what());
      }
    }
    log::write(log::Level::debug, source_,
               "registered with " + opt_.endpoint + ": " + std::to_string(task_map_.size()) +
                   " task(s) mapped, " + std::to_string(opt_.slots) + " slot(s)");
    return kExitOk;
  }

  // The answer to a ping: its sequence number and this process's resource use (one read of
  // /proc/self/stat per ping, every heartbeat interval: cheap).
  static Frame heartbeat_answer(const Frame& ping) {
    msg::Heartbeat hb;
    if (auto in = msg::decode<msg::Heartbeat>(view_of(ping), MessageKind::heartbeat))
      hb.seq = in->seq;
    if (auto u = read_proc_usage()) {
      hb.cpu_ms = static_cast<std::uint64_t>(u->cpu_s * 1000);
      hb.rss_bytes = u->rss_bytes;
    }
    return make_frame(MessageKind::heartbeat, hb);
  }

  // Local worker: one task at a time on this thread (lowest latency).
  Outcome serve() {
    Frame in;
    for (;;) {
      auto st = ch_->recv(in);
      if (!st) {
        // The coordinator closed or died: nothing left to do for it.
        if (st.error().code == Errc::channel_closed) return Outcome::stop;
        exit_code_ = fail(kExitConnectFailed, "control channel: " + st.error().message());
        return Outcome::fatal;
      }
      switch (in.header.kind) {
        case MessageKind::task:
          if (auto s = ch_->send(execute(in, pid_, host_, max_frame_, task_map_, objects_)); !s) {
            exit_code_ = fail(kExitConnectFailed, "sending a result: " + s.error().message());
            return Outcome::fatal;
          }
          break;
        case MessageKind::heartbeat:
          (void)ch_->send(heartbeat_answer(in));
          break;
        case MessageKind::shutdown:
          return Outcome::stop;
        default:
          break;  // nothing queued here to cancel (one task at a time)
      }
    }
  }

  // Results of tasks run back to back leave together (one Batch frame to a remote pool, one
  // send_batch on a local channel). A runner holds a result only while it goes straight on to
  // a task already queued here whose function last ran in under kShortTask, while more tasks
  // are queued than results held, and only up to kHoldCount results, kHoldBytes bytes and
  // kHoldAge since the first (checked between tasks):
  // otherwise, and whenever the queue is empty, it sends what it holds at once. So a lone task
  // (apply) is never held, and no result waits for a timer or for a task not yet received.
  static constexpr auto kShortTask = std::chrono::microseconds(50);
  static constexpr auto kHoldAge = std::chrono::microseconds(500);
  static constexpr std::size_t kHoldCount = 64;
  static constexpr std::size_t kHoldBytes = std::size_t{256} << 10;
  static constexpr std::size_t kBatchBytes = std::size_t{1} << 20;  // one Batch's payload

  // Remote worker: this thread reads (and answers pings); `slots` threads run tasks.
  Outcome serve_threaded() {
    struct Shared {
      std::mutex m;
      std::condition_variable cv;
      std::deque<Frame> tasks;
      std::atomic<bool> closing{false};
      std::mutex send_m;
    } sh;
    const bool remote = opt_.parent == 0;
    // The last run time (ns + 1; 0: never ran) of each pool task number, for the hold rule.
    std::vector<std::atomic<std::uint64_t>> last_ns(task_map_.size());
    auto function_of = [](const Frame& f) -> std::optional<std::uint32_t> {
      if (auto t = msg::decode_task(view_of(f))) return t->header.function;
      return std::nullopt;
    };
    auto is_short = [&](const Frame& next) {
      const auto fn = function_of(next);
      if (!fn || *fn >= last_ns.size()) return false;
      const auto ns = last_ns[*fn].load(std::memory_order_relaxed);
      return ns != 0 &&
             ns - 1 < static_cast<std::uint64_t>(std::chrono::nanoseconds(kShortTask).count());
    };
    auto send_held = [&](std::vector<Frame>& held) {
      std::lock_guard lk(sh.send_m);
      if (!sh.closing.load()) {
        std::span<const Frame> rest(held);
        while (!rest.empty()) {
          const std::size_t n = remote ? batch_span(rest, kBatchBytes) : rest.size();
          Status st = n == 1   ? ch_->send(rest.front())
                      : remote ? ch_->send(make_batch(rest.first(n)))
                               : ch_->send_batch(rest.first(n), ipc::Deadline::never());
          if (!st) break;  // the link is gone: the reader sees it; the pool re-runs the tasks
          rest = rest.subspan(n);
        }
      }
      held.clear();
    };
    Fetches fx;
    // A remote worker reads ObjectRefs through this connection (object_ref.hpp).
    const bool fetching = opt_.parent == 0;
    if (fetching) {
      // The remote workers of one host serving this coordinator share what they fetch: the
      // endpoint and the coordinator's session name it, as seen from here.
      ferry::detail::set_object_fetcher(
          [this, &fx, &sh](const std::string& name, std::uint64_t size,
                           const ferry::detail::ObjectSink& sink) {
            return fetch_object(fx, sh.send_m, name, size, sink);
          },
          opt_.endpoint + "\n" + coordinator_session_);
    }
    std::vector<std::thread> runners;
    for (std::uint32_t i = 0; i < std::max<std::uint32_t>(1, opt_.slots); ++i) {
      runners.emplace_back([&] {
        std::vector<Frame> held;
        std::size_t held_bytes = 0;
        Clock::time_point held_since{};
        for (;;) {
          Frame in;
          {
            std::unique_lock lk(sh.m);
            if (!held.empty()) {
              // More queued than held: the pool, told of the held results now, could refill
              // this worker's queue before it runs dry; holding longer would let it idle.
              const bool keep = sh.tasks.size() > held.size() && held.size() < kHoldCount &&
                                held_bytes < kHoldBytes && Clock::now() - held_since < kHoldAge &&
                                is_short(sh.tasks.front());
              if (!keep) {
                lk.unlock();
                send_held(held);
                held_bytes = 0;
                lk.lock();
              }
            }
            sh.cv.wait(lk, [&] { return sh.closing.load() || !sh.tasks.empty(); });
            if (sh.tasks.empty()) return;
            in = std::move(sh.tasks.front());
            sh.tasks.pop_front();
          }
          const auto fn = function_of(in);
          const auto t0 = Clock::now();
          Frame out = execute(in, pid_, host_, max_frame_, task_map_, objects_);
          const auto t1 = Clock::now();
          if (fn && *fn < last_ns.size()) {
            last_ns[*fn].store(
                static_cast<std::uint64_t>(std::chrono::nanoseconds(t1 - t0).count()) + 1,
                std::memory_order_relaxed);
          }
          if (held.empty()) held_since = t1;
          held_bytes += batched_size(out);
          held.push_back(std::move(out));
        }
      });
    }
    auto last_heard = Clock::now();
    Outcome outcome = Outcome::lost;
    std::vector<Frame> arrived;  // one frame, or a Batch's frames
    std::vector<Frame> incoming;
    Frame in;
    bool done = false;
    while (!done) {
      auto st = ch_->recv_for(in, std::chrono::milliseconds(100));
      if (!st) {
        const auto c = st.error().code;
        if (c == Errc::timeout || c == Errc::would_block) {
          if (heartbeat_timeout_.count() > 0 && Clock::now() - last_heard > heartbeat_timeout_) {
            why_ = "no message from the coordinator for " +
                   std::to_string(heartbeat_timeout_.count()) + " ms";
            break;
          }
          continue;
        }
        why_ = st.error().message();
        break;
      }
      last_heard = Clock::now();
      arrived.clear();
      if (in.header.kind == MessageKind::batch) {
        if (auto u = unpack_batch(in, arrived, max_frame_); !u) {
          why_ = "the coordinator sent a malformed batch: " + u.error().message();
          break;
        }
      } else {
        arrived.push_back(std::move(in));
      }
      // A batch's tasks are queued under one lock, with one wake-up per runner at most.
      incoming.clear();
      for (Frame& f : arrived) {
        if (f.header.kind == MessageKind::task) {
          incoming.push_back(std::move(f));
        } else if (f.header.kind == MessageKind::object_data) {
          std::lock_guard lk(fx.m);
          auto it = fx.waiting.find(f.header.request_id);
          if (it != fx.waiting.end() && !it->second) {
            it->second = std::move(f);
            fx.cv.notify_all();
          }
        } else if (f.header.kind == MessageKind::heartbeat) {
          const Frame answer = heartbeat_answer(f);
          std::lock_guard lk(sh.send_m);
          (void)ch_->send_for(answer, std::chrono::milliseconds(100));
        } else if (f.header.kind == MessageKind::shutdown) {
          auto sd = msg::decode<msg::Shutdown>(view_of(f), MessageKind::shutdown);
          if (sd && !sd->graceful && opt_.parent == 0) restart_self(pid_);  // stuck: no join
          outcome = Outcome::stop;
          done = true;
          break;
        } else if (f.header.kind == MessageKind::reject) {
          // The coordinator no longer knows this link (it declared us lost): register again.
          why_ = "the coordinator asked this worker to register again";
          done = true;
          break;
        }
      }
      if (!incoming.empty() && !done) {
        {
          std::lock_guard lk(sh.m);
          for (Frame& f : incoming)
            sh.tasks.push_back(std::move(f));
        }
        if (incoming.size() == 1) {
          sh.cv.notify_one();
        } else {
          sh.cv.notify_all();
        }
      }
    }
    {
      std::lock_guard lk(sh.m);
      sh.closing = true;
      sh.tasks.clear();  // the coordinator re-queues whatever it had sent here
    }
    {
      // A task waiting for an object's bytes fails now (ObjectUnavailable) rather than at its
      // deadline.
      std::lock_guard lk(fx.m);
      fx.closed = true;
      fx.why = outcome == Outcome::stop ? "the coordinator told this worker to stop"
                                        : "lost the coordinator (" + why_ + ")";
    }
    fx.cv.notify_all();
    {
      std::lock_guard lk(sh.send_m);  // no runner sends on the channel from now on
    }
    sh.cv.notify_all();
    // A runner stuck in a long task would hold us here; detach is not an option (it uses
    // ch_), so wait: a shutdown waits for running tasks, as a drain should.
    for (auto& t : runners)
      t.join();
    if (fetching) ferry::detail::set_object_fetcher(nullptr);
    return outcome;
  }

  // An object's whole encoded bytes from the coordinator, to `sink` a chunk at a time, a chunk
  // per request (each reply within the frame limit), or why not: the coordinator's answer
  // (freed, unknown), a chunk that did not come within kFetchChunkTimeout, or the link
  // ending. Runs on a task thread.
  Status fetch_object(Fetches& fx, std::mutex& send_m, const std::string& name, std::uint64_t size,
                      const ferry::detail::ObjectSink& sink) {
    const std::uint64_t chunk = fetch_chunk_bytes(max_frame_);
    std::uint64_t offset = 0;
    do {
      std::uint64_t id = 0;
      {
        std::lock_guard lk(fx.m);
        if (fx.closed) return Error{Errc::channel_closed, fx.why};
        id = fx.next++;
        fx.waiting[id];
      }
      auto forget = [&] {
        std::lock_guard lk(fx.m);
        fx.waiting.erase(id);
      };
      const Frame ask =
          make_frame(MessageKind::object_fetch, msg::ObjectFetch{name, size, offset, chunk}, id);
      {
        // Checked under send_m: once the reader closed fx and passed send_m, nothing is sent.
        std::lock_guard lk(send_m);
        bool closed = false;
        {
          std::lock_guard fl(fx.m);
          closed = fx.closed;
        }
        Status sent = closed ? Status(Error{Errc::channel_closed, "the worker is stopping"})
                             : ch_->send_for(ask, std::chrono::seconds(10));
        if (!sent) {
          forget();
          return Error{sent.error().code, "asking the coordinator: " + sent.error().message()};
        }
      }
      std::optional<Frame> reply;
      {
        std::unique_lock lk(fx.m);
        fx.cv.wait_for(lk, kFetchChunkTimeout,
                       [&] { return fx.closed || fx.waiting[id].has_value(); });
        reply = std::move(fx.waiting[id]);
        fx.waiting.erase(id);
        if (!reply) {
          if (fx.closed) return Error{Errc::channel_closed, fx.why};
          return Error{Errc::timeout, "no answer from the coordinator within " +
                                          std::to_string(kFetchChunkTimeout.count()) +
                                          " s (bytes " + std::to_string(offset) + " of " +
                                          std::to_string(size) + ")"};
        }
      }
      auto d = msg::decode<msg::ObjectData>(view_of(*reply), MessageKind::object_data);
      if (!d) return Error{d.error().code, "a bad answer: " + d.error().message()};
      if (!d->error.empty()) return Error{Errc::not_found, "the coordinator says it " + d->error};
      if (d->offset != offset || d->total != size || d->bytes.size() > size - offset ||
          (d->bytes.empty() && offset < size)) {
        return Error{Errc::malformed_payload,
                     "the coordinator answered bytes " + std::to_string(d->offset) + "+" +
                         std::to_string(d->bytes.size()) + " of " + std::to_string(d->total) +
                         " for bytes " + std::to_string(offset) + " of " + std::to_string(size)};
      }
      ferry::detail::count_fetch_chunk();
      const std::uint64_t got = d->bytes.size();
      sink(offset, ByteView(d->bytes.data(), got));
      offset += got;
    } while (offset < size);
    return {};
  }

  Options opt_;
  std::string host_;
  std::int32_t pid_;
  std::string source_;  // "ferry-worker[pid]": how its log lines begin
  ipc::ChannelPtr ch_;
  std::size_t max_frame_ = kDefaultMaxFrame;  // the largest payload ch_ sends
  std::chrono::milliseconds heartbeat_timeout_{0};
  std::vector<std::uint32_t> task_map_;  // pool task number -> registry index (Welcome)
  Objects objects_;                      // shared-memory objects as the Welcome allows
  std::string coordinator_session_;      // the Welcome's: names this host's fetched copies
  bool threaded_ = false;
  bool initialized_ = false;
  int exit_code_ = kExitOk;
  std::string why_;
};

}  // namespace

int run(const Options& opt) {
  // Chunks of a megabyte or more per task must not fault fresh pages in each time.
  (void)keep_freed_memory();
  if (opt.parent > 0) {
    // Die with the coordinator; re-check after arming, in case it died before prctl.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != opt.parent) return kExitOk;
    std::signal(SIGINT, SIG_IGN);
  }
  // A coordinator passes its --log-level to the workers it starts (FERRY_LOG_LEVEL); so does
  // ferry-worker's own --log-level.
  log::configure_from_env();
  // A task that crashes the worker leaves its stack on stderr (crash_trace.cpp).
  detail::install_crash_trace();
  // Lines of the task's output reach the coordinator's log promptly.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  register_builtin_tasks();
  auto& reg = TaskRegistry::instance();
  Status loaded = load_task_libraries_from_env();
  for (const auto& lib : opt.task_libraries) {
    if (loaded) loaded = reg.load_library(lib);
  }
  if (!loaded) {
    log::write(log::Level::error, "ferry-worker[" + std::to_string(::getpid()) + "]",
               loaded.error().detail);
    return kExitInitFailed;
  }
  reg.freeze();
  // Host copies of fetched objects that every holder left without removing (all SIGKILLed):
  // a remote worker on a host without a coordinator is the one to sweep them.
  if (opt.parent == 0) (void)sweep_host_copies();
  return Worker(opt).run();
}

}  // namespace ferry::worker

namespace ferry {

void init(int argc, char** argv) {
  worker::register_builtin_tasks();
  worker::saved_argv().assign(argv, argv + argc);
  if (argc >= 2 && std::string_view(argv[1]) == "--ferry-worker") {
    // The rest of the command line is ferry-worker's.
    std::vector<char*> args{argv[0]};
    args.insert(args.end(), argv + 2, argv + argc);
    std::exit(worker::run_cli(static_cast<int>(args.size()), args.data()));
  }
  const char* endpoint = std::getenv("FERRY_WORKER_ENDPOINT");
  if (!endpoint) return;
  worker::Options opt;
  opt.endpoint = endpoint;
  if (const char* p = std::getenv("FERRY_WORKER_PARENT")) opt.parent = std::atoi(p);
  if (const char* id = std::getenv("FERRY_WORKER_ID")) {
    opt.worker_id = static_cast<std::uint32_t>(std::strtoul(id, nullptr, 10));
  }
  // The worker's own children (if a task spawns a pool) must not take this role.
  ::unsetenv("FERRY_WORKER_ENDPOINT");
  std::exit(worker::run(opt));
}

}  // namespace ferry
