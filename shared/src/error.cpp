#include "ferry/shared/error.hpp"

#include <cstring>

namespace ferry {

std::string Error::message() const {
  std::string s(errc_name(code));
  if (!detail.empty()) {
    s += ": ";
    s += detail;
  }
  if (sys != 0) {
    s += " (";
    s += std::strerror(sys);
    s += ")";
  }
  return s;
}

Error system_error(std::string_view what, int err) {
  return Error{Errc::system_error, std::string(what), err};
}

Exception::Exception(Error e) : std::runtime_error(e.message()), error_(std::move(e)) {}

}  // namespace ferry
