// A1: audit append throughput and latency with 64 concurrent writers (../shared/BENCHMARKS.md).
// Compares (1) group commit (GroupCommitSink over the SQLite audit store: one transaction and
// one fsync per batch), (2) a plain append-only file with write+fdatasync per record, and
// (3) SQLite WAL synchronous=FULL with one transaction per record (the store without group
// commit). Every acknowledged append is durable in all three. Prints one JSON line per mode and
// one with the ratios. Usage: bench_a1_audit [DIR] [SECONDS_PER_MODE]
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "torwart/audit/group_commit.hpp"
#include "torwart/storage/store.hpp"

using namespace torwart;
namespace fs = std::filesystem;
using Steady = std::chrono::steady_clock;

namespace {

constexpr int kWriters = 64;

struct Result {
  double per_second = 0, p50_us = 0, p99_us = 0;
  int64_t events = 0;
};

audit::Event MakeEvent(int writer, int64_t i) {
  audit::Event e;
  e.time = SystemClock::Instance().Now();
  e.actor_type = audit::ActorType::kUser;
  e.actor = "writer-" + std::to_string(writer);
  e.source = "127.0.0.1:40000";
  e.category = "auth";
  e.type = "auth.login";
  e.target = "user-" + std::to_string(i);
  e.result = audit::Result::kFailure;
  e.reason = "wrong password";
  e.details = R"({"attempt":1})";
  return e;
}

template <class Append>
Result Run(double seconds, Append append) {
  std::vector<std::vector<double>> lat(kWriters);
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  const auto start = Steady::now();
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      for (int64_t i = 0; !stop; ++i) {
        auto t0 = Steady::now();
        if (!append(MakeEvent(w, i))) {
          std::fprintf(stderr, "append failed\n");
          std::exit(1);
        }
        lat[w].push_back(std::chrono::duration<double, std::micro>(Steady::now() - t0).count());
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Steady::now() - start).count();
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  Result r;
  r.events = static_cast<int64_t>(all.size());
  r.per_second = all.size() / elapsed;
  if (!all.empty()) {
    r.p50_us = all[all.size() / 2];
    r.p99_us = all[std::min(all.size() - 1, all.size() * 99 / 100)];
  }
  return r;
}

void Print(const char* mode, const Result& r) {
  std::printf(
      "{\"bench\":\"A1\",\"mode\":\"%s\",\"writers\":%d,\"events\":%lld,\"events_per_s\":%.1f,"
      "\"p50_us\":%.1f,\"p99_us\":%.1f}\n",
      mode, kWriters, static_cast<long long>(r.events), r.per_second, r.p50_us, r.p99_us);
  std::fflush(stdout);
}

std::unique_ptr<storage::Store> OpenFresh(const fs::path& dir, const char* name) {
  fs::remove(dir / name);
  fs::remove(dir / (std::string(name) + "-wal"));
  fs::remove(dir / (std::string(name) + "-shm"));
  auto s = storage::OpenSqlite({.path = (dir / name).string()});
  if (!s) {
    std::fprintf(stderr, "%s\n", s.error().message().c_str());
    std::exit(1);
  }
  return std::move(*s);
}

}  // namespace

int main(int argc, char** argv) {
  fs::path dir = argc > 1 ? fs::path(argv[1]) : fs::temp_directory_path() / "torwart-a1";
  double seconds = argc > 2 ? std::atof(argv[2]) : 5.0;
  fs::create_directories(dir);

  Result group;
  {
    auto store = OpenFresh(dir, "group.db");
    audit::GroupCommitSink sink(store->audit(), {});
    group = Run(seconds, [&](audit::Event e) { return bool(sink.Append(std::move(e))); });
    auto stats = sink.stats();
    sink.Stop();
    Print("group_commit", group);
    std::printf("{\"bench\":\"A1\",\"mode\":\"group_commit\",\"batches\":%lld,\"largest_batch\":%zu}\n",
                static_cast<long long>(stats.batches), stats.largest_batch);
  }

  Result file;
  {
    const std::string path = (dir / "plain.log").string();
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
    std::mutex mu;
    file = Run(seconds, [&](audit::Event e) {
      std::string line = audit::ToJson(e) + "\n";
      std::lock_guard lock(mu);  // one fsync per record, records in order
      return ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
             ::fdatasync(fd) == 0;
    });
    ::close(fd);
    Print("fsync_per_record_file", file);
  }

  Result sqlite;
  {
    auto store = OpenFresh(dir, "single.db");
    sqlite = Run(seconds, [&](audit::Event e) { return bool(store->audit().Append(std::move(e))); });
    Print("sqlite_wal_full_per_record", sqlite);
  }

  std::printf(
      "{\"bench\":\"A1\",\"ratio_group_vs_fsync_per_record\":%.2f,"
      "\"ratio_group_vs_sqlite_per_record\":%.2f,\"target_ratio\":20}\n",
      group.per_second / std::max(file.per_second, 1e-9),
      group.per_second / std::max(sqlite.per_second, 1e-9));
  return 0;
}
