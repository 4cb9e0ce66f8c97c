#!/usr/bin/env python3
"""Python's process pools on ferry-bench's pool workload (standard library only).

Started by `ferry-bench pool` when python3 is on PATH; prints one JSON object per line,
{"name": ..., "value": ..., "unit": ...}, with names peer.python_mp.* (multiprocessing.Pool)
and peer.python_futures.* (concurrent.futures.ProcessPoolExecutor), which ferry-bench adds to
its report beside its own pool.<transport>.* figures. Same workload as the C++ side: square of
ints; count_primes (the same trial division) for the CPU-bound scaling test. Pools use the
interpreter's default start method (fork on Linux up to Python 3.13); it is reported as a
figure's note on stderr.

Run it alone: python3 bench/python_pools.py --quick
"""

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import statistics
import sys
import time


def square(x):
    return x * x


def count_primes(n):
    # The same trial division as ferry::builtin::count_primes.
    count = 0
    for k in range(2, n):
        d = 2
        prime = True
        while d * d <= k:
            if k % d == 0:
                prime = False
                break
            d += 1
        if prime:
            count += 1
    return count


def announce(q):
    # Initializer: a worker that runs it is up and about to take tasks ("registered").
    q.put(1)


def emit(name, value, unit):
    print(json.dumps({"name": name, "value": value, "unit": unit}), flush=True)


def median_of(reps, fn):
    return statistics.median(fn() for _ in range(reps))


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def p50_us(call, iters):
    warm = iters // 10
    samples = []
    for i in range(warm + iters):
        t0 = time.perf_counter()
        call(i)
        if i >= warm:
            samples.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(samples)


def startup_ms(make, workers):
    """Spawn -> every worker has run its initializer, as Pool::wait_ready measures."""
    q = mp.get_context().SimpleQueue()
    t0 = time.perf_counter()
    pool = make(workers, q)
    for _ in range(workers):
        q.get()
    elapsed = (time.perf_counter() - t0) * 1e3
    return pool, elapsed


def bench_mp(a):
    p = "peer.python_mp."
    with mp.Pool(a.workers) as pool:
        pool.map(square, range(1000))  # warm: workers started and imported

        def submit():
            rs = [pool.apply_async(square, (i,)) for i in range(a.tasks)]
            for r in rs:
                r.get()

        emit(p + "submit_tasks_per_s", a.tasks / median_of(a.reps, lambda: timed(submit)), "tasks/s")
        emit(p + "map_items_per_s",
             a.items / median_of(a.map_reps, lambda: timed(lambda: pool.map(square, range(a.items)))),
             "items/s")
        emit(p + "apply_rtt_p50_us",
             median_of(a.reps, lambda: p50_us(lambda i: pool.apply(square, (i,)), a.apply_iters)),
             "us")

    def one(workers):
        pool, ms = startup_ms(lambda w, q: mp.Pool(w, announce, (q,)), workers)
        pool.terminate()
        pool.join()
        return ms

    emit(p + "startup_ms." + str(a.startup_workers),
         statistics.median(one(a.startup_workers) for _ in range(a.startup_reps)), "ms")

    def primes(workers):
        with mp.Pool(workers) as pool:
            pool.map(square, range(workers * 4))
            return median_of(a.primes_reps, lambda: timed(
                lambda: pool.map(count_primes, [a.primes_n] * a.primes_tasks, chunksize=1)))

    t1 = primes(1)
    t2 = primes(a.workers)
    emit(p + "count_primes_ms_1w", t1 * 1e3, "ms")
    emit(p + "count_primes_ms_2w", t2 * 1e3, "ms")
    emit(p + "count_primes_speedup_2w", t1 / t2, "x")


def bench_futures(a):
    p = "peer.python_futures."
    with cf.ProcessPoolExecutor(a.workers) as ex:
        list(ex.map(square, range(1000)))

        def submit():
            fs = [ex.submit(square, i) for i in range(a.futures_tasks)]
            for f in fs:
                f.result()

        emit(p + "submit_tasks_per_s",
             a.futures_tasks / median_of(a.reps, lambda: timed(submit)), "tasks/s")
        # ProcessPoolExecutor.map does not chunk unless told: give it Pool.map's chunk size.
        chunk = max(1, -(-a.items // (4 * a.workers)))
        emit(p + "map_items_per_s",
             a.items / median_of(a.map_reps, lambda: timed(
                 lambda: list(ex.map(square, range(a.items), chunksize=chunk)))), "items/s")
        emit(p + "apply_rtt_p50_us",
             median_of(a.reps, lambda: p50_us(lambda i: ex.submit(square, i).result(),
                                               a.apply_iters)), "us")

    def one(workers):
        q = mp.get_context().SimpleQueue()
        t0 = time.perf_counter()
        ex = cf.ProcessPoolExecutor(workers, initializer=announce, initargs=(q,))
        ex.submit(square, 1)  # workers start on the first submit
        for _ in range(workers):
            q.get()
        ms = (time.perf_counter() - t0) * 1e3
        ex.shutdown(wait=True)
        return ms

    emit(p + "startup_ms." + str(a.startup_workers),
         statistics.median(one(a.startup_workers) for _ in range(a.startup_reps)), "ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=None, help="submit-per-task count")
    ap.add_argument("--futures-tasks", type=int, default=None)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--apply-iters", type=int, default=None)
    ap.add_argument("--startup-workers", type=int, default=4)
    ap.add_argument("--startup-reps", type=int, default=None)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--map-reps", type=int, default=None)
    ap.add_argument("--primes-n", type=int, default=None)
    ap.add_argument("--primes-tasks", type=int, default=8)
    ap.add_argument("--primes-reps", type=int, default=None)
    a = ap.parse_args()
    q = a.quick
    # --quick keeps the whole Python side to about 15 s on a busy 2-core machine.
    a.tasks = a.tasks or (10_000 if q else 100_000)
    a.futures_tasks = a.futures_tasks or (5_000 if q else 50_000)
    a.apply_iters = a.apply_iters or (1_000 if q else 10_000)
    a.startup_reps = a.startup_reps or (3 if q else 11)
    a.reps = a.reps or (3 if q else 5)
    a.map_reps = a.map_reps or (1 if q else 3)
    a.primes_n = a.primes_n or (20_000 if q else 60_000)
    a.primes_reps = a.primes_reps or (1 if q else 3)
    print("python_pools: Python %s, start method %s" %
          (sys.version.split()[0], mp.get_start_method()), file=sys.stderr)
    bench_mp(a)
    bench_futures(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
