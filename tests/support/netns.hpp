// Network-namespace testbed: "hosts" that are Linux network namespaces on one private /24,
// joined by veth pairs to a bridge that lives in a namespace of its own. The machine's own
// networking is never touched, and nothing a test sends can leave the testbed: the hosts have
// no route anywhere but their /24.
//
//   if (auto ok = Testbed::available(); !ok) { MESSAGE("skipped: " << ok.reason); return; }
//   Testbed tb(2);
//   Child server = tb.spawn_peer(0, "echo");                    // runs inside host 0
//   Fd c = tb.tcp_connect(1, tb.host(0).address(), port, 5s);   // a socket of host 1
//   tb.link_down(0);  tb.link_up(0);  tb.netem(0, "delay 200ms loss 5%");  tb.clear_netem(0);
//
// Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and iproute2 (`ip`, `tc`); available() says why
// not when it can't work, and tests skip naming that reason. netem needs the kernel's
// sch_netem, which some kernels lack: netem_available() tells.
//
// Names (so parallel test processes, and several testbeds in one process, never collide):
//   namespaces  ferry-<pid>-<start ticks>-<seq>-h<i>, ferry-<pid>-<start ticks>-<seq>-br
//   interfaces  f<tag>h<i> (host side, inside host i), f<tag>p<i> (bridge port), f<tag>br
//               (bridge), <tag> = 8 hex digits of pid and seq. Nothing is made in the root
//               namespace.
//   addresses   10.X.Y.(i+1)/24, X.Y derived from pid and seq. Testbeds are isolated from
//               each other and from the machine, so equal subnets could not clash anyway;
//               distinct ones keep logs unambiguous.
// "ferry-<pid>-<start ticks>-" marks the owner (the same session id as shared memory uses):
// the constructor sweeps namespaces of owners that are no longer running, which is how a
// test process killed by a timeout gets its testbed removed.
//
// Lifetime: the destructor (also on a failed REQUIRE) SIGKILLs every process still inside
// the namespaces, reaps those that became this process's children as orphans (the test
// process is a subreaper), and deletes the namespaces; their interfaces and the bridge go
// with them. Children handed out as Child objects are left for those objects to reap.
// Threading: use a Testbed from one thread at a time. Not copyable or movable.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "testing.hpp"

namespace ferry::testing {

// An owned file descriptor (closed on destruction).
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  void reset() noexcept;

 private:
  int fd_ = -1;
};

// Whether something works here; if not, `reason` says why (for the skip message).
struct Availability {
  std::string reason;
  explicit operator bool() const noexcept { return reason.empty(); }
};

class Host {
 public:
  const std::string& netns() const noexcept { return netns_; }          // under /run/netns
  const std::string& interface() const noexcept { return interface_; }  // inside netns()
  const std::string& address() const noexcept { return address_; }      // IPv4, dotted

 private:
  friend class Testbed;
  std::string netns_;
  std::string interface_;
  std::string port_;  // the bridge's end of the veth pair
  std::string address_;
  bool shaped_ = false;  // a qdisc of ours is on interface_
};

class Testbed {
 public:
  // Makes `hosts` hosts (1..200). Throws std::runtime_error naming the command that failed,
  // after removing whatever it had made.
  explicit Testbed(std::size_t hosts);
  ~Testbed();
  Testbed(const Testbed&) = delete;
  Testbed& operator=(const Testbed&) = delete;

  // Tries to make (and remove) a namespace with a veth pair and a bridge; cached per process.
  static Availability available();
  // Tries a netem qdisc in a scratch namespace; cached per process.
  static Availability netem_available();

  std::size_t size() const noexcept { return hosts_.size(); }
  const Host& host(std::size_t i) const { return hosts_.at(i); }
  const std::string& subnet() const noexcept { return subnet_; }  // "10.X.Y.0/24"

  // Runs exe inside host i through `ip netns exec`, which execs it: the Child's pid is the
  // program's own, so killing or waiting on the Child acts on the program itself.
  Child spawn(std::size_t i, const std::string& exe, const std::vector<std::string>& args,
              const SpawnOptions& opt = {});
  // This test binary as peer `name` inside host i (like testing::spawn_peer).
  Child spawn_peer(std::size_t i, std::string_view name, const std::vector<std::string>& args = {},
                   const SpawnOptions& opt = {});
  // Runs exe inside host i to completion (like testing::run).
  RunResult run(std::size_t i, const std::string& exe, const std::vector<std::string>& args,
                std::chrono::milliseconds timeout = std::chrono::seconds(30));

  // A socket of host i's network stack, usable from this process (made by a short-lived
  // thread that enters the namespace; the rest of the process stays where it is).
  Fd socket(std::size_t i, int domain, int type) const;
  // A blocking TCP connection from host i, or an empty Fd if it could not be made within
  // timeout (then *why, if given, says what happened: "timed out", "Connection refused", ...).
  Fd tcp_connect(std::size_t from, const std::string& address, std::uint16_t port,
                 std::chrono::milliseconds timeout, std::string* why = nullptr) const;

  // Unplugs host i's cable at the bridge: its interface keeps its address but loses carrier,
  // and every packet to or from it is dropped. Peers see silence (timeouts), not resets: a
  // partition, not a crash. link_up plugs it back; TCP connections then resume.
  void link_down(std::size_t i);
  void link_up(std::size_t i);
  // Puts `tc qdisc ... root netem SPEC` on host i's interface. It shapes what host i sends:
  // "delay 200ms" adds 200 ms to every round trip with host i, "loss 5%" drops 5% of its
  // outgoing packets. Replaces an earlier netem/qdisc of this host.
  void netem(std::size_t i, const std::string& spec);
  void clear_netem(std::size_t i) { clear_qdisc(i); }
  // Any root qdisc SPEC (e.g. "tbf rate 1mbit burst 8kb latency 1s"), same direction.
  void qdisc(std::size_t i, const std::string& spec);
  void clear_qdisc(std::size_t i);

  // Everything this testbed made: namespace names and interface names.
  std::vector<std::string> namespaces() const;
  std::vector<std::string> interfaces() const;

  // Removes namespaces "ferry-<pid>-<start ticks>-..." whose owner is no longer running.
  static void sweep_stale();

 private:
  void ip_batch(const std::string& netns, const std::string& commands);
  void destroy() noexcept;

  std::string prefix_;  // ferry-<pid>-<start ticks>-<seq>-
  std::string bridge_ns_;
  std::string bridge_;
  std::string subnet_;
  std::vector<Host> hosts_;
  std::set<pid_t> spawned_;  // pids handed out as Child objects: theirs to reap
};

}  // namespace ferry::testing
