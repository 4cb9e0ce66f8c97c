// ferry::Pool: worker processes that run registered tasks (shared/task.hpp) and return futures.
//
//   ferry::Pool pool({.workers = 4});
//   auto f = pool.submit(count_primes, 1'000'000);     // Future<std::int64_t>
//   auto squares = pool.map(square, std::views::iota(0, 1000));
//
// Workers are spawned with posix_spawn: copies of this executable (self-exec; main() must call
// ferry::init(argc, argv) first) or PoolOptions::worker_program (e.g. ferry-worker). Each worker
// talks to the pool over its own channel of the chosen transport (pipe, shm or zmq).
//
// Delivery: a task whose worker dies (or runs past task_timeout and is killed) is re-run on
// another worker up to max_retries times (at-least-once execution); its future receives exactly
// one outcome. In-flight work is bounded by max_in_flight: submit() blocks when it is full,
// try_submit() refuses, so streaming any number of tasks keeps memory flat.
//
// Shutdown: shutdown(drain) waits for every submitted task, then stops the workers;
// shutdown(cancel) fails what is left with Cancelled and stops them (SIGTERM, then SIGKILL after
// shutdown_grace). The destructor drains. Every child is reaped and every channel and segment
// removed in both cases.
//
// Threading: every member function may be called from any thread. Ownership: the pool owns its
// worker processes; Futures share task state with it and may outlive it.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "ferry/coordinator/actor.hpp"
#include "ferry/coordinator/future.hpp"
#include "ferry/coordinator/process.hpp"
#include "ferry/shared/object_ref.hpp"
#include "ferry/shared/task.hpp"

namespace ferry {

enum class Transport : std::uint8_t { pipe, shm, zmq };
std::string_view transport_name(Transport t) noexcept;
std::optional<Transport> parse_transport(std::string_view s) noexcept;

// A per-worker initializer: a registered task run once in each worker before its first task.
struct Initializer {
  AnyFn fn = nullptr;
  std::string name;  // used when fn is null
  Bytes args;
};
template <class R, class... P, class... A>
Initializer initializer(R (*fn)(P...), A&&... args) {
  return {task_key(fn), {}, encode_value(std::tuple<std::decay_t<P>...>(std::forward<A>(args)...))};
}

// How much a pool event matters: news (a worker joined), something that went wrong but is
// handled (a worker died, a peer was refused), or a failure of the pool itself.
enum class EventLevel : std::uint8_t { info, warn, error };

// One line a worker wrote to stdout (stream 1) or stderr (stream 2).
struct WorkerLine {
  std::uint32_t worker = 0;
  std::int32_t pid = 0;
  int stream = 1;
  std::string_view line;
};

struct PoolOptions {
  std::optional<unsigned> workers{};  // local worker processes; unset: the number of CPUs
                                      // (0 with `listen`: remote workers only)
  Transport transport = Transport::shm;
  std::string worker_program{};            // empty: this executable (self-exec)
  std::vector<std::string> worker_args{};  // extra arguments for worker_program
  // Task libraries (.so files built with ferry_add_task_library, or folders of them) loaded
  // into this process before the first pool starts, and into every local worker.
  std::vector<std::string> task_libraries{};
  unsigned max_retries = 3;                   // re-runs of a task whose worker died
  std::chrono::milliseconds task_timeout{0};  // 0: none
  unsigned max_tasks_per_worker = 0;          // 0: unlimited; else the worker is replaced after
  std::size_t max_in_flight = 0;              // 0: 1024 per worker
  unsigned prefetch = 0;                      // tasks queued per worker; 0: automatic
  std::optional<Initializer> initializer{};
  // Arguments and results that encode to more than this many bytes travel between the pool
  // and its local workers as shared-memory objects (written once, mapped by the reader,
  // unlinked once read or once the task is final), so the frame limit does not bound them.
  // 0: never. Remote workers always get the bytes in frames (and the frame limit).
  std::size_t object_threshold = kDefaultObjectThreshold;
  std::chrono::milliseconds shutdown_grace{1000};    // SIGTERM -> SIGKILL
  std::chrono::milliseconds startup_timeout{30000};  // spawn -> hello
  // Worker output lines; default: the log (ferry/shared/log.hpp), as "[w<id> pid <pid>] <line>"
  // in text format.
  std::function<void(const WorkerLine&)> on_output{};

  // Remote workers (ferry-worker --connect) join here, e.g. "tcp://0.0.0.0:5555".
  std::string listen{};
  std::string keys{};     // CURVE key directory (ferry-coordinator keygen); empty: plain TCP
  bool insecure = false;  // allow plain TCP on a non-loopback address
  std::chrono::milliseconds heartbeat_interval{500};
  std::chrono::milliseconds heartbeat_timeout{3000};  // silence that declares a worker lost
  // Membership news (joined, lost, rejected); default: the log, prefixed "ferry: " in text.
  std::function<void(std::string_view)> on_event{};
  // Events below this level are not reported (neither written nor given to on_event).
  EventLevel event_level = EventLevel::info;
  // How worker processes are started (tests substitute a fake); default: posix_spawn.
  std::shared_ptr<coordinator::Launcher> launcher{};
  // A worker's death fails (WorkerDied) every task then in the pool: those sent to it, not
  // only the one it was running (the others are otherwise sent again, uncounted), and those
  // waiting for a worker. For a one-worker pool whose tasks must never run twice, nor run
  // after a later one: actors set it.
  bool fail_sent_on_death = false;
};

enum class WorkerState : std::uint8_t { starting, ready, gone };
// "starting", "ready", "gone": the status page's and /api/status's words.
std::string_view worker_state_name(WorkerState s) noexcept;

struct WorkerStats {
  std::uint32_t id = 0;
  std::int32_t pid = 0;
  std::uint64_t tasks = 0;  // tasks (or chunks) it completed
  bool alive = false;
  bool remote = false;  // joined over --listen (PoolOptions::listen) rather than spawned here
  std::string host;     // remote: the host name it reported; empty for local workers
  std::string name;     // remote: its --name, if it gave one
  // What an operator watches (the --http status page): tasks of its that failed, its state,
  // its CPU seconds and resident bytes (remote: from its last
  // heartbeat; local: read from /proc by the status page; < 0 unknown), and how long ago it
  // was last heard from (seconds, < 0 never).
  std::uint64_t failures = 0;
  WorkerState state = WorkerState::starting;
  double cpu_s = -1;
  std::int64_t rss_bytes = -1;
  double heard_s_ago = -1;
};

// Time from a task's dispatch to its result, as a histogram (Prometheus buckets: counts of
// durations <= each bound, the last bound +Inf).
struct DurationHistogram {
  static constexpr std::size_t kBuckets = 12;
  static constexpr double kBounds[kBuckets - 1] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.25,
                                                   0.5,   1,     2.5,  10,   60};
  std::uint64_t counts[kBuckets] = {};  // per bucket (not cumulative); last: above 60 s
  double sum_s = 0;
  std::uint64_t count = 0;
  void add(double s) noexcept {
    std::size_t i = 0;
    while (i < kBuckets - 1 && s > kBounds[i])
      ++i;
    ++counts[i];
    sum_s += s;
    ++count;
  }
};

// A recent failure or worker output line, for the status page (the pool keeps the last few).
struct PoolNote {
  double unix_s = 0;         // when (seconds since the epoch)
  std::uint32_t worker = 0;  // 0: none
  std::string text;          // the failure's one-line description, or the output line
  std::string stack;         // a failure's remote stack trace, as the worker sent it
};
struct RecentNotes {
  std::vector<PoolNote> failures;  // oldest first
  std::vector<PoolNote> lines;     // worker output, oldest first
};

struct PoolStats {
  std::uint64_t submitted = 0;
  std::uint64_t succeeded = 0;
  std::uint64_t failed = 0;
  std::uint64_t cancelled = 0;
  std::uint64_t retries = 0;
  std::uint64_t worker_deaths = 0;  // unexpected deaths (crash, kill, timeout)
  std::uint64_t workers_spawned = 0;
  std::uint64_t workers_recycled = 0;  // retired by max_tasks_per_worker (once its last task went)
  std::vector<WorkerStats> workers;    // every worker the pool had, in spawn order
  std::uint64_t objects_put = 0;       // Pool::put calls (segments written for the store)
  std::uint64_t object_bytes_put = 0;  // bytes they wrote
  std::uint64_t arg_objects = 0;       // large arguments written to a segment (object_threshold)
  std::uint64_t in_flight = 0;         // tasks at workers now
  std::uint64_t queued = 0;            // tasks waiting for a worker
  DurationHistogram durations;         // of the results received
  // Objects (whole) and bytes sent to remote workers that fetched them (ObjectRef): once per
  // host whose workers share their fetches, once per process where they do not.
  std::uint64_t objects_served = 0;
  std::uint64_t object_bytes_served = 0;
  // Large results kept in the object store for a task graph's dependant (passed on by name,
  // not read in and encoded again): see Pool::submit.
  std::uint64_t results_kept = 0;
};

enum class ShutdownMode { drain, cancel };

template <class R>
class ImapUnordered;
template <class F>
class AsCompleted;

// One task's own limits, where they differ from the pool's (PoolOptions::max_retries,
// task_timeout): pool.submit(ferry::with({.timeout = 2s, .max_retries = 0}), task, args...).
struct CallOptions {
  std::optional<std::chrono::milliseconds> timeout{};  // 0: none
  std::optional<unsigned> max_retries{};
};
struct With {
  CallOptions options;
};

struct MapReduceOptions {
  std::size_t chunksize = 0;  // 0: automatic (about four chunks per worker)
  // Fold each chunk inside its worker, so one partial per chunk travels back instead of every
  // result: reduce must be a function T reduce(T, R) registered with FERRY_COMBINE(fn, reduce),
  // R must be T, and each chunk's fold starts from T{} (reduce's identity).
  bool combine_in_workers = false;
};
inline With with(CallOptions o) {
  return With{o};
}

namespace detail {

// True where a map's item (or an element of a starmap's item) A is an ObjectRef<T> and the
// parameter P takes the value (T, const T&): that chunk's items travel as task_detail::RefOr.
template <class P, class A>
constexpr bool item_feeds_by_ref_v = [] {
  using D = std::remove_cvref_t<A>;
  if constexpr (is_object_ref<std::decay_t<P>>::value || !is_object_ref<D>::value) {
    return false;
  } else {
    static_assert(std::is_same_v<typename D::value_type, std::decay_t<P>>,
                  "an ObjectRef<T> item feeds a parameter of type T or const T& only");
    return true;
  }
}();
// The same for a starmap: any element of the tuple-like Item against the parameters.
template <class Params, class Item>
constexpr bool star_feeds_by_ref() {
  if constexpr (requires { std::tuple_size<Item>::value; }) {
    if constexpr (std::tuple_size_v<Item> == std::tuple_size_v<Params>) {
      return []<std::size_t... I>(std::index_sequence<I...>) {
        return (
            item_feeds_by_ref_v<std::tuple_element_t<I, Params>, std::tuple_element_t<I, Item>> ||
            ...);
      }
      (std::make_index_sequence<std::tuple_size_v<Params>>{});
    }
  }
  return false;
}
template <class T>
struct is_ref_or : std::false_type {};
template <class T>
struct is_ref_or<task_detail::RefOr<T>> : std::true_type {};
template <class Tuple>
constexpr bool is_ref_tuple_v = false;
template <class... T>
constexpr bool is_ref_tuple_v<std::tuple<T...>> = (is_ref_or<T>::value || ...);

// A map item as its chunk carries it: a tuple of the parameter, as a plain call's arguments,
// or (decided from the item's type, at compile time) a tuple of RefOr where the item is a ref
// feeding the value; only chunks of refs pay for the RefOr tags.
template <class P>
struct MapItem {
  template <class X>
  auto operator()(X&& x) const {
    using D = std::decay_t<P>;
    if constexpr (item_feeds_by_ref_v<P, X>) {
      return std::tuple<task_detail::RefOr<D>>(task_detail::RefOr<D>::from(x));
    } else {
      return std::tuple<D>(x);
    }
  }
};
// As MapItem, for a starmap's items (tuples of the arguments).
template <class... P>
struct StarItem {
  template <class X>
  auto operator()(X&& x) const {
    if constexpr (star_feeds_by_ref<std::tuple<P...>, std::remove_cvref_t<X>>()) {
      return [&x]<std::size_t... I>(std::index_sequence<I...>) {
        return std::tuple<task_detail::RefOr<std::decay_t<P>>...>(
            task_detail::RefOr<std::decay_t<P>>::from(std::get<I>(x))...);
      }
      (std::index_sequence_for<P...>{});
    } else {
      return std::tuple<std::decay_t<P>...>(x);
    }
  }
};

// Task graphs: where the future A = Future<T> feeds a parameter P taking T itself, a large
// result of A's task, kept in the store (TaskState::value_object), is passed on by handle.
template <class A>
struct future_value {};
template <class R>
struct future_value<Future<R>> {
  using type = R;
};
template <class P, class A>
constexpr bool by_handle_v = [] {
  using D = std::remove_cvref_t<A>;
  if constexpr (!is_future_v<D> || is_object_ref<std::decay_t<P>>::value) {
    return false;
  } else {
    return std::is_same_v<typename future_value<D>::type, std::decay_t<P>>;
  }
}();
// A's finished task's value where it is held in the store (a large result kept by handle) and
// can still be opened by name, else null: the pool that kept it may have shut down (a future
// outlives its pool and may feed a task of another), and then the value goes as a value.
template <class P, class A>
std::shared_ptr<ObjectBlock> kept_value(const A& a) {
  if constexpr (by_handle_v<P, A>) {
    std::shared_ptr<ObjectBlock> b;
    {
      std::lock_guard lk(a.state()->m);
      b = a.state()->value_object;
    }
    if (b && object_named(b->name())) return b;
  }
  return nullptr;
}
// An argument as a RefOr: a dependency's value held in the store as a ref to it; otherwise as
// resolve_arg gives it (a value, or an ObjectRef feeding the value).
template <class P, class A>
task_detail::RefOr<std::decay_t<P>> ref_or_arg(A& a) {
  using T = std::decay_t<P>;
  if (auto b = kept_value<P>(a)) return task_detail::RefOr<T>::from(ObjectRef<T>(std::move(b)));
  return task_detail::RefOr<T>::from(resolve_arg(a));
}

}  // namespace detail

class Pool {
 public:
  explicit Pool(PoolOptions opt = {});
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // Waits until every local worker has registered (false on timeout or if spawning failed).
  bool wait_ready(std::chrono::milliseconds timeout);
  // Waits until at least n workers (local or remote) are registered.
  bool wait_workers(unsigned n, std::chrono::milliseconds timeout);
  // Task slots of the registered workers (at least 1; local workers have one each; a remote
  // worker holding an actor is not counted).
  unsigned size() const noexcept;
  // The address remote workers connect to (the real port if the listen port was 0).
  std::string listen_endpoint() const;
  PoolStats stats() const;
  // The last failures and worker output lines (for the status page).
  RecentNotes recent() const;
  const PoolOptions& options() const noexcept;

  // An argument may be an ObjectRef<T> where fn takes a T or const T&: the worker reads the
  // object (once per process, as for an ObjectRef parameter) and passes its value; a const T&
  // gets the shared decoded value itself, without a copy.
  // An argument may be a Future<T> where fn takes a T: the task then waits in the pool (not
  // in this thread) until every such future has a value, and runs with those values. If one
  // failed, this one fails with DependencyFailed naming it (Cancelled, if it was cancelled);
  // cancelling this one while it waits drops it. A shutdown(drain) first lets such waiting
  // tasks run; their dependencies must be able to finish (tasks of this or another pool).
  // A result a local worker passed as a shared-memory object (above object_threshold) stays
  // in the object store (PoolStats::results_kept), finished before this submit or not; where
  // fn takes that type itself it goes to fn by name. The future still reads it, and it is
  // freed once this task is final and no future to the dependency is left.
  template <class R, class... P, class... A>
  Future<R> submit(R (*fn)(P...), A&&... args) {
    if constexpr ((detail::is_future_v<A> || ...)) {
      return submit_after(fn, std::forward<A>(args)...);
    } else {
      return Future<R>(enqueue(make_task(fn, std::forward<A>(args)...), true), core_);
    }
  }
  // As submit, with this task's own limits (ferry::with).
  template <class R, class... P, class... A>
  Future<R> submit(With w, R (*fn)(P...), A&&... args) {
    auto t = make_task(fn, std::forward<A>(args)...);
    t->timeout = w.options.timeout;
    t->max_retries = w.options.max_retries;
    return Future<R>(enqueue(std::move(t), true), core_);
  }
  // As submit, but refuses (nullopt) instead of waiting when max_in_flight tasks are pending.
  template <class R, class... P, class... A>
  std::optional<Future<R>> try_submit(R (*fn)(P...), A&&... args) {
    auto s = enqueue(make_task(fn, std::forward<A>(args)...), false);
    if (!s) return std::nullopt;
    return Future<R>(std::move(s), core_);
  }
  // By registered name; R must match the task's result type (else get() fails to decode).
  template <class R, class... A>
  Future<R> submit_named(std::string_view name, A&&... args) {
    auto t = std::make_shared<detail::TaskState>();
    t->function = index_of(name);
    detail::RefCollector refs;
    t->args = encode_value(std::tuple<std::decay_t<A>...>(std::forward<A>(args)...));
    t->keep = refs.take();
    return Future<R>(enqueue(std::move(t), true), core_);
  }

  // Puts value into the pool's object store (object_ref.hpp): encoded once into a
  // shared-memory segment that the pool's local workers map, passed to tasks taking an
  // ObjectRef<T> as a handle. Freed with its last ref and the last task holding one, or when
  // the pool shuts down. Throws ferry::Exception (no_space naming the size) if /dev/shm is full.
  template <class T>
  ObjectRef<std::decay_t<T>> put(const T& value) {
    return ObjectRef<std::decay_t<T>>(put_encoded(encode_value(value)));
  }
  // As put, for a value already encoded (cereal, as T): the object store's untyped entry.
  std::shared_ptr<detail::ObjectBlock> put_encoded(Bytes encoded);
  // Runs one task and waits for it.
  template <class R, class... P, class... A>
  R apply(R (*fn)(P...), A&&... args) {
    return submit(fn, std::forward<A>(args)...).get();
  }

  // fn over every item, results in input order; chunks of chunksize items travel as one task
  // (0: automatic, about 4 chunks per worker). If items failed, throws the failure of the first
  // in input order (FailureInfo::item its index), once every chunk has finished (as Python's
  // Pool.map, it does not return while its tasks still run). An item (or, in starmap, an
  // element of one) may be an ObjectRef<T> where fn takes T or const T&, as in submit; an
  // item whose object cannot be read fails alone (ObjectUnavailable).
  template <class R, class P, std::ranges::input_range Items>
  std::vector<R> map(R (*fn)(P), Items&& items, std::size_t chunksize = 0) {
    return map_tuples<R>(task_key(fn), std::forward<Items>(items), chunksize, detail::MapItem<P>{});
  }
  // As map, with each item a tuple of the arguments.
  template <class R, class... P, std::ranges::input_range Items>
  std::vector<R> starmap(R (*fn)(P...), Items&& items, std::size_t chunksize = 0) {
    return map_tuples<R>(task_key(fn), std::forward<Items>(items), chunksize,
                         detail::StarItem<P...>{});
  }
  // Streams results as they finish, with their input index; at most `window` chunks in flight
  // (0: max_in_flight). Items are read from the range only as the window allows. Each item has
  // its own outcome: a failed one throws from next() without losing the rest of its chunk.
  template <class R, class P, std::ranges::input_range Items>
  ImapUnordered<R> imap_unordered(R (*fn)(P), Items&& items, std::size_t chunksize = 1,
                                  std::size_t window = 0);
  // Folds fn(item) over items with reduce (in completion order: reduce must be associative and
  // commutative).
  template <class R, class P, std::ranges::input_range Items, class T, class Reduce>
  T map_reduce(R (*fn)(P), Items&& items, T init, Reduce reduce, std::size_t chunksize = 0);
  // As above, with options (MapReduceOptions::combine_in_workers). If chunks failed, throws
  // the first failure once every chunk has finished.
  template <class R, class P, std::ranges::input_range Items, class T, class Reduce>
  T map_reduce(R (*fn)(P), Items&& items, T init, Reduce reduce, MapReduceOptions opt);

  // Stops its actors too (with the same mode), before its workers.
  void shutdown(ShutdownMode mode = ShutdownMode::drain);

  // An instance of C (registered with FERRY_ACTOR) built from args in a worker process of its
  // own, beside the pool's workers, or (ActorPlacement::remote) on one joined remote worker
  // reserved for it (ferry/coordinator/actor.hpp: placement, order, restarts, lifetime).
  // Arguments travel as for a task (string literals as std::string). Throws ferry::Exception
  // if no worker process can be started for it (remote: none free within the start-up timeout).
  template <class C, class... A>
  requires(sizeof...(A) == 0 ||
           !std::is_same_v<std::remove_cvref_t<std::tuple_element_t<0, std::tuple<A...>>>,
                           ActorOptions>) Actor<C> actor(A&&... args) {
    return actor<C>(ActorOptions{}, std::forward<A>(args)...);
  }
  template <class C, class... A>
  Actor<C> actor(ActorOptions opt, A&&... args) {
    // Names the constructor task, so that it is registered in this program (and in the
    // copies of it that run as workers).
    (void)actor_detail::Constructor<C, actor_detail::arg_t<A>...>::registered;
    auto core = std::make_shared<detail::ActorCore>(
        options(), core_, actor_detail::class_name<C>(),
        actor_detail::constructor_name<C, actor_detail::arg_t<A>...>(),
        encode_value(std::tuple<actor_detail::arg_t<A>...>(std::forward<A>(args)...)), opt);
    actors_->add(core);
    return Actor<C>(std::move(core));
  }

  // A task known only by name at run time, its arguments already encoded: the cereal
  // encoding of the std::tuple of its parameters, or with items > 0 of a std::vector of such
  // tuples (a chunk of `items` items numbered from first_item, whose result is a chunk
  // result: TaskEntry::format_batch reads it). For command lines and language bindings.
  // Throws ferry::Exception (invalid_argument) for an unknown task name.
  FutureBase submit_encoded(std::string_view task, Bytes args, std::uint32_t items = 0,
                            std::int64_t first_item = 0);
  // About four chunks per worker for `items` items (as Python's Pool.map).
  std::size_t auto_chunksize(std::size_t items) const noexcept;
  // Tasks in the system at once (PoolOptions::max_in_flight, or its default).
  std::size_t window() const noexcept;

 private:
  template <class R>
  friend class ImapUnordered;
  friend class detail::ActorCore;
  std::shared_ptr<detail::TaskState> enqueue(std::shared_ptr<detail::TaskState> t, bool block);
  std::uint32_t index_of(std::string_view name) const;
  std::uint32_t index_of(AnyFn fn) const;

  template <class R, class... P, class... A>
  std::shared_ptr<detail::TaskState> make_task(R (*fn)(P...), A&&... args) {
    auto t = std::make_shared<detail::TaskState>();
    t->function = index_of(task_key(fn));
    detail::RefCollector refs;  // the ObjectRefs among the arguments stay alive with the task
    if constexpr ((detail::feeds_by_ref_v<P, A> || ...)) {
      // A ref where the task takes the value: each argument travels as a RefOr.
      t->args = encode_value(std::tuple<task_detail::RefOr<std::decay_t<P>>...>(
          task_detail::RefOr<std::decay_t<P>>::from(std::forward<A>(args))...));
      t->ref_args = true;
    } else {
      t->args = encode_value(std::tuple<std::decay_t<P>...>(std::forward<A>(args)...));
    }
    t->keep = refs.take();
    return t;
  }
  template <class R, class Items, class ToTuple>
  std::vector<R> map_tuples(AnyFn fn, Items&& items, std::size_t chunksize, ToTuple to_tuple);

  template <class R, class... P, class... A>
  Future<R> submit_after(R (*fn)(P...), A&&... args) {
    static_assert(sizeof...(P) == sizeof...(A), "submit: wrong number of arguments");
    auto t = std::make_shared<detail::TaskState>();
    t->function = index_of(task_key(fn));
    auto held = std::make_shared<std::tuple<std::decay_t<A>...>>(std::forward<A>(args)...);
    std::vector<FutureBase> deps;
    std::apply(
        [&deps](const auto&... a) {
          (
              [&deps](const auto& x) {
                if constexpr (detail::is_future_v<decltype(x)>) deps.push_back(x);
              }(a),
              ...);
        },
        *held);
    // Run once every dependency has a value (and not otherwise): the arguments, encoded.
    constexpr bool by_ref = (detail::feeds_by_ref_v<P, A> || ...);
    t->ref_args = by_ref;
    std::function<Bytes()> build = [held, weak = std::weak_ptr<detail::TaskState>(t)] {
      detail::RefCollector refs;
      // With a dependency's value in the store, the arguments travel as RefOr, that one as
      // a ref: its bytes are not read in and encoded again (decided now, at run time).
      const bool ref_form =
          by_ref ||
          std::apply([](const auto&... a) { return (detail::kept_value<P>(a) || ...); }, *held);
      Bytes encoded = std::apply(
          [ref_form](auto&... a) {
            if (ref_form) {
              return encode_value(
                  std::tuple<task_detail::RefOr<std::decay_t<P>>...>(detail::ref_or_arg<P>(a)...));
            }
            if constexpr (!by_ref) {
              return encode_value(std::tuple<std::decay_t<P>...>(detail::resolve_arg(a)...));
            } else {
              return Bytes{};  // not reached: by_ref makes ref_form
            }
          },
          *held);
      if (auto task = weak.lock()) {
        std::lock_guard lk(task->m);
        task->ref_args = ref_form;  // not yet submitted: read when its frame is made
        if (!task->done.load()) task->keep = refs.take();
      }
      return encoded;
    };
    detail::submit_after(core_, t, std::move(deps), std::move(build));
    return Future<R>(std::move(t), core_);
  }

  std::shared_ptr<detail::PoolCore> core_;
  std::shared_ptr<detail::ActorSet> actors_ = std::make_shared<detail::ActorSet>();
};

namespace detail {

// Decodes a finished chunk and hands every item its own outcome, in input order:
// on_value(index, R&&) for an item that succeeded, on_failure(index, FailureInfo&&) for one
// that failed, with FailureInfo::item set to its index. Never throws a task's failure: a
// failure of the whole chunk (its worker died on every attempt, a timeout, a cancel, ...)
// goes to each of its items, and a result the coordinator cannot decode is a
// ferry::DecodeError for the items it covers.
template <class R, class OnValue, class OnFailure>
void for_each_batch_item(TaskState& s, OnValue&& on_value, OnFailure&& on_failure) {
  std::lock_guard lk(s.m);
  const auto first = static_cast<std::size_t>(s.first_item);
  auto fail_all = [&](const FailureInfo& f) {
    for (std::size_t i = 0; i < s.items; ++i) {
      FailureInfo fi = f;
      fi.item = static_cast<std::int64_t>(first + i);
      on_failure(first + i, std::move(fi));
    }
  };
  if (s.failure) {
    fail_all(*s.failure);
    return;
  }
  auto decode_error = [&](std::string why) {
    FailureInfo f;
    f.kind = FailureKind::remote_error;
    f.task_id = s.id;
    f.type = "ferry::DecodeError";
    f.message = "the coordinator could not decode a chunk's results: " + std::move(why);
    return f;
  };
  auto count_differs = [&](std::size_t n) {
    return decode_error("a chunk of " + std::to_string(s.items) + " items came back with " +
                        std::to_string(n) + " results");
  };
  using Stored = std::conditional_t<std::is_void_v<R>, std::monostate, R>;
  ByteView in(s.value);
  BatchMode mode{};
  if (auto st = decode_prefix(in, mode); !st) return fail_all(decode_error(st.error().message()));
  if (mode == BatchMode::all_ok) {
    std::vector<Stored> values;
    if (auto st = decode_prefix(in, values); !st) {
      return fail_all(decode_error(st.error().message()));
    }
    if (values.size() != s.items) return fail_all(count_differs(values.size()));
    for (std::size_t i = 0; i < values.size(); ++i)
      on_value(first + i, std::move(values[i]));
    return;
  }
  MixedItems mixed;
  if (auto st = decode_prefix(in, mixed); !st) return fail_all(decode_error(st.error().message()));
  if (mixed.size() != s.items) return fail_all(count_differs(mixed.size()));
  for (std::size_t i = 0; i < mixed.size(); ++i) {
    const auto index = static_cast<std::int64_t>(first + i);
    if (mixed[i].first) {
      if (auto v = decode_value<Stored>(mixed[i].second)) {
        on_value(first + i, std::move(*v));
      } else {
        FailureInfo f = decode_error(v.error().message());
        f.item = index;
        on_failure(first + i, std::move(f));
      }
      continue;
    }
    auto e = decode_value<ItemError>(mixed[i].second);
    FailureInfo f = e ? FailureInfo{} : decode_error(e.error().message());
    f.kind = FailureKind::remote_error;
    f.task_id = s.id;
    f.item = index;
    if (e) {
      f.type = std::move(e->type);
      f.message = std::move(e->what);
      f.stack = std::move(e->stack);
    }
    on_failure(first + i, std::move(f));
  }
}

// Reads items from a range into chunks of encoded argument tuples.
template <class Items, class ToTuple>
class Chunker {
 public:
  Chunker(Items& items, ToTuple to_tuple, std::size_t chunksize)
      : it_(std::ranges::begin(items)),
        end_(std::ranges::end(items)),
        to_tuple_(to_tuple),
        chunksize_(chunksize ? chunksize : 1) {}
  // Fills t with the next chunk; false when the items are exhausted.
  bool next(TaskState& t) {
    using Tuple = decltype(to_tuple_(*it_));
    std::vector<Tuple> chunk;
    chunk.reserve(chunksize_);
    for (; it_ != end_ && chunk.size() < chunksize_; ++it_)
      chunk.push_back(to_tuple_(*it_));
    if (chunk.empty()) return false;
    t.batch = true;
    t.ref_args = is_ref_tuple_v<Tuple>;  // TaskEntry::invoke_batch_refs reads it
    t.items = static_cast<std::uint32_t>(chunk.size());
    t.first_item = static_cast<std::int64_t>(next_index_);
    next_index_ += chunk.size();
    RefCollector refs;
    t.args = encode_value(chunk);
    t.keep = refs.take();
    return true;
  }

 private:
  std::ranges::iterator_t<Items> it_;
  std::ranges::sentinel_t<Items> end_;
  ToTuple to_tuple_;
  std::size_t chunksize_;
  std::size_t next_index_ = 0;
};

}  // namespace detail

template <class R, class Items, class ToTuple>
std::vector<R> Pool::map_tuples(AnyFn fn, Items&& items, std::size_t chunksize, ToTuple to_tuple) {
  if (chunksize == 0) {
    if constexpr (std::ranges::sized_range<Items>) {
      chunksize = auto_chunksize(static_cast<std::size_t>(std::ranges::size(items)));
    } else {
      chunksize = 64;
    }
  }
  const std::uint32_t index = index_of(fn);
  detail::Chunker<std::remove_reference_t<Items>, ToTuple> chunker(items, to_tuple, chunksize);
  std::vector<std::shared_ptr<detail::TaskState>> chunks;
  for (;;) {
    auto t = std::make_shared<detail::TaskState>();
    t->function = index;
    if (!chunker.next(*t)) break;
    chunks.push_back(enqueue(std::move(t), true));
  }
  static_assert(!std::is_void_v<R>, "map of a void task: use submit and wait");
  std::vector<R> out;
  std::size_t total = 0;  // every item's slot up front: no regrowth copies of the output
  for (auto& c : chunks)
    total += c->items;
  out.reserve(total);
  // Chunks and their items are visited in input order, so the first failure kept is the
  // lowest index. Every chunk is waited for before throwing: none of the map's tasks is left
  // running in the pool once map returns or throws.
  std::optional<FailureInfo> failure;
  for (auto& c : chunks) {
    c->wait();
    detail::for_each_batch_item<R>(
        *c,
        [&](std::size_t, R&& v) {
          if (!failure) out.push_back(std::move(v));
        },
        [&](std::size_t, FailureInfo&& f) {
          if (!failure) failure = std::move(f);
        });
  }
  if (failure) throw_failure(*failure);
  return out;
}

template <class R>
class ImapUnordered {
 public:
  using Item = std::pair<std::size_t, R>;
  // The next finished item, or nullopt at the end. A failed item throws its TaskFailure (with
  // FailureInfo::item its index) when it is reached; that item is then consumed, and the
  // items after it, of its chunk and of others, still come from later calls to next(). (A
  // range-for ends at the throw; call next() to go on.)
  std::optional<Item> next() {
    while (ready_.empty()) {
      while (outstanding_ < window_ && more_) {
        auto t = std::make_shared<detail::TaskState>();
        t->function = function_;
        if (!(more_ = produce_(*t))) break;
        auto s = pool_->enqueue(std::move(t), true);
        s->notify_into(queue_);
        ++outstanding_;
      }
      if (outstanding_ == 0) return std::nullopt;
      auto done = queue_->pop();
      --outstanding_;
      detail::for_each_batch_item<R>(
          *done,
          [&](std::size_t i, R&& v) {
            ready_.emplace_back(i, Outcome(std::in_place_index<0>, std::move(v)));
          },
          [&](std::size_t i, FailureInfo&& f) {
            ready_.emplace_back(i, Outcome(std::in_place_index<1>, std::move(f)));
          });
    }
    auto [index, outcome] = std::move(ready_.front());
    ready_.pop_front();
    if (outcome.index() == 1) throw_failure(std::get<1>(outcome));
    return Item(index, std::get<0>(std::move(outcome)));
  }

  struct Sentinel {};
  class Iterator {
   public:
    using value_type = Item;
    using difference_type = std::ptrdiff_t;
    explicit Iterator(ImapUnordered* m) : m_(m) { ++*this; }
    Item& operator*() { return *cur_; }
    Iterator& operator++() {
      cur_ = m_->next();
      return *this;
    }
    void operator++(int) { ++*this; }
    bool operator==(Sentinel) const { return !cur_; }

   private:
    ImapUnordered* m_;
    std::optional<Item> cur_;
  };
  Iterator begin() { return Iterator(this); }
  Sentinel end() { return {}; }

  ImapUnordered(Pool* pool, std::uint32_t function, std::size_t window,
                std::function<bool(detail::TaskState&)> produce)
      : pool_(pool), function_(function), window_(window), produce_(std::move(produce)) {}

 private:
  Pool* pool_;
  std::uint32_t function_;
  std::size_t window_;
  std::function<bool(detail::TaskState&)> produce_;
  std::shared_ptr<detail::CompletionQueue> queue_ = std::make_shared<detail::CompletionQueue>();
  // Items of finished chunks not yet returned: a value, or the failure to throw.
  using Outcome = std::variant<R, FailureInfo>;
  std::deque<std::pair<std::size_t, Outcome>> ready_;
  std::size_t outstanding_ = 0;
  bool more_ = true;
};

template <class R, class P, std::ranges::input_range Items>
ImapUnordered<R> Pool::imap_unordered(R (*fn)(P), Items&& items, std::size_t chunksize,
                                      std::size_t window) {
  auto to_tuple = detail::MapItem<P>{};
  // The range is kept alive by the generator (moved in, or viewed if an lvalue; a const one
  // stays const in the view).
  using Held = std::conditional_t<std::is_lvalue_reference_v<Items>,
                                  std::ranges::ref_view<std::remove_reference_t<Items>>,
                                  std::remove_cvref_t<Items>>;
  auto holder = std::make_shared<Held>(std::forward<Items>(items));
  auto chunker = std::make_shared<
      detail::Chunker<std::remove_reference_t<decltype(*holder)>, decltype(to_tuple)>>(
      *holder, to_tuple, chunksize);
  std::function<bool(detail::TaskState&)> produce = [holder, chunker](detail::TaskState& t) {
    return chunker->next(t);
  };
  return ImapUnordered<R>(this, index_of(task_key(fn)), window ? window : this->window(),
                          std::move(produce));
}

template <class R, class P, std::ranges::input_range Items, class T, class Reduce>
T Pool::map_reduce(R (*fn)(P), Items&& items, T init, Reduce reduce, std::size_t chunksize) {
  if (chunksize == 0) {
    if constexpr (std::ranges::sized_range<Items>) {
      chunksize = auto_chunksize(static_cast<std::size_t>(std::ranges::size(items)));
    } else {
      chunksize = 64;
    }
  }
  auto results = imap_unordered(fn, std::forward<Items>(items), chunksize);
  while (auto item = results.next())
    init = reduce(std::move(init), std::move(item->second));
  return init;
}

template <class R, class P, std::ranges::input_range Items, class T, class Reduce>
T Pool::map_reduce(R (*fn)(P), Items&& items, T init, Reduce reduce, MapReduceOptions opt) {
  if (!opt.combine_in_workers)
    return map_reduce(fn, std::forward<Items>(items), std::move(init), reduce, opt.chunksize);
  // Items that are refs feeding fn's value go to the "[refs]" twin, as RefOr.
  constexpr bool by_ref = detail::item_feeds_by_ref_v<P, std::ranges::range_reference_t<Items>>;
  std::optional<AnyFn> combined;
  if constexpr (std::is_pointer_v<Reduce> && std::is_function_v<std::remove_pointer_t<Reduce>>) {
    static_assert(std::is_same_v<std::decay_t<R>, T>,
                  "combine_in_workers: the task's result type must be the reduced type");
    const auto& registry = TaskRegistry::instance();
    const auto key = reinterpret_cast<AnyFn>(reduce);
    combined = by_ref ? registry.combined_refs_of(task_key(fn), key)
                      : registry.combined_of(task_key(fn), key);
  }
  if (!combined) {
    throw Exception(Error{Errc::invalid_argument,
                          "map_reduce with combine_in_workers: reduce must be a function "
                          "registered with FERRY_COMBINE(" +
                              TaskRegistry::instance().at(index_of(task_key(fn)))->name +
                              ", reduce)"});
  }
  std::size_t chunksize = opt.chunksize;
  if (chunksize == 0) {
    if constexpr (std::ranges::sized_range<Items>) {
      chunksize = auto_chunksize(static_cast<std::size_t>(std::ranges::size(items)));
    } else {
      chunksize = 64;
    }
  }
  const std::uint32_t index = index_of(*combined);
  auto done = std::make_shared<detail::CompletionQueue>();
  std::size_t pending = 0;
  std::optional<FailureInfo> first_failure;
  auto fold = [&](const std::shared_ptr<detail::TaskState>& s) {
    --pending;
    try {
      init = reduce(std::move(init), Future<T>(s, core_).get());
    } catch (const TaskFailure& e) {
      if (!first_failure) first_failure = e.info();
    }
  };
  using Item = std::conditional_t<by_ref, task_detail::RefOr<std::decay_t<P>>, std::decay_t<P>>;
  std::vector<Item> chunk;
  auto send = [&] {
    auto t = std::make_shared<detail::TaskState>();
    t->function = index;
    {
      detail::RefCollector refs;
      t->args = encode_value(std::tuple<std::vector<Item>>(std::move(chunk)));
      t->keep = refs.take();
    }
    chunk.clear();
    t = enqueue(std::move(t), true);
    ++pending;
    t->notify_into(done);
    // Fold what has finished meanwhile: partials do not pile up while the input streams.
    while (auto s = done->pop_until(std::chrono::steady_clock::now()))
      fold(s);
  };
  for (auto&& x : items) {
    if constexpr (by_ref) {
      chunk.push_back(Item::from(x));
    } else {
      chunk.emplace_back(std::forward<decltype(x)>(x));
    }
    if (chunk.size() == chunksize) send();
  }
  if (!chunk.empty()) send();
  while (pending > 0)
    fold(done->pop());
  if (first_failure) throw_failure(*first_failure);
  return init;
}

// Yields the given futures in the order they finish: next() gives the next finished one, or
// nullopt once all were given. With a timeout, next() throws ferry::TimeoutError when the
// time (counted from as_completed's call, as Python's) runs out first. Futures of mixed
// result types go in as FutureBase.
template <class F>
class AsCompleted {
 public:
  explicit AsCompleted(std::vector<F> futures,
                       std::optional<std::chrono::steady_clock::time_point> deadline = {})
      : deadline_(deadline) {
    for (auto& f : futures)
      by_state_.emplace(f.state().get(), f);
    for (auto& f : futures)
      f.state()->notify_into(queue_);
    left_ = futures.size();
  }
  std::optional<F> next() {
    if (left_ == 0) return std::nullopt;
    std::shared_ptr<detail::TaskState> s;
    if (deadline_) {
      s = queue_->pop_until(*deadline_);
      if (!s) {
        throw TimeoutError("as_completed: " + std::to_string(left_) + " of " +
                           std::to_string(by_state_.size()) +
                           " futures had not finished when the timeout ran out");
      }
    } else {
      s = queue_->pop();
    }
    --left_;
    return by_state_.at(s.get());
  }

 private:
  std::optional<std::chrono::steady_clock::time_point> deadline_;
  std::shared_ptr<detail::CompletionQueue> queue_ = std::make_shared<detail::CompletionQueue>();
  std::map<detail::TaskState*, F> by_state_;
  std::size_t left_ = 0;
};

template <class R>
AsCompleted<Future<R>> as_completed(std::vector<Future<R>> futures) {
  return AsCompleted<Future<R>>(std::move(futures));
}
template <class R, class Rep, class Period>
AsCompleted<Future<R>> as_completed(std::vector<Future<R>> futures,
                                    std::chrono::duration<Rep, Period> timeout) {
  return AsCompleted<Future<R>>(std::move(futures), detail::deadline_after(timeout));
}
inline AsCompleted<FutureBase> as_completed(std::vector<FutureBase> futures) {
  return AsCompleted<FutureBase>(std::move(futures));
}
template <class Rep, class Period>
AsCompleted<FutureBase> as_completed(std::vector<FutureBase> futures,
                                     std::chrono::duration<Rep, Period> timeout) {
  return AsCompleted<FutureBase>(std::move(futures), detail::deadline_after(timeout));
}

}  // namespace ferry
