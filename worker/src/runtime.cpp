#include "ferry/worker/runtime.hpp"

#include <sys/prctl.h>
#include <unistd.h>

#include <boost/stacktrace.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>

#include "ferry/ipc/factory.hpp"
#include "ferry/shared/codec.hpp"
#include "ferry/shared/messages.hpp"
#include "ferry/shared/task.hpp"

namespace ferry::worker {
namespace {

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

// Best effort: the worker's stack where the task's exception was caught (the throw site's
// frames are gone by then; the task function's own frames show when it crashed instead).
std::string stack_here() {
  std::ostringstream os;
  os << boost::stacktrace::stacktrace(2, 16);
  return os.str();
}

class Worker {
  static constexpr int kStopQuietly = -1;

 public:
  explicit Worker(const Options& opt) : opt_(opt), host_(host_name()), pid_(::getpid()) {}

  int run() {
    auto ch = ipc::open_channel(opt_.endpoint, ipc::Role::connect);
    if (!ch)
      return fail(kExitConnectFailed, "cannot open " + opt_.endpoint + ": " + ch.error().message());
    ch_ = std::move(*ch);
    if (int rc = handshake(); rc != kExitOk) return rc == kStopQuietly ? kExitOk : rc;
    return serve();
  }

 private:
  int fail(int code, const std::string& why) {
    std::cerr << "ferry-worker[" << pid_ << "]: " << why << "\n";
    return code;
  }

  int handshake() {
    auto& reg = TaskRegistry::instance();
    msg::Hello hello;
    hello.pid = pid_;
    hello.host = host_;
    hello.name = opt_.name;
    hello.slots = opt_.slots;
    hello.registry_hash = reg.hash();
    if (auto st = ch_->send(make_frame(MessageKind::hello, hello)); !st) {
      return fail(kExitConnectFailed, "sending hello: " + st.error().message());
    }
    Frame f;
    if (auto st = ch_->recv_for(f, std::chrono::seconds(30)); !st) {
      return fail(kExitConnectFailed,
                  "waiting for the coordinator's welcome: " + st.error().message());
    }
    if (f.header.kind == MessageKind::shutdown) {
      return kStopQuietly;  // the pool closed before this worker got its first task
    }
    if (f.header.kind == MessageKind::reject) {
      auto r = msg::decode<msg::Reject>(view_of(f), MessageKind::reject);
      return fail(kExitRejected,
                  "rejected by the coordinator: " + (r ? r->reason : r.error().message()));
    }
    auto w = msg::decode<msg::Welcome>(view_of(f), MessageKind::welcome);
    if (!w) return fail(kExitConnectFailed, "bad welcome: " + w.error().message());
    if (w->init_function != msg::Welcome::kNoFunction) {
      const TaskEntry* e = reg.at(w->init_function);
      if (!e) return fail(kExitInitFailed, "initializer index out of range");
      try {
        Bytes ignored;
        e->invoke(e->fn, w->init_args, ignored);
      } catch (...) {
        return fail(kExitInitFailed, "initializer " + e->name + " threw " +
                                         task_detail::current_exception_type() + ": " +
                                         task_detail::current_exception_what());
      }
    }
    return kExitOk;
  }

  int serve() {
    Frame in;
    for (;;) {
      auto st = ch_->recv(in);
      if (!st) {
        // The coordinator closed or died: nothing left to do for it.
        if (st.error().code == Errc::channel_closed) return kExitOk;
        return fail(kExitConnectFailed, "control channel: " + st.error().message());
      }
      switch (in.header.kind) {
        case MessageKind::task:
          if (auto s = run_task(in); !s) {
            return fail(kExitConnectFailed, "sending a result: " + s.error().message());
          }
          break;
        case MessageKind::heartbeat:
          (void)ch_->send(in);  // echo: the coordinator measures liveness and latency
          break;
        case MessageKind::shutdown:
          return kExitOk;
        default:
          break;  // cancel and others: nothing queued here to cancel (one task at a time)
      }
    }
  }

  Status run_task(const Frame& in) {
    const std::uint64_t id = in.header.request_id;
    auto task = msg::decode<msg::Task>(view_of(in), MessageKind::task);
    if (!task) {
      return send_error(id, 0, "ferry::DecodeError", "task message: " + task.error().message());
    }
    const TaskEntry* e = TaskRegistry::instance().at(task->function);
    if (!e) {
      return send_error(id, task->attempt, "ferry::DecodeError",
                        "task function index " + std::to_string(task->function) +
                            " is not in this worker's registry");
    }
    out_.clear();
    try {
      (task->batch ? e->invoke_batch : e->invoke)(e->fn, task->args, out_);
    } catch (...) {
      return send_error(id, task->attempt, task_detail::current_exception_type(),
                        task_detail::current_exception_what(), stack_here());
    }
    result_.attempt = task->attempt;
    result_.value.swap(out_);
    Frame f = make_frame(MessageKind::result, result_, id);
    result_.value.swap(out_);
    return ch_->send(f);
  }

  Status send_error(std::uint64_t id, std::uint32_t attempt, std::string type, std::string what,
                    std::string stack = {}) {
    msg::TaskError err{attempt, std::move(type), std::move(what), pid_, host_, std::move(stack)};
    return ch_->send(make_frame(MessageKind::error, err, id));
  }

  static FrameView view_of(const Frame& f) { return FrameView{f.header, f.payload}; }

  Options opt_;
  std::string host_;
  std::int32_t pid_;
  ipc::ChannelPtr ch_;
  Bytes out_;
  msg::TaskResult result_;
};

}  // namespace

int run(const Options& opt) {
  if (opt.parent > 0) {
    // Die with the coordinator; re-check after arming, in case it died before prctl.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != opt.parent) return kExitOk;
    std::signal(SIGINT, SIG_IGN);
  }
  // Lines of the task's output reach the coordinator's log promptly.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  register_builtin_tasks();
  TaskRegistry::instance().freeze();
  return Worker(opt).run();
}

}  // namespace ferry::worker

namespace ferry {

void init(int, char**) {
  worker::register_builtin_tasks();
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
