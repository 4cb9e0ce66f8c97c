// The types of libwordstats' tasks: what a program that calls them by name includes.
#pragma once

#include <cereal/cereal.hpp>
#include <cereal/types/string.hpp>
#include <cstdint>
#include <string>

namespace wordstats {

// A text to count (on the command line: {"title": "...", "body": "..."}).
struct Text {
  std::string title;
  std::string body;
  template <class A>
  void serialize(A& ar) {
    ar(cereal::make_nvp("title", title), cereal::make_nvp("body", body));
  }
};

// What word_stats finds in one text.
struct Stats {
  std::string title;
  std::int64_t words = 0;
  std::string longest;
  template <class A>
  void serialize(A& ar) {
    ar(cereal::make_nvp("title", title), cereal::make_nvp("words", words),
       cereal::make_nvp("longest", longest));
  }
};

// The task: FERRY_TASK(word_stats) in wordstats.cpp.
Stats word_stats(Text text);

}  // namespace wordstats
