#include "ferry/shared/task.hpp"

#include <cxxabi.h>
#include <dirent.h>
#include <dlfcn.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "ferry/shared/task_library.hpp"

namespace ferry {

TaskRegistry& TaskRegistry::instance() {
  static TaskRegistry registry;
  return registry;
}

namespace {
std::uint64_t fnv1a(std::uint64_t h, std::string_view s);

bool is_directory(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
}  // namespace

std::uint64_t signature_hash(std::string_view name, std::string_view signature) noexcept {
  std::uint64_t h = fnv1a(14695981039346656037ULL, name);
  h = fnv1a(h, " ");
  return fnv1a(h, signature);
}

Status TaskRegistry::load_library(const std::string& path) {
  auto fail = [&](std::string why) {
    return Status(Error{Errc::invalid_argument, "task library " + path + ": " + why});
  };
  if (path.empty()) return Error{Errc::invalid_argument, "task library: empty path"};
  if (is_directory(path)) {
    // Every *.so in it, in name order (a deployment's library folder).
    DIR* d = ::opendir(path.c_str());
    if (!d) return fail(std::string("cannot read the folder: ") + std::strerror(errno));
    std::vector<std::string> names;
    while (const dirent* ent = ::readdir(d)) {
      const std::string_view n = ent->d_name;
      if (n.size() > 3 && n.substr(n.size() - 3) == ".so") names.emplace_back(n);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const auto& n : names) {
      if (auto st = load_library(path + "/" + n); !st) return st;
    }
    return {};
  }
  char resolved[PATH_MAX];
  if (!::realpath(path.c_str(), resolved)) {
    return fail(std::string("cannot open it: ") + std::strerror(errno));
  }
  const std::string abs = resolved;
  if (std::find(libraries_.begin(), libraries_.end(), abs) != libraries_.end()) return {};
  if (frozen_) {
    return Error{Errc::invalid_argument,
                 "task library " + path +
                     ": loaded after the first pool or worker started (load task libraries "
                     "first: PoolOptions::task_libraries of the first pool, or --tasks)"};
  }
  // Never closed: the registry keeps pointers into it for the life of the process.
  void* h = ::dlopen(abs.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* e = ::dlerror();
    return fail(std::string("cannot load it: ") + (e ? e : "unknown error"));
  }
  using EntryFn = const TaskLibraryInfo* (*)();
  auto entry = reinterpret_cast<EntryFn>(::dlsym(h, FERRY_TASK_LIBRARY_SYMBOL));
  if (!entry) {
    return fail("not a ferry task library (no " FERRY_TASK_LIBRARY_SYMBOL
                " symbol; build it with ferry_add_task_library)");
  }
  const TaskLibraryInfo* info = entry();
  if (!info) return fail(FERRY_TASK_LIBRARY_SYMBOL " returned nothing");
  if (info->abi != kTaskLibraryAbi) {
    return fail("built for task library ABI " + std::to_string(info->abi) + ", this program uses " +
                std::to_string(kTaskLibraryAbi) + "; rebuild it against this ferry");
  }
  if (info->protocol_version != kProtocolVersion) {
    return fail("built against ferry protocol " + std::to_string(info->protocol_version) +
                ", this program speaks " + std::to_string(kProtocolVersion) +
                "; rebuild it against this ferry");
  }
  if (info->entry_size != sizeof(TaskEntry) || !info->entries) {
    return fail("built against another ferry (task entry of " + std::to_string(info->entry_size) +
                " bytes, here " + std::to_string(sizeof(TaskEntry)) +
                "); rebuild it against this ferry");
  }
  const std::vector<TaskEntry>& got = *info->entries();
  if (&got == &entries_) {
    // The library that holds this registry, naming itself: its tasks are here already.
    libraries_.push_back(abs);
    return {};
  }
  // Check every name first, so a refused library adds nothing.
  for (const auto& e : got) {
    for (const auto& have : entries_) {
      if (have.name == e.name && have.fn != e.fn) {
        return fail(
            "task '" + e.name + "' is already registered" +
            (have.library.empty() ? std::string(" by this program") : " by " + have.library) +
            " as a different function");
      }
    }
  }
  for (TaskEntry e : got) {
    e.library = abs;
    add(std::move(e));
  }
  libraries_.push_back(abs);
  return {};
}

Status load_task_libraries_from_env() {
  const char* v = std::getenv(kTaskLibrariesEnv);
  if (!v) return {};
  std::string_view rest = v;
  while (!rest.empty()) {
    const auto nl = rest.find('\n');
    const std::string one(rest.substr(0, nl));
    rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
    if (one.empty()) continue;
    if (auto st = TaskRegistry::instance().load_library(one); !st) return st;
  }
  return {};
}

void TaskRegistry::add(TaskEntry e) {
  if (frozen_) {
    throw std::logic_error("ferry: task '" + e.name +
                           "' registered after the first pool or worker started");
  }
  for (const auto& have : entries_) {
    if (have.name != e.name) continue;
    if (have.fn == e.fn) return;  // the same registration seen twice
    throw std::logic_error("ferry: two different functions registered as task '" + e.name + "'");
  }
  entries_.push_back(std::move(e));
}

namespace {
std::uint64_t fnv1a(std::uint64_t h, std::string_view s) {
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  return h;
}
}  // namespace

void TaskRegistry::freeze() {
  if (frozen_) return;
  std::sort(entries_.begin(), entries_.end(),
            [](const TaskEntry& a, const TaskEntry& b) { return a.name < b.name; });
  std::uint64_t h = 14695981039346656037ULL;
  for (std::uint32_t i = 0; i < entries_.size(); ++i) {
    by_name_.emplace(entries_[i].name, i);
    by_fn_.emplace(entries_[i].fn, i);
    h ^= entries_[i].signature_hash;
    h *= 1099511628211ULL;
  }
  hash_ = h;
  frozen_ = true;
}

Result<std::uint32_t> TaskRegistry::index_of(std::string_view name) const {
  if (auto it = by_name_.find(name); it != by_name_.end()) return it->second;
  return Error{Errc::not_found, "no task named '" + std::string(name) +
                                    "' is registered (FERRY_TASK; `ferry-coordinator tasks` "
                                    "lists them)"};
}

Result<std::uint32_t> TaskRegistry::index_of(AnyFn fn) const {
  if (auto it = by_fn_.find(fn); it != by_fn_.end()) return it->second;
  return Error{Errc::not_found, "function is not a registered task (add FERRY_TASK(fn))"};
}

const TaskEntry* TaskRegistry::at(std::uint32_t index) const noexcept {
  return index < entries_.size() ? &entries_[index] : nullptr;
}

void TaskRegistry::add_combined(AnyFn fn, AnyFn combine, AnyFn combined) {
  combined_[{fn, combine}] = combined;
}

std::optional<AnyFn> TaskRegistry::combined_of(AnyFn fn, AnyFn combine) const {
  if (auto it = combined_.find({fn, combine}); it != combined_.end()) return it->second;
  return std::nullopt;
}

void TaskRegistry::add_combined_refs(AnyFn fn, AnyFn combine, AnyFn combined) {
  combined_refs_[{fn, combine}] = combined;
}

std::optional<AnyFn> TaskRegistry::combined_refs_of(AnyFn fn, AnyFn combine) const {
  if (auto it = combined_refs_.find({fn, combine}); it != combined_refs_.end()) return it->second;
  return std::nullopt;
}

namespace task_detail {

std::string type_name_of(const std::type_info& t) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> p(abi::__cxa_demangle(t.name(), nullptr, nullptr, &status),
                                           std::free);
  return status == 0 && p ? std::string(p.get()) : std::string(t.name());
}

std::string readable_type_name(const std::type_info& t) {
  std::string s = type_name_of(t);
  // libstdc++'s spellings of the common aliases, longest first.
  static const std::pair<std::string_view, std::string_view> kAliases[] = {
      {"std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >",
       "std::string"},
      {"std::__cxx11::", "std::"},
  };
  for (const auto& [from, to] : kAliases) {
    for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at)) {
      s.replace(at, from.size(), to);
      at += to.size();
    }
  }
  // Default allocators say nothing: "std::vector<int, std::allocator<int> >" -> "std::vector<int>".
  constexpr std::string_view kAlloc = ", std::allocator<";
  for (std::size_t at = s.find(kAlloc); at != std::string::npos; at = s.find(kAlloc, at)) {
    std::size_t end = at + kAlloc.size();
    for (int depth = 1; end < s.size() && depth > 0; ++end)
      depth += s[end] == '<' ? 1 : s[end] == '>' ? -1 : 0;
    while (end < s.size() && s[end] == ' ')
      ++end;  // the space libstdc++ puts before the enclosing '>'
    s.erase(at, end - at);
  }
  return s;
}

std::string current_exception_type() {
  const std::type_info* t = abi::__cxa_current_exception_type();
  return t ? type_name_of(*t) : std::string("unknown");
}

}  // namespace task_detail
}  // namespace ferry

// Defined by the worker runtime (worker/src/stack_trace.cpp) and exported by programs that
// link it; weak, so code without a worker (or a task library loaded by one) still links.
extern "C" std::size_t ferry_exception_stack_v1(char* out, std::size_t cap) noexcept
    __attribute__((weak));

namespace ferry {
namespace task_detail {

std::string current_exception_stack() {
  if (ferry_exception_stack_v1 == nullptr) return {};
  std::string s(4096, '\0');
  std::size_t n = ferry_exception_stack_v1(s.data(), s.size());
  if (n > s.size()) {  // longer than guessed: ask again with room for all of it
    s.resize(n);
    n = std::min(n, ferry_exception_stack_v1(s.data(), s.size()));
  }
  s.resize(n);
  return s;
}

std::string current_exception_what() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "(exception not derived from std::exception)";
  }
}

void encode_mixed(Bytes& out, MixedItems& items, std::size_t max_out) {
  // Sizes as the archive writes them: each item is a bool, a length and its bytes; the batch
  // is the mode, a count and the items.
  static const std::size_t kItemOverhead = encode_value(std::pair<bool, Bytes>{}).size();
  static const std::size_t kBatchOverhead = [] {
    Bytes b;
    encode_into(b, BatchMode::mixed, MixedItems{});
    return b.size();
  }();
  const std::size_t base = out.size() + kBatchOverhead;
  const std::string limit = " (limit " + std::to_string(max_out) + " bytes)";
  std::size_t total = base;
  for (auto& item : items) {
    if (item.first && base + kItemOverhead + item.second.size() > max_out) {
      // Could not be sent even as the chunk's only item.
      item = {false, encode_value(ItemError{std::string(kFrameTooLargeType),
                                            "this item's result encodes to " +
                                                std::to_string(item.second.size()) +
                                                " bytes, more than one frame can carry" + limit,
                                            {}})};
    }
    total += kItemOverhead + item.second.size();
  }
  if (total <= max_out) {
    encode_into(out, BatchMode::mixed, items);
    return;
  }
  // Still too large together: leave out the largest values first, so as few items as possible
  // lose theirs.
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (items[i].first) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return items[a].second.size() > items[b].second.size();
  });
  const std::string together = "the chunk's results together encode to " +
                               std::to_string(total - base) +
                               " bytes, more than one frame can carry" + limit;
  for (std::size_t i : order) {
    if (total <= max_out) break;
    const std::size_t size = items[i].second.size();
    Bytes error =
        encode_value(ItemError{std::string(kFrameTooLargeType),
                               together + "; this item's result (" + std::to_string(size) +
                                   " bytes) was left out so that the others fit",
                               {}});
    // The rest are smaller still: replacing them would not help (the worker then fails the
    // whole chunk, as it does any reply over the limit).
    if (error.size() >= size) break;
    total = total - size + error.size();
    items[i] = {false, std::move(error)};
  }
  encode_into(out, BatchMode::mixed, items);
}

std::string format_bytes_summary(ByteView b) {
  std::uint64_t h = 14695981039346656037ULL;
  for (auto c : b) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%zu bytes fnv1a=%016llx", b.size(),
                static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace task_detail
}  // namespace ferry
