#!/usr/bin/env python3
"""Dask's distributed scheduler on ferry-bench's remote workload.

Started by `ferry-bench remote` when `import distributed` works (Debian: python3-distributed);
prints one JSON object per line, {"name": ..., "value": ..., "unit": ...}, with names
peer.dask.*, which ferry-bench adds to its report beside its remote.tcp.* figures. Same
workload as the C++ side: a LocalCluster of 2 worker processes with 1 thread each, talking to
the scheduler over TCP on loopback, running square of ints:

  submit_tasks_per_s   client.submit(square, i, pure=False) for every i, then gather
  apply_rtt_p50_us     client.submit(square, i, pure=False).result(), median (and p99)

Run it alone: python3 bench/python_dask.py --quick
"""

import argparse
import json
import logging
import statistics
import sys
import time
import warnings


def square(x):
    return x * x


def emit(name, value, unit):
    print(json.dumps({"name": name, "value": value, "unit": unit}), flush=True)


def percentile(values, p):
    v = sorted(values)
    idx = p / 100 * (len(v) - 1)
    lo = int(idx)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (idx - lo)


def submit_rate(client, n):
    t0 = time.perf_counter()
    futures = [client.submit(square, i, pure=False) for i in range(n)]
    total = sum(client.gather(futures))
    secs = time.perf_counter() - t0
    if total != sum(i * i for i in range(n)):
        raise RuntimeError("dask submit: wrong results")
    return n / secs


def apply_us(client, iters):
    us = []
    for i in range(-(iters // 10), iters):  # first 10% warm up
        t0 = time.perf_counter()
        r = client.submit(square, i, pure=False).result()
        if i >= 0:
            us.append((time.perf_counter() - t0) * 1e6)
        if r != i * i:
            raise RuntimeError("dask apply: wrong result")
    return us


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--apply-iters", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()

    # Dask logs to stderr and warns about the machine (e.g. few cores); stdout stays JSON.
    logging.getLogger("distributed").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(a.workers)
        submit_rate(client, min(a.tasks, 200))  # warm up: imports, connections
        rates = [submit_rate(client, a.tasks) for _ in range(a.reps)]
        emit("peer.dask.submit_tasks_per_s", statistics.median(rates), "tasks/s")
        p50, p99 = [], []
        for _ in range(a.reps):
            us = apply_us(client, a.apply_iters)
            p50.append(percentile(us, 50))
            p99.append(percentile(us, 99))
        emit("peer.dask.apply_rtt_p50_us", statistics.median(p50), "us")
        emit("peer.dask.apply_rtt_p99_us", statistics.median(p99), "us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
