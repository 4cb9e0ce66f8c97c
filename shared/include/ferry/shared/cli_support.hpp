// Command-line conventions shared by ferry-coordinator, ferry-worker and ferry-bench:
// --help prints usage and exits 0; any usage error names the offending option and exits 2.
// Header-only; include it only where CLI11 is linked.
#pragma once

#include <CLI/CLI.hpp>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>

namespace ferry::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitInterrupted = 130;

// A duration in seconds (a real number) from min_s to max_s, or 0 when zero_means_none: NaN,
// infinities and values beyond the bounds are usage errors naming the option, so the
// conversion to milliseconds never overflows and never rounds a small value down to "none".
inline CLI::Validator seconds(double min_s, double max_s, bool zero_means_none = false) {
  auto text_of = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.15g", v);
    return std::string(buf);
  };
  const std::string range = std::string(zero_means_none ? "0 (none) or " : "") + text_of(min_s) +
                            " to " + text_of(max_s) + " seconds";
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        double v = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        const bool number = ec == std::errc{} && end == text.data() + text.size();
        if (number && zero_means_none && v == 0) return {};
        if (number && std::isfinite(v) && v >= min_s && v <= max_s) return {};
        return "must be " + range + ", got '" + text + "'";
      },
      "SECONDS");
}

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
