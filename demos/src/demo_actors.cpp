// actors: a bank account as an actor (state kept in one worker process, calls run one at a
// time in order), deposits from several threads, then its process SIGKILLed: the calls in it
// fail with ActorDied, the actor restarts from its constructor, later calls work.
#include <signal.h>
#include <unistd.h>

#include <cereal/types/string.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tour.hpp"

namespace ferry::demos {
namespace {

class Account {
 public:
  Account(std::string owner, std::int64_t opening) : owner_(std::move(owner)), cents_(opening) {}
  std::int64_t deposit(std::int64_t cents) {
    if (cents <= 0) throw std::invalid_argument("a deposit must be positive");
    ++deposits_;
    return cents_ += cents;
  }
  std::int64_t balance() const { return cents_; }
  std::int64_t deposits() const { return deposits_; }
  std::int32_t pid() const { return static_cast<std::int32_t>(::getpid()); }
  // An audit that takes a while: it says it started, then waits for `done` (a demo's gate).
  std::int64_t audit(const std::string& started, const std::string& done) {
    Event::open(started).value().set();
    (void)Event::open(done).value().wait();
    return cents_;
  }

 private:
  std::string owner_;
  std::int64_t cents_ = 0;
  std::int64_t deposits_ = 0;
};

}  // namespace

FERRY_ACTOR(Account, deposit, balance, deposits, pid, audit);

int actors(const Options& opt) {
  Verdict v;
  constexpr std::int64_t kOpening = 10'000;
  constexpr int kTellers = 4, kDeposits = 250;
  say("An actor keeps state in one process of its own: here a bank account, built from");
  say("(\"alice\", 100.00). Its calls run one at a time, in the order they were made, so");
  say("four tellers (threads of this coordinator) deposit at once without any lock.");
  Pool pool(lesson_pool(opt));
  await_workers(pool);
  auto account = pool.actor<Account>(ActorOptions{.max_restarts = 2}, "alice", kOpening);
  if (!account.wait_ready(30s)) throw std::runtime_error("the account's process did not start");
  sayf("  the account lives in pid %d, beside the pool's %u worker(s)",
       static_cast<int>(account.pid()), pool.size());

  const auto t0 = Clock::now();
  std::vector<std::vector<Future<std::int64_t>>> receipts(kTellers);
  std::vector<std::thread> tellers;
  for (std::size_t t = 0; t < kTellers; ++t) {
    tellers.emplace_back([&, t] {
      for (int i = 1; i <= kDeposits; ++i)
        receipts[t].push_back(account.call(&Account::deposit, std::int64_t{i}));
    });
  }
  for (auto& th : tellers)
    th.join();
  bool each_in_order = true;
  for (auto& mine : receipts) {
    std::int64_t last = 0;
    for (auto& r : mine) {
      const auto balance = r.get();
      each_in_order = each_in_order && balance > last;
      last = balance;
    }
  }
  const std::int64_t expected = kOpening + kTellers * (kDeposits * (kDeposits + 1) / 2);
  const auto balance = account.call(&Account::balance).get();
  sayf("  %d deposits in %.1f ms; balance %lld.%02lld (expected %lld.%02lld)", kTellers * kDeposits,
       ms_since(t0), static_cast<long long>(balance / 100), static_cast<long long>(balance % 100),
       static_cast<long long>(expected / 100), static_cast<long long>(expected % 100));
  v.check(balance == expected && account.call(&Account::deposits).get() == kTellers * kDeposits,
          "every deposit was applied exactly once");
  v.check(each_in_order, "each teller's receipts show its own deposits in the order it made them");

  say("");
  say("Now an audit is running in the account's process and two deposits wait behind it,");
  say("when the process is killed (SIGKILL). Calls to an actor are never retried: a deposit");
  say("might have been applied, so running it again could count it twice.");
  const auto started_name = unique_name("actors.audit-started");
  const auto done_name = unique_name("actors.audit-done");
  auto started = Event::create(started_name).value();
  auto done = Event::create(done_name).value();
  const pid_t first = account.pid();
  auto audit = account.call(&Account::audit, started_name, done_name);
  auto late1 = account.call(&Account::deposit, std::int64_t{500});
  auto late2 = account.call(&Account::deposit, std::int64_t{700});
  if (!started.wait_for(30s)) throw std::runtime_error("the audit did not start");
  ::kill(first, SIGKILL);
  int died = 0;
  std::string why;
  for (auto* f : {&audit, &late1, &late2}) {
    try {
      f->get();
    } catch (const ActorDied& e) {
      ++died;
      why = e.what();
    }
  }
  sayf("  %s", why.c_str());
  v.check(died == 3 && why.find("SIGKILL") != std::string::npos,
          "the audit and both waiting deposits failed with ActorDied, naming SIGKILL");

  say("");
  say("The actor is restarted with its constructor's arguments: a new process, fresh state");
  say("(what lived only in the old process is gone - keep what matters somewhere durable).");
  if (!account.wait_restarted(1, 30s)) throw std::runtime_error("the account did not restart");
  const auto after = account.call(&Account::deposit, std::int64_t{100}).get();
  sayf("  restarted %u time(s): pid %d -> %d; a deposit of 1.00 gives balance %lld.%02lld",
       account.restarts(), static_cast<int>(first), static_cast<int>(account.pid()),
       static_cast<long long>(after / 100), static_cast<long long>(after % 100));
  v.check(after == kOpening + 100 && account.pid() != first,
          "calls after the restart work, on a new instance built from (\"alice\", 100.00)");
  return v.exit_code();
}

}  // namespace ferry::demos
