#include "torwart/audit/group_commit.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

namespace torwart::audit {
namespace {

// Records batches; can fail on demand; blocks the first batch until released so that a queue
// builds up behind it (makes batching observable without timing).
class FakeAppender : public BatchAppender {
 public:
  Expected<void> AppendBatch(std::vector<Event>& events) override {
    std::unique_lock lock(mu);
    if (entered == 0) entered = events.size();
    cv.wait(lock, [&] { return released; });
    if (fail) return MakeError(Errc::kResourceExhausted, "disk full");
    for (Event& e : events) {
      e.seq = ++last_seq;
      committed.push_back(e.seq);
    }
    batches.push_back(events.size());
    return {};
  }
  void Release() {
    std::lock_guard lock(mu);
    released = true;
    cv.notify_all();
  }
  std::mutex mu;
  std::condition_variable cv;
  bool released = false, fail = false;
  size_t entered = 0;  // size of the first batch, once it arrived
  int64_t last_seq = 0;
  std::vector<int64_t> committed;
  std::vector<size_t> batches;
};

TEST(GroupCommit, ConcurrentAppendsShareBatchesAndAllSucceed) {
  FakeAppender app;
  std::atomic<int> committed_events{0};
  GroupCommitSettings s;
  s.on_committed = [&](const std::vector<Event>& ev) { committed_events += int(ev.size()); };
  GroupCommitSink sink(app, s);
  constexpr int kThreads = 32;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      if (sink.Append(Event{})) ++ok;
    });
  }
  // The first batch blocks in the appender; wait until every other writer queued behind it.
  while (true) {
    size_t in_flight = 0;
    {
      std::lock_guard lock(app.mu);
      in_flight = app.entered;
    }
    if (in_flight > 0 && in_flight + sink.stats().queued == size_t(kThreads)) break;
    std::this_thread::yield();
  }
  app.Release();
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, kThreads);
  EXPECT_EQ(committed_events, kThreads);
  std::set<int64_t> seqs(app.committed.begin(), app.committed.end());
  EXPECT_EQ(seqs.size(), size_t(kThreads));
  EXPECT_LE(app.batches.size(), 2u);  // the blocked batch and everything queued behind it
  EXPECT_GT(sink.stats().largest_batch, 1u);
}

TEST(GroupCommit, FailureIsReportedToEveryWriterOfTheBatch) {
  FakeAppender app;
  app.fail = true;
  app.Release();
  int failures_seen = 0;
  GroupCommitSettings s;
  s.on_failed = [&](const Error& e, size_t) {
    EXPECT_TRUE(e.Is(Errc::kResourceExhausted));
    ++failures_seen;
  };
  GroupCommitSink sink(app, s);
  auto r = sink.Append(Event{});
  ASSERT_FALSE(r);
  EXPECT_TRUE(r.error().Is(Errc::kResourceExhausted));
  EXPECT_EQ(failures_seen, 1);
  {
    std::lock_guard lock(app.mu);
    app.fail = false;
  }
  EXPECT_TRUE(sink.Append(Event{}));  // recovers once the fault clears
  sink.Stop();
  auto after = sink.Append(Event{});
  ASSERT_FALSE(after);
  EXPECT_TRUE(after.error().Is(Errc::kUnavailable));
}

}  // namespace
}  // namespace torwart::audit
