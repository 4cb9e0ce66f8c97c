// Command-line conventions shared by ferry-coordinator, ferry-worker and ferry-bench:
// --help prints usage and exits 0; any usage error names the offending option and exits 2.
// Header-only; include it only where CLI11 is linked.
#pragma once

#include <CLI/CLI.hpp>
#include <iostream>
#include <optional>

namespace ferry::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitInterrupted = 130;

// Reports a usage error found after parsing (required arguments are checked after parsing so
// that an unknown option is always the error reported first). Returns kExitUsage.
inline int usage_error(const CLI::App& app, const std::string& what) {
  std::cerr << app.get_name() << ": " << what << "\n"
            << "Run with --help for usage.\n";
  return kExitUsage;
}

// Parses argv. Returns an exit code if the program should stop now (help or usage error).
inline std::optional<int> parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return kExitOk;
  } catch (const CLI::CallForAllHelp&) {
    std::cout << app.help("", CLI::AppFormatMode::All);
    return kExitOk;
  } catch (const CLI::CallForVersion& e) {
    std::cout << e.what() << "\n";
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    std::cerr << app.get_name() << ": " << e.what() << "\n"
              << "Run with --help for usage.\n";
    return kExitUsage;
  }
  return std::nullopt;
}

}  // namespace ferry::cli
