// ipc::SharedObject: written once, opened by name and size, removed by its owner.
#include <doctest/doctest.h>

#include <string>

#include "ferry/ipc/shm_object.hpp"
#include "ferry/shared/session.hpp"
#include "testing.hpp"

namespace ft = ferry::testing;

namespace {
ferry::ByteView view_of(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}
bool exists(const std::string& name) {
  return ft::shm_segments_of_session().count(name) != 0;
}
}  // namespace

TEST_SUITE("ipc.shm_object") {
  TEST_CASE("the creator writes once, a reader maps the same bytes, the owner removes the name") {
    ft::LeakCheck leaks;
    const std::string text(3 * 4096 + 17, 'q');
    const std::string name = ferry::ipc::new_object_name("t");
    CHECK(name.starts_with(ferry::shm_name("t-")));
    {
      auto made = ferry::ipc::SharedObject::create(name, view_of(text));
      REQUIRE(made);
      CHECK(made->size() == text.size());
      CHECK(exists(name));
      auto again = ferry::ipc::SharedObject::create(name, view_of(text));
      REQUIRE_FALSE(again);
      CHECK(again.error().code == ferry::Errc::already_exists);
      CHECK(exists(name));  // the failed create removed nothing of the first
      {
        auto read = ferry::ipc::SharedObject::open(name, text.size());
        REQUIRE(read);
        CHECK(std::string(reinterpret_cast<const char*>(read->bytes().data()), read->size()) ==
              text);
      }
      CHECK(exists(name));  // a reader never unlinks
      auto wrong = ferry::ipc::SharedObject::open(name, text.size() + 1);
      REQUIRE_FALSE(wrong);
      CHECK(wrong.error().code == ferry::Errc::bad_handle);
      CHECK(wrong.error().detail.find(std::to_string(text.size())) != std::string::npos);
    }
    CHECK_FALSE(exists(name));  // the owner went
    auto gone = ferry::ipc::SharedObject::open(name, text.size());
    REQUIRE_FALSE(gone);
    CHECK(gone.error().code == ferry::Errc::not_found);
    leaks.verify();
  }

  TEST_CASE("a handed-on name is left for the reader, who adopts and removes it") {
    ft::LeakCheck leaks;
    const std::string name = ferry::ipc::new_object_name("t");
    {
      auto made = ferry::ipc::SharedObject::create(name, view_of("abc"));
      REQUIRE(made);
      made->release_name();
    }
    CHECK(exists(name));
    auto read = ferry::ipc::SharedObject::open(name, 3);
    REQUIRE(read);
    CHECK(read->unlink());
    CHECK_FALSE(exists(name));
    CHECK(read->bytes().size() == 3);  // the mapping outlives the name
    CHECK(read->bytes()[2] == 'c');
    leaks.verify();
  }

  TEST_CASE("names with '/' are refused, and a prefix sweep removes only its own") {
    ft::LeakCheck leaks;
    auto bad = ferry::ipc::SharedObject::open("ferry.x/../y", 1);
    REQUIRE_FALSE(bad);
    CHECK(bad.error().code == ferry::Errc::bad_handle);
    const std::string a = ferry::shm_name("sweep-w1-7");
    const std::string b = ferry::shm_name("sweep-w12-7");
    for (const auto& n : {a, b}) {
      auto o = ferry::ipc::SharedObject::create(n, view_of("z"));
      REQUIRE(o);
      o->release_name();
    }
    CHECK(ferry::ipc::remove_objects_with_prefix(ferry::shm_name("sweep-w1-")) == 1);
    CHECK_FALSE(exists(a));
    CHECK(exists(b));
    CHECK(ferry::ipc::remove_objects_with_prefix(ferry::shm_name("sweep-w12-")) == 1);
    leaks.verify();
  }
}
