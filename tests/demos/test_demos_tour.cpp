// One integration test per demo of the tour: `ferry-coordinator -w 2 demo NAME` exits 0 and
// the numbers it prints show the lesson's invariant; nothing is left behind.
#include <doctest/doctest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "demo_run.hpp"

using demo_test::count_of;
using demo_test::matches;
using demo_test::numbers;
using demo_test::run_demo;
namespace ft = ferry::testing;

TEST_SUITE("demos.tour") {
  TEST_CASE("countdown: the child counts down 5 ticks in its own process while main waits") {
    ft::LeakCheck leaks;
    const auto r = run_demo("countdown");
    for (const char* tick : {"| T-minus 5", "| T-minus 1", "| liftoff"})
      CHECK_MESSAGE(count_of(r.out, tick) == 1, tick);
    CHECK(count_of(r.out, "[ok] the child counted 5 ticks down from 5") == 1);
    const auto pids = numbers(r.out, R"(main \(pid (\d+)\): the child \(pid (\d+)\))");
    REQUIRE(pids.size() == 2);
    CHECK(pids[0] != pids[1]);
    leaks.verify();
  }

  TEST_CASE("race: the locked count is exact and the unlocked one never exceeds it") {
    ft::LeakCheck leaks;
    const auto r = run_demo("race");
    const auto unlocked = numbers(r.out, R"(without a lock: counter = (\d+) of (\d+))");
    const auto locked = numbers(r.out, R"(with a Lock:\s+counter = (\d+) of (\d+))");
    REQUIRE(unlocked.size() == 2);
    REQUIRE(locked.size() == 2);
    CHECK(locked[1] == 2 * 10000);  // 2 workers x 10000 additions
    CHECK(locked[0] == locked[1]);
    CHECK(unlocked[1] == locked[1]);
    CHECK(unlocked[0] <= unlocked[1]);
    leaks.verify();
  }

  TEST_CASE("lock: with the Lock every alphabet line comes out whole") {
    ft::LeakCheck leaks;
    const auto r = run_demo("lock");
    const auto neat = r.out.substr(r.out.find("---- neat"));
    CHECK(count_of(neat, "  abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\n") == 6);
    const auto whole = matches(r.out, R"((\d+) of (\d+) lines came out whole)");
    REQUIRE(whole.size() == 2);
    CHECK(whole[1][0] == "6");
    CHECK(whole[1][1] == "6");
    leaks.verify();
  }

  TEST_CASE(
      "rlock: a Lock re-acquired by its owner times out (blocking: refused), an RLock re-enters") {
    ft::LeakCheck leaks;
    const auto r = run_demo("rlock");
    const auto timed = matches(r.out, R"(-> Timeout after (\d+) ms)");
    REQUIRE(timed.size() == 1);
    CHECK(std::stoi(timed[0][0]) >= 990);  // the whole second, like Python's acquire(timeout=)
    const auto refused =
        r.out.find("-> InvalidArgument: the lock is already held by the calling thread");
    REQUIRE(refused != std::string::npos);
    const auto blocking =
        numbers(r.out.substr(refused, r.out.find('\n', refused) - refused), R"(after (\d+) ms)");
    REQUIRE(blocking.size() == 1);
    CHECK(blocking[0] < 500);  // at once, not a hang
    CHECK(count_of(r.out, "on the Lock the worker holds -> Timeout") == 1);
    CHECK(count_of(r.out, "-> ok, depth 2") == 1);
    CHECK(count_of(r.out, "on the RLock the worker holds -> WouldBlock") == 1);
    CHECK(count_of(r.out, "released the RLock twice (depth 0)") == 1);
    CHECK(count_of(r.out, "acquire_for(1 s) on the RLock -> ok") == 1);
    leaks.verify();
  }

  TEST_CASE("deadlock: both processes time out and name the cycle, then ordered locks succeed") {
    ft::LeakCheck leaks;
    const auto r = run_demo("deadlock");
    CHECK(count_of(r.out, "timed acquire of its second lock: Timeout") == 2);
    CHECK(count_of(r.out, "holds lock A and waits for lock B; lock B is held by P1") == 1);
    CHECK(count_of(r.out, "holds lock B and waits for lock A; lock A is held by P0") == 1);
    CHECK(count_of(r.out, ": a cycle.") == 2);
    CHECK(count_of(r.out, "both got lock A, then lock B") == 1);
    leaks.verify();
  }

  TEST_CASE("semaphore: every item is bought once and the stock stays within the shelves") {
    ft::LeakCheck leaks;
    const auto r = run_demo("semaphore");
    const auto moves = matches(r.out, R"((producer|customer)(\d+) ([+-]) : (\d+))");
    CHECK(moves.size() == 24);  // 12 items in, 12 out
    int stock = 0;
    for (const auto& m : moves) {
      stock += m[2] == "+" ? 1 : -1;
      CHECK(std::stoi(m[3]) == stock);  // the log is in true order
      CHECK(stock >= 0);
      CHECK(stock <= 5);
    }
    CHECK(stock == 0);
    CHECK(count_of(r.out, "[ok] every item was bought exactly once (12 items)") == 1);
    leaks.verify();
  }

  TEST_CASE("event: no runner leaves before the start event, notifications arrive in order") {
    ft::LeakCheck leaks;
    const auto r = run_demo("event");
    const auto left = matches(r.out, R"(left (-?[0-9.]+) ms after the event was set)");
    CHECK(left.size() == 2);
    for (const auto& m : left)
      CHECK(std::stod(m[0]) >= 0.0);
    CHECK(count_of(r.out, "the consumer received: 1 4 9 16 25\n") == 1);
    leaks.verify();
  }

  TEST_CASE("condition: 10 items made and taken once each, never more than 3 in the buffer") {
    ft::LeakCheck leaks;
    const auto r = run_demo("condition");
    const auto made = matches(r.out, R"(made item\s+(\d+)\s+\(buffer: (\d+)\))");
    const auto took = matches(r.out, R"(took item\s+(\d+)\s+\(buffer: (\d+)\))");
    CHECK(made.size() == 10);
    std::set<std::string> taken;
    for (const auto& m : took)
      taken.insert(m[0]);
    CHECK(took.size() == 10);
    CHECK(taken.size() == 10);
    for (const auto& m : made)
      CHECK(std::stoi(m[1]) <= 3);
    leaks.verify();
  }

  TEST_CASE("barrier: all parties pass with distinct indices, a dead party breaks it for all") {
    ft::LeakCheck leaks;
    const auto r = run_demo("barrier");
    std::set<std::string> indices;
    for (const auto& m : matches(r.out, R"(passed, arrival index (\d+))"))
      indices.insert(m[0]);
    CHECK(indices == std::set<std::string>{"0", "1", "2"});  // 2 workers and main
    // main and the surviving worker
    CHECK(matches(r.out, R"((main|worker \d+):\s+Broken: )").size() == 2);
    CHECK(numbers(r.out, R"(the pool saw (\d+) worker death)") == std::vector<long long>{1});
    leaks.verify();
  }

  TEST_CASE(
      "local-data: threads share one x and keep their own thread_local, processes share nothing") {
    ft::LeakCheck leaks;
    const auto r = run_demo("local-data");
    const auto threads = matches(r.out, R"(thread \d: x = (\d+)\s+mydata.x = (\d+))");
    REQUIRE(threads.size() == 3);
    CHECK(threads[0][1] == "33");
    CHECK(threads[1][1] == "88");
    CHECK(threads[2][1] == "91");
    CHECK(threads[0][0] == threads[1][0]);
    CHECK(threads[1][0] == threads[2][0]);
    CHECK(count_of(r.out, "main process: x = 0\n") == 1);
    CHECK(matches(r.out, R"(worker pid \d+: x = 7 ->)").size() >= 1);
    leaks.verify();
  }

  TEST_CASE("pipe: the consumer gets every item in order and answers over the same pipe") {
    ft::LeakCheck leaks;
    const auto r = run_demo("pipe");
    CHECK(count_of(r.out, "the consumer received: 11 22 33 44 55 66 77 88\n") == 1);
    CHECK(numbers(r.out, R"(got (\d+) items from pid \d+, sum (\d+))") ==
          std::vector<long long>{8, 396});
    leaks.verify();
  }

  TEST_CASE("queue: 2 producers, 2 consumers, every item taken exactly once") {
    ft::LeakCheck leaks;
    const auto r = run_demo("queue");
    CHECK(numbers(r.out, R"(put (\d+), taken (\d+) distinct, lost (\d+), abandoned (\d+))") ==
          std::vector<long long>{50, 50, 0, 0});
    long long sum = 0;
    const auto per = matches(r.out, R"(consumer \d got (\d+) items)");
    CHECK(per.size() == 2);
    for (const auto& m : per)
      sum += std::stoll(m[0]);
    CHECK(sum == 50);
    leaks.verify();
  }

  TEST_CASE("ghostbusters: four board Ecto-1 and the trap holds every released ghost once") {
    ft::LeakCheck leaks;
    const auto r = run_demo("ghostbusters");
    const auto boarded = matches(r.out, R"(boarded Ecto-1: ([A-Za-z, ]+)\. Siren on!)");
    REQUIRE(boarded.size() == 1);
    for (const char* name : {"Peter", "Ray", "Egon", "Winston"})
      CHECK(boarded[0][0].find(name) != std::string::npos);
    long long caught = 0;
    for (const auto& m : matches(r.out, R"(says\s+(\d+) caught; the trap holds\s+(\d+))")) {
      CHECK(m[0] == m[1]);
      caught += std::stoll(m[0]);
    }
    CHECK(caught == 30);
    CHECK(numbers(r.out, R"(the totals match: (\d+) released, (\d+) caught, (\d+) in the trap)") ==
          std::vector<long long>{30, 30, 30});
    leaks.verify();
  }

  TEST_CASE("channel: six structured objects arrive intact and come back equal") {
    ft::LeakCheck leaks;
    const auto r = run_demo("channel");
    CHECK(count_of(r.out, ": intact; back equal: yes") == 6);
    CHECK(count_of(r.out, "the worker connects to shm://") == 1);  // shm is the default
    leaks.verify();
  }

  TEST_CASE(
      "pool: map keeps input order, imap_unordered and as_completed yield every result once") {
    ft::LeakCheck leaks;
    const auto r = run_demo("pool");
    CHECK(count_of(r.out, "   0 1 7 2 5 8 16 3 19 6 14 9 9 17 17 4 12 20 20 7 ...") == 1);
    std::set<std::string> inputs;
    for (const auto& m : matches(r.out, R"(input #(\d) \((\d+) ms\) finished)"))
      inputs.insert(m[0]);
    CHECK(inputs.size() == 6);
    const auto squares = matches(r.out, R"(square\((\d)\) after \d+ ms = (\d+))");
    CHECK(squares.size() == 6);
    for (const auto& m : squares)
      CHECK(std::stoll(m[1]) == std::stoll(m[0]) * std::stoll(m[0]));
    leaks.verify();
  }

  TEST_CASE("cpu-bound: sequential, threads and processes find the same 148933 primes") {
    ft::LeakCheck leaks;
    const auto r = run_demo("cpu-bound");
    CHECK(count_of(r.out, "[ok] all three found the same 148933 primes") == 1);
    CHECK(matches(r.out, R"(sequential \(1 thread\)\s+[0-9.]+\s+1\.00x)").size() == 1);
    CHECK(matches(r.out, R"(2 threads, 1 process\s+[0-9.]+\s+[0-9.]+x)").size() == 1);
    CHECK(matches(r.out, R"(2 worker processes \(ferry\)\s+[0-9.]+\s+[0-9.]+x)").size() == 1);
    leaks.verify();
  }

  TEST_CASE("io-bound: every answer from the local server is right, sequentially and on the pool") {
    ft::LeakCheck leaks;
    const auto r = run_demo("io-bound");
    CHECK(numbers(r.out, R"(every answer was right, both ways: (\d+) of (\d+))") ==
          std::vector<long long>{24, 24});
    CHECK(matches(r.out, R"(8 worker processes\s+[0-9.]+\s+[0-9.]+x)").size() == 1);
    leaks.verify();
  }

  TEST_CASE("cooperative: coroutines take turns in round-robin order inside one worker") {
    ft::LeakCheck leaks;
    const auto r = run_demo("cooperative");
    CHECK(count_of(r.out,
                   "one thread: A 3, B 2, C 4, A 2, B 1, C 3, A 1, B done, C 2, A done, "
                   "C 1, C done\n") == 1);
    CHECK(count_of(r.out, "(2 processes took part)") == 1);
    leaks.verify();
  }

  TEST_CASE("supervisor: every crash is replaced and retried, and all 24 tasks complete") {
    ft::LeakCheck leaks;
    const auto r = run_demo("supervisor");
    const auto s = numbers(
        r.out,
        R"(tasks (\d+), succeeded (\d+), retries (\d+), worker deaths (\d+), workers started (\d+))");
    REQUIRE(s.size() == 5);
    CHECK(s[0] == 24);
    CHECK(s[1] == 24);
    CHECK(s[2] >= 3);
    CHECK(s[2] <= 5);
    CHECK(s[3] == s[2]);      // one retry per death
    CHECK(s[4] == 2 + s[3]);  // and one replacement
    CHECK(count_of(r.out, "died, replaced") == static_cast<std::size_t>(s[3]));
    leaks.verify();
  }

  TEST_CASE("distributed: the map-reduce word count equals a local count, pi is close") {
    ft::LeakCheck leaks;
    const auto r = run_demo("distributed");
    CHECK(numbers(r.out, R"((\d+) words in)") == std::vector<long long>{48000});
    CHECK(count_of(r.out, "[ok] the merged counts equal a count of the whole text") == 1);
    CHECK(count_of(r.out, "pi ~ 3.14342") == 1);  // seeded: the same every run
    CHECK(count_of(r.out, "2 of 2 workers took part, 0 of them remote") == 1);
    leaks.verify();
  }

  TEST_CASE(
      "pipeline-graph: the healthy branch merges right, the corrupt one is DependencyFailed") {
    for (const char* t : {"shm", "zmq"}) {
      CAPTURE(t);
      ft::LeakCheck leaks;
      const auto r = run_demo("pipeline-graph", {"-w", "2", "-t", t});
      CHECK(count_of(r.out, "[ok] the healthy branch merged to the same counts") == 1);
      CHECK(count_of(r.out, "merge(doc 1, doc 2): 10 words") == 1);
      CHECK(count_of(r.out, "[ok] the failing branch's merge is DependencyFailed") == 1);
      CHECK(count_of(r.out, "corrupt document: byte 0x7f at offset 11") >= 1);
      leaks.verify();
    }
  }

  TEST_CASE("object-store: one array put once is read by 100 tasks with a decode per worker") {
    for (const char* t : {"shm", "zmq"}) {
      CAPTURE(t);
      ft::LeakCheck leaks;
      const auto r = run_demo("object-store", {"-w", "2", "-t", t});
      CHECK(count_of(r.out, "[ok] the slices add up to the array's sum") == 1);
      CHECK(count_of(r.out, "[ok] the array was written once") == 1);
      CHECK(count_of(r.out, "[ok] every worker decoded it at most once") == 1);
      CHECK(count_of(r.out, "[ok] once the last ref") == 1);
      CHECK(count_of(r.out, "decoded the array 1 time(s)") >= 1);
      CHECK(count_of(r.out, "[FAIL]") == 0);
      leaks.verify();
    }
  }

  TEST_CASE(
      "actors: deposits from threads applied once in order, a SIGKILL is ActorDied, then "
      "a fresh restart") {
    for (const char* t : {"shm", "zmq"}) {
      CAPTURE(t);
      ft::LeakCheck leaks;
      const auto r = run_demo("actors", {"-w", "2", "-t", t});
      CHECK(count_of(r.out, "[ok] every deposit was applied exactly once") == 1);
      CHECK(count_of(r.out, "balance 1355.00 (expected 1355.00)") == 1);
      CHECK(count_of(r.out, "[ok] each teller's receipts show its own deposits in the order") == 1);
      CHECK(count_of(r.out, "[ok] the audit and both waiting deposits failed with ActorDied") == 1);
      CHECK(count_of(r.out, "[ok] calls after the restart work") == 1);
      CHECK(count_of(r.out, "ActorDied: ") == 1);
      CHECK(r.out.find("[FAIL]") == std::string::npos);
      leaks.verify();
    }
  }

  TEST_CASE("distributed --listen: remote ferry-workers join before it starts and take part") {
    ft::LeakCheck leaks;
    char dir_template[] = "/tmp/ferry-demo-XXXXXX";
    REQUIRE(::mkdtemp(dir_template) != nullptr);
    const std::string dir = dir_template;
    const std::string endpoint = "ipc://" + dir + "/coordinator.sock";
    {
      // Started first, as on a cluster: they keep trying until the coordinator listens.
      // Stock ferry-worker serves the demos' tasks once it loads their task library.
      auto alpha = ft::spawn(
          FERRY_WORKER_EXE, {"--tasks", FERRY_DEMOS_LIB, "--connect", endpoint, "--name", "alpha"});
      auto beta = ft::spawn(FERRY_WORKER_EXE, {"--tasks", FERRY_DEMOS_LIB, "--connect", endpoint,
                                               "--slots", "2", "--name", "beta"});
      const auto r = run_demo("distributed", {"-w", "1", "--listen", endpoint, "--wait-workers",
                                              "3", "--wait-timeout", "30"});
      CHECK(count_of(r.err, "waiting for 3 worker(s) to join") == 1);
      CHECK(count_of(r.out, "[ok] the merged counts equal a count of the whole text") == 1);
      CHECK(count_of(r.out, "pi ~ 3.14342") == 1);
      // 1 local slot, then 1 + 2 of the remote workers
      CHECK(count_of(r.out, "4 worker slots, 2 of the workers remote") == 1);
      const auto rows =
          matches(r.out, R"(\n   w\d+ +(local|remote \S+ \((alpha|beta)\)) +\d+ +(\d+))");
      REQUIRE(rows.size() == 3);
      for (const auto& row : rows)
        CHECK_MESSAGE(std::stoi(row[2]) > 0, row[0]);
      CHECK(count_of(r.out, "3 of 3 workers took part, 2 of them remote") == 1);
      CHECK(count_of(r.out, "[ok] every remote worker that joined took part (2 of 2)") == 1);
      // Told to shut down when the demo ends, the remote workers exit 0 by themselves.
      for (auto* w : {&alpha, &beta}) {
        const auto st = w->wait_for(std::chrono::seconds(20));
        REQUIRE(st.has_value());
        CHECK(st->code == 0);
      }
    }
    CHECK(::rmdir(dir.c_str()) == 0);  // the socket file went with the coordinator
    leaks.verify();
  }

  TEST_CASE("distributed --listen: too few workers joining is an error, and nothing runs") {
    ft::LeakCheck leaks;
    ::setenv(ferry::kSessionEnv, ferry::SessionId::current().str().c_str(), 1);
    const auto r = ft::run(FERRY_COORDINATOR_EXE,
                           {"-w", "1", "--listen", "tcp://127.0.0.1:0", "--wait-workers", "2",
                            "--wait-timeout", "0.5", "demo", "distributed"},
                           std::chrono::seconds(60));
    INFO(r.out << r.err);
    CHECK(r.status.code == 1);
    CHECK(count_of(r.err, "no job run: fewer than 2 worker(s) joined within 0.5 s") == 1);
    CHECK(count_of(r.out, "[FAIL] the workers asked for (--wait-workers) joined") == 1);
    CHECK(count_of(r.out, "words in") == 0);
    leaks.verify();
  }
}
