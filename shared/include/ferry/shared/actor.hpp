// Actors in the task registry: a class whose one instance lives in a worker process, and whose
// methods are called there (Pool::actor, ferry/coordinator/actor.hpp, is the caller's side).
//
//   struct Counter {
//     explicit Counter(std::int64_t start) : n(start) {}
//     std::int64_t add(std::int64_t k) { return n += k; }
//     std::int64_t get() const { return n; }
//     std::int64_t n;
//   };
//   FERRY_ACTOR(Counter, add, get);   // at namespace scope, like FERRY_TASK
//
// Each method becomes a task named "Counter.add" (arguments: the method's parameters decayed,
// result: its return type), run on the instance of that worker process. The constructor is a
// task named "Counter.new(long)" (its parameter types), registered where Pool::actor<Counter>
// is called with those argument types; a task library that holds an actor whose constructor
// takes arguments also names them, so a separate ferry-worker has that task too:
// FERRY_ACTOR_NEW(Counter, std::int64_t). A default constructor needs nothing more.
//
// Threading: registration as for FERRY_TASK (static initialisation). In a worker, one actor
// instance per class and process; a worker runs one task at a time, so methods need no lock.
#pragma once

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeindex>
#include <typeinfo>
#include <utility>

#include "ferry/shared/task.hpp"

namespace ferry {
namespace actor_detail {

// A constructor or call argument as it travels: decayed, and a string literal as std::string.
template <class A>
using arg_t = std::conditional_t<std::is_same_v<std::decay_t<A>, const char*> ||
                                     std::is_same_v<std::decay_t<A>, char*>,
                                 std::string, std::decay_t<A>>;

// The class's name as tasks carry it ("Counter", "bank::Account").
template <class C>
std::string class_name() {
  auto n = task_detail::readable_type_name(typeid(C));
  // A class in an anonymous namespace (common in one-file programs and tests) reads better bare.
  for (std::string_view anon = "(anonymous namespace)::";;) {
    auto at = n.find(anon);
    if (at == std::string::npos) return n;
    n.erase(at, anon.size());
  }
}

// This process's instance of C (in the worker that hosts the actor; empty elsewhere).
template <class C>
std::unique_ptr<C>& instance() {
  static std::unique_ptr<C> one;
  return one;
}

template <class C>
C& current() {
  auto& p = instance<C>();
  if (!p) {
    throw std::logic_error("actor " + class_name<C>() +
                           " has no instance in this process: its methods run only in the "
                           "worker that Pool::actor started for it");
  }
  return *p;
}

// The constructor task: builds this process's instance (the one before, if any, is destroyed).
template <class C, class... A>
void construct(A... args) {
  instance<C>().reset();
  instance<C>() = std::make_unique<C>(std::move(args)...);
}

template <class C, class... A>
std::string constructor_name() {
  std::string s = class_name<C>() + ".new(";
  bool first = true;
  ((s += (first ? "" : ", "), s += task_detail::readable_type_name(typeid(A)), first = false), ...);
  return s + ")";
}

// Which task each member function is, in this process: a member pointer's bytes (with the
// class) name its task. Filled by FERRY_ACTOR; Actor::call looks methods up here.
class MethodTable {
 public:
  static MethodTable& instance() {
    static MethodTable t;
    return t;
  }
  template <class M>
  void add(std::type_index cls, M m, std::string task) {
    std::lock_guard lk(m_);
    by_key_[{cls, key(m)}] = std::move(task);
  }
  template <class M>
  const std::string* find(std::type_index cls, M m) const {
    std::lock_guard lk(m_);
    auto it = by_key_.find({cls, key(m)});
    return it == by_key_.end() ? nullptr : &it->second;
  }

 private:
  template <class M>
  static std::string key(M m) {
    std::string k(sizeof(M), '\0');
    std::memcpy(k.data(), &m, sizeof(M));
    return k;
  }
  mutable std::mutex m_;
  std::map<std::pair<std::type_index, std::string>, std::string> by_key_;
};

// A method as a task: Method<&C::m>::run takes the method's parameters and calls it on this
// process's instance.
template <auto M, class Sig = decltype(M)>
struct Method;
template <auto M, class C, class R, class... P>
struct Method<M, R (C::*)(P...)> {
  using Class = C;
  static std::decay_t<R> run(std::decay_t<P>... args) {
    return (current<C>().*M)(std::move(args)...);
  }
};
template <auto M, class C, class R, class... P>
struct Method<M, R (C::*)(P...) const> {
  using Class = C;
  static std::decay_t<R> run(std::decay_t<P>... args) {
    return (current<C>().*M)(std::move(args)...);
  }
};
template <auto M, class C, class R, class... P>
struct Method<M, R (C::*)(P...) noexcept> : Method<M, R (C::*)(P...)> {};
template <auto M, class C, class R, class... P>
struct Method<M, R (C::*)(P...) const noexcept> : Method<M, R (C::*)(P...) const> {};

template <auto M>
void add_method(const char* method) {
  using Mt = Method<M>;
  using C = typename Mt::Class;
  auto name = class_name<C>() + "." + method;
  TaskRegistry::instance().add(task_detail::make_entry(name, &Mt::run));
  MethodTable::instance().add(std::type_index(typeid(C)), M, std::move(name));
}

template <class C, class... A>
void add_constructor() {
  TaskRegistry::instance().add(
      task_detail::make_entry(constructor_name<C, A...>(), &construct<C, A...>));
}

// Registers C's constructor from A... during static initialisation, in every program that
// names it (Pool::actor<C>(args...) does, so a self-exec worker has it too).
template <class C, class... A>
struct Constructor {
  static inline const bool registered = (add_constructor<C, A...>(), true);
};

}  // namespace actor_detail

// What FERRY_ACTOR expands to.
struct ActorRegistrar {
  template <class C, auto... Ms>
  static ActorRegistrar make(const char* methods) {
    if constexpr (std::is_default_constructible_v<C>) actor_detail::add_constructor<C>();
    // The method names, as the macro wrote them: "add, get".
    std::string names = methods;
    std::size_t at = 0;
    auto next = [&] {
      while (at < names.size() && (names[at] == ' ' || names[at] == ','))
        ++at;
      auto end = names.find(',', at);
      if (end == std::string::npos) end = names.size();
      auto n = names.substr(at, end - at);
      while (!n.empty() && n.back() == ' ')
        n.pop_back();
      at = end;
      return n;
    };
    (actor_detail::add_method<Ms>(next().c_str()), ...);
    return {};
  }
};

}  // namespace ferry

#define FERRY_ACTOR_M1(C, m) &C::m
#define FERRY_ACTOR_MAP_1(C, a) FERRY_ACTOR_M1(C, a)
#define FERRY_ACTOR_MAP_2(C, a, ...) FERRY_ACTOR_M1(C, a), FERRY_ACTOR_MAP_1(C, __VA_ARGS__)
#define FERRY_ACTOR_MAP_3(C, a, ...) FERRY_ACTOR_M1(C, a), FERRY_ACTOR_MAP_2(C, __VA_ARGS__)
#define FERRY_ACTOR_MAP_4(C, a, ...) FERRY_ACTOR_M1(C, a), FERRY_ACTOR_MAP_3(C, __VA_ARGS__)
#define FERRY_ACTOR_MAP_5(C, a, ...) FERRY_ACTOR_M1(C, a), FERRY_ACTOR_MAP_4(C, __VA_ARGS__)
#define FERRY_ACTOR_MAP_6(C, a, ...) FERRY_ACTOR_M1(C, a), FERRY_ACTOR_MAP_5(C, __VA_ARGS__)
#define FERRY_ACTOR_MAP_7(C, a, ...) FERRY_ACTOR_M1(C, a), FERRY_ACTOR_MAP_6(C, __VA_ARGS__)
#define FERRY_ACTOR_MAP_8(C, a, ...) FERRY_ACTOR_M1(C, a), FERRY_ACTOR_MAP_7(C, __VA_ARGS__)
#define FERRY_ACTOR_MAP_9(C, a, ...) FERRY_ACTOR_M1(C, a), FERRY_ACTOR_MAP_8(C, __VA_ARGS__)
#define FERRY_ACTOR_MAP_10(C, a, ...) FERRY_ACTOR_M1(C, a), FERRY_ACTOR_MAP_9(C, __VA_ARGS__)
#define FERRY_ACTOR_MAP_11(C, a, ...) FERRY_ACTOR_M1(C, a), FERRY_ACTOR_MAP_10(C, __VA_ARGS__)
#define FERRY_ACTOR_MAP_12(C, a, ...) FERRY_ACTOR_M1(C, a), FERRY_ACTOR_MAP_11(C, __VA_ARGS__)
#define FERRY_ACTOR_NTH(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, N, ...) N
#define FERRY_ACTOR_MAP(C, ...)                                                               \
  FERRY_ACTOR_NTH(__VA_ARGS__, FERRY_ACTOR_MAP_12, FERRY_ACTOR_MAP_11, FERRY_ACTOR_MAP_10,    \
                  FERRY_ACTOR_MAP_9, FERRY_ACTOR_MAP_8, FERRY_ACTOR_MAP_7, FERRY_ACTOR_MAP_6, \
                  FERRY_ACTOR_MAP_5, FERRY_ACTOR_MAP_4, FERRY_ACTOR_MAP_3, FERRY_ACTOR_MAP_2, \
                  FERRY_ACTOR_MAP_1)                                                          \
  (C, __VA_ARGS__)

// FERRY_ACTOR(Class, method, ...): registers Class (up to 12 methods) as an actor; each method a
// task named "Class.method".
#define FERRY_ACTOR(C, ...)                                                           \
  [[maybe_unused]] static const ::ferry::ActorRegistrar FERRY_TASK_CAT(ferry_actor_,  \
                                                                       __COUNTER__) = \
      ::ferry::ActorRegistrar::make<C, FERRY_ACTOR_MAP(C, __VA_ARGS__)>(#__VA_ARGS__)
// FERRY_ACTOR_NEW(Class, ArgTypes...): registers the constructor from those argument types (for
// a task library served by ferry-worker; a program's own pool.actor<Class>(args...) needs none).
#define FERRY_ACTOR_NEW(C, ...)                                                      \
  [[maybe_unused]] static const bool FERRY_TASK_CAT(ferry_actor_new_, __COUNTER__) = \
      (::ferry::actor_detail::add_constructor<C, __VA_ARGS__>(), true)
