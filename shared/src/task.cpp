#include "ferry/shared/task.hpp"

#include <cxxabi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>

namespace ferry {

TaskRegistry& TaskRegistry::instance() {
  static TaskRegistry registry;
  return registry;
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
    h = fnv1a(h, entries_[i].name);
    h = fnv1a(h, "(");
    h = fnv1a(h, entries_[i].signature);
    h = fnv1a(h, ")\n");
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

namespace task_detail {

std::string type_name_of(const std::type_info& t) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> p(abi::__cxa_demangle(t.name(), nullptr, nullptr, &status),
                                           std::free);
  return status == 0 && p ? std::string(p.get()) : std::string(t.name());
}

std::string current_exception_type() {
  const std::type_info* t = abi::__cxa_current_exception_type();
  return t ? type_name_of(*t) : std::string("unknown");
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
                                                " bytes, more than one frame can carry" + limit})};
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
                                   " bytes) was left out so that the others fit"});
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
