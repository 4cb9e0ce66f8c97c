// The stack of a task that crashes its worker (a fault, not an exception): written to the
// worker's stderr before the worker dies of the signal as it would have anyway.
//
// A signal handler may only call async-signal-safe functions, and symbolizing (DWARF lookups,
// allocation, the symbol cache's mutex) is not: if the fault happened inside malloc or with
// that mutex held, doing it in the handler could deadlock the dying worker. So the handler
// only records the return addresses (backtrace, its unwinder loaded at install time) and
// writes the signal line with write(2); the symbolizing runs in a child made with _Fork
// (async-signal-safe, no atfork handlers), a copy of the crashed process that may block where
// the worker would have. The handler waits for it a bounded time, kills it if it is stuck,
// and then writes the raw addresses instead. Either way the worker then dies of the signal:
// its exit status is what it was before (the coordinator reports "died (signal 11 ...)").
//
// Where it goes: a local worker's stderr is the coordinator's (its lines are prefixed and
// kept for the status page); a remote worker's is its own host's. The text cannot travel in
// RemoteError: the connection's state lives in the crashed process, which must not use it.
// Threading: the handler runs on the faulting thread, on an alternate stack for the main
// thread (a stack overflow there is reported too); other threads overflowing their stack
// die as before, without the trace. A second fault while handling one ends the process.
#include <execinfo.h>
#include <signal.h>
#include <sys/wait.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <string>

#include "throw_site.hpp"

namespace ferry::worker::detail {
namespace {

constexpr int kSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
constexpr int kMaxFrames = 64;
constexpr int kSymbolizeWaitMs = 5000;  // a loaded machine takes about a second
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

std::atomic<bool> g_handling{false};
alignas(16) char g_alt_stack[64 * 1024];

void put(const char* s, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    s += w;
    n -= static_cast<std::size_t>(w);
  }
}
void put(const char* s) {
  put(s, std::strlen(s));
}
void put_number(unsigned long v, unsigned base) {
  char buf[24];
  std::size_t i = sizeof buf;
  do {
    buf[--i] = "0123456789abcdef"[v % base];
    v /= base;
  } while (v != 0 && i > 0);
  if (base == 16) put("0x");
  put(buf + i, sizeof buf - i);
}

const char* signal_name(int sig) {
  switch (sig) {
    case SIGSEGV:
      return "SIGSEGV";
    case SIGBUS:
      return "SIGBUS";
    case SIGFPE:
      return "SIGFPE";
    case SIGILL:
      return "SIGILL";
    case SIGABRT:
      return "SIGABRT";
    default:
      return "signal";
  }
}

// The faulting instruction's address, from the context the kernel saved.
void* fault_pc(void* context) {
  const auto* uc = static_cast<const ucontext_t*>(context);
#if defined(__x86_64__)
  return reinterpret_cast<void*>(uc->uc_mcontext.gregs[REG_RIP]);
#elif defined(__aarch64__)
  return reinterpret_cast<void*>(uc->uc_mcontext.pc);
#else
  (void)uc;
  return nullptr;
#endif
}

void die_of(int sig) {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);
  // A fault re-executes the faulting instruction on return; a raised signal does not.
  ::raise(sig);
}

void on_crash(int sig, siginfo_t* info, void* context) {
  if (g_handling.exchange(true)) die_of(sig);  // faulted while reporting a fault
  void* pcs[kMaxFrames];
  int n = ::backtrace(pcs, kMaxFrames);
  // Drop this handler's frames: the stack starts at the faulting instruction when it can be
  // found (the frames above it are return addresses; the task's is the instruction itself).
  int first = 0;
  if (void* pc = fault_pc(context)) {
    for (int i = 0; i < n; ++i) {
      if (pcs[i] == pc) {
        first = i;
        break;
      }
    }
  }
  void* frames[kMaxFrames];
  const int count = n - first;
  for (int i = 0; i < count; ++i)
    frames[i] = static_cast<char*>(pcs[first + i]) - (i == 0 && first > 0 ? 0 : 1);

  put("ferry-worker[");
  put_number(static_cast<unsigned long>(::getpid()), 10);
  put("]: crashed: signal ");
  put_number(static_cast<unsigned long>(sig), 10);
  put(" (");
  put(signal_name(sig));
  put(")");
  if (sig == SIGSEGV || sig == SIGBUS) {
    put(" at address ");
    put_number(reinterpret_cast<unsigned long>(info->si_addr), 16);
  }
  put("; stack:\n");

  bool symbolized = false;
  const pid_t child = ::_Fork();
  if (child == 0) {
    const std::string text = symbolized_stack(frames, count, /*cut=*/true);
    put(text.data(), text.size());
    ::_exit(text.empty() ? 1 : 0);
  }
  if (child > 0) {
    int status = 0;
    for (int waited = 0; waited < kSymbolizeWaitMs; waited += 10) {
      const pid_t r = ::waitpid(child, &status, WNOHANG);
      if (r == child) {
        symbolized = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        break;
      }
      if (r < 0 && errno != EINTR) break;
      const timespec ten_ms{0, 10'000'000};
      ::nanosleep(&ten_ms, nullptr);
    }
    if (::waitpid(child, &status, WNOHANG) == 0) {
      ::kill(child, SIGKILL);
      ::waitpid(child, &status, 0);
    }
  }
  if (!symbolized) {
    put("(not symbolized in time; raw addresses)\n");
    for (int i = 0; i < count; ++i) {
      put("#");
      put_number(static_cast<unsigned long>(i), 10);
      put(" ");
      put_number(reinterpret_cast<unsigned long>(frames[i]), 16);
      put("\n");
    }
  }
  die_of(sig);
}

}  // namespace

void install_crash_trace() {
  if (kSanitized) return;  // the sanitizers' own handlers report these signals, symbolized
  // The first backtrace() loads libgcc's unwinder (dlopen, malloc): done here, not in the
  // handler.
  void* warm[2];
  (void)::backtrace(warm, 2);
  stack_t ss{};
  ss.ss_sp = g_alt_stack;
  ss.ss_size = sizeof g_alt_stack;
  ::sigaltstack(&ss, nullptr);
  struct sigaction sa {};
  sa.sa_sigaction = on_crash;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  ::sigemptyset(&sa.sa_mask);
  for (const int sig : kSignals)
    ::sigaction(sig, &sa, nullptr);
}

}  // namespace ferry::worker::detail
