// ferry-bench-mpi-peer: Open MPI's ping-pong and one-way stream between two ranks, the anchor
// ferry's channels are compared with. ferry-bench runs it as `mpirun -np 2 ... ferry-bench-mpi-peer
// PREFIX REPS BYTES:RTT_ITERS:STREAM_COUNT...` and reads the JSON lines rank 0 prints
// ({name, value, unit}, names PREFIX.<metric>.<bytes>), the same workload as its own channels:
// RTT_ITERS timed round trips after RTT_ITERS/10 warm-ups, then STREAM_COUNT messages one way
// (in windows of non-blocking sends) and a 1-byte ack, REPS times; each figure is the median over
// the repetitions. Single-threaded; uses MPI's C API only (no ferry), so it builds wherever mpicc's
// headers do.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
// Streaming posts this many non-blocking sends (and the receiver as many receives) at a time,
// as the OSU bandwidth test does: receives are posted before the data arrives, so MPI is
// measured on its fast path rather than on its unexpected-message queue. All share one buffer:
// the contents are not looked at.
constexpr int kWindow = 64;

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const double idx = p / 100.0 * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(idx));
  const auto hi = static_cast<std::size_t>(std::ceil(idx));
  return v[lo] + (v[hi] - v[lo]) * (idx - static_cast<double>(lo));
}

struct Workload {
  long bytes = 0, rtt_iters = 0, stream_count = 0;
};

bool parse_workload(const char* s, Workload& w) {
  return std::sscanf(s, "%ld:%ld:%ld", &w.bytes, &w.rtt_iters, &w.stream_count) == 3 &&
         w.bytes > 0 && w.rtt_iters > 0 && w.stream_count > 0;
}

void emit(const std::string& name, double value, const char* unit) {
  std::printf("{\"name\":\"%s\",\"value\":%.9g,\"unit\":\"%s\"}\n", name.c_str(), value, unit);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::vector<Workload> loads;
  int reps = 0;
  bool ok = size == 2 && argc >= 4 && (reps = std::atoi(argv[2])) > 0;
  for (int i = 3; ok && i < argc; ++i) {
    Workload w;
    ok = parse_workload(argv[i], w);
    loads.push_back(w);
  }
  if (!ok) {
    if (rank == 0) {
      std::fprintf(stderr,
                   "usage: mpirun -np 2 ferry-bench-mpi-peer PREFIX REPS "
                   "BYTES:RTT_ITERS:STREAM_COUNT...\n");
    }
    MPI_Finalize();
    return 2;
  }
  const std::string prefix = argv[1];
  const int other = 1 - rank;
  for (const auto& w : loads) {
    std::vector<char> buf(static_cast<std::size_t>(w.bytes), 'x');
    const int n = static_cast<int>(w.bytes);
    std::vector<double> p50, p99, msgs, gbs;
    std::vector<MPI_Request> reqs(kWindow);
    for (int rep = 0; rep < reps; ++rep) {
      MPI_Barrier(MPI_COMM_WORLD);
      std::vector<double> us;
      us.reserve(static_cast<std::size_t>(w.rtt_iters));
      for (long i = -w.rtt_iters / 10; i < w.rtt_iters; ++i) {  // first 10% warm up
        if (rank == 0) {
          const auto t0 = Clock::now();
          MPI_Send(buf.data(), n, MPI_CHAR, other, 0, MPI_COMM_WORLD);
          MPI_Recv(buf.data(), n, MPI_CHAR, other, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
          if (i >= 0) {
            us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
          }
        } else {
          MPI_Recv(buf.data(), n, MPI_CHAR, other, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
          MPI_Send(buf.data(), n, MPI_CHAR, other, 0, MPI_COMM_WORLD);
        }
      }
      MPI_Barrier(MPI_COMM_WORLD);
      if (rank == 0) {
        p50.push_back(percentile(us, 50));
        p99.push_back(percentile(std::move(us), 99));
        const auto t0 = Clock::now();
        for (long i = 0; i < w.stream_count; i += kWindow) {
          const int k = static_cast<int>(std::min<long>(kWindow, w.stream_count - i));
          for (int j = 0; j < k; ++j)
            MPI_Isend(buf.data(), n, MPI_CHAR, other, 1, MPI_COMM_WORLD, &reqs[j]);
          MPI_Waitall(k, reqs.data(), MPI_STATUSES_IGNORE);
        }
        char ack = 0;
        MPI_Recv(&ack, 1, MPI_CHAR, other, 2, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        msgs.push_back(static_cast<double>(w.stream_count) / secs);
        gbs.push_back(static_cast<double>(w.stream_count) * static_cast<double>(w.bytes) / secs /
                      1e9);
      } else {
        for (long i = 0; i < w.stream_count; i += kWindow) {
          const int k = static_cast<int>(std::min<long>(kWindow, w.stream_count - i));
          for (int j = 0; j < k; ++j)
            MPI_Irecv(buf.data(), n, MPI_CHAR, other, 1, MPI_COMM_WORLD, &reqs[j]);
          MPI_Waitall(k, reqs.data(), MPI_STATUSES_IGNORE);
        }
        char ack = 'k';
        MPI_Send(&ack, 1, MPI_CHAR, other, 2, MPI_COMM_WORLD);
      }
    }
    if (rank == 0) {
      const auto sfx = "." + std::to_string(w.bytes);
      emit(prefix + ".rtt_p50_us" + sfx, percentile(p50, 50), "us");
      emit(prefix + ".rtt_p99_us" + sfx, percentile(p99, 50), "us");
      emit(prefix + ".msgs_per_s" + sfx, percentile(msgs, 50), "msg/s");
      emit(prefix + ".gb_per_s" + sfx, percentile(gbs, 50), "GB/s");
    }
  }
  MPI_Finalize();
  return 0;
}
