// CURVE key folders for tests of authenticated remote workers (header-only: the support
// library itself does not link ferry::ipc). One object per test, on the test's thread.
#pragma once

#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "ferry/ipc/curve.hpp"

namespace ferry::testing {

// `dir`: what `ferry-coordinator keygen` writes (coordinator pair, a worker pair, that worker
// authorized). `stranger`: a second worker pair with the right coordinator key but not
// authorized. Both removed when destroyed.
struct TestKeys {
  std::filesystem::path dir;
  std::filesystem::path stranger;

  explicit TestKeys(const std::string& prefix)
      : dir(std::filesystem::temp_directory_path() / (prefix + std::to_string(::getpid()))),
        stranger(dir / "stranger") {
    std::filesystem::remove_all(dir);
    REQUIRE(static_cast<bool>(ipc::write_key_directory(dir.string())));
    REQUIRE(static_cast<bool>(ipc::write_key_directory(stranger.string())));
    std::filesystem::remove(stranger / "coordinator.pub");
    std::filesystem::copy_file(dir / "coordinator.pub", stranger / "coordinator.pub");
  }
  ~TestKeys() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  TestKeys(const TestKeys&) = delete;
  TestKeys& operator=(const TestKeys&) = delete;
};

}  // namespace ferry::testing
