#include "torwart/net/backoff.hpp"

#include <gtest/gtest.h>

#include <set>

namespace torwart::net {
namespace {

using std::chrono::milliseconds;

TEST(BackoffTest, StaysWithinTheGrowingCeiling) {
  Backoff b(milliseconds(100), milliseconds(10'000), 42);
  int64_t ceiling = 100;
  for (int i = 0; i < 20; ++i) {
    auto d = b.Next();
    EXPECT_GE(d.count(), 0) << "attempt " << i;
    EXPECT_LE(d.count(), ceiling) << "attempt " << i;
    ceiling = std::min<int64_t>(ceiling * 2, 10'000);
  }
  EXPECT_EQ(b.attempt(), 20);
}

TEST(BackoffTest, GrowsThenCaps) {
  // Averages over many seeds: the mean of full jitter is ceiling/2.
  constexpr int kRuns = 2000;
  std::vector<double> mean(12, 0.0);
  for (int seed = 1; seed <= kRuns; ++seed) {
    Backoff b(milliseconds(10), milliseconds(1000), static_cast<uint64_t>(seed));
    for (size_t i = 0; i < mean.size(); ++i) mean[i] += b.Next().count() / double(kRuns);
  }
  EXPECT_NEAR(mean[0], 5, 1.5);
  EXPECT_NEAR(mean[3], 40, 6);
  EXPECT_GT(mean[5], mean[3]);
  // From attempt 7 on (10 * 2^7 = 1280 > 1000) the cap holds: mean ~500.
  for (size_t i = 7; i < mean.size(); ++i) EXPECT_NEAR(mean[i], 500, 40) << "attempt " << i;
}

TEST(BackoffTest, ResetStartsOver) {
  Backoff b(milliseconds(50), milliseconds(60'000), 7);
  for (int i = 0; i < 30; ++i) b.Next();
  b.Reset();
  EXPECT_EQ(b.attempt(), 0);
  EXPECT_LE(b.Next().count(), 50);
  EXPECT_EQ(b.attempt(), 1);
}

TEST(BackoffTest, SeedGivesReproducibleSequence) {
  Backoff a(milliseconds(100), milliseconds(30'000), 1234);
  Backoff b(milliseconds(100), milliseconds(30'000), 1234);
  Backoff c(milliseconds(100), milliseconds(30'000), 4321);
  std::vector<int64_t> sa, sb, sc;
  for (int i = 0; i < 16; ++i) {
    sa.push_back(a.Next().count());
    sb.push_back(b.Next().count());
    sc.push_back(c.Next().count());
  }
  EXPECT_EQ(sa, sb);
  EXPECT_NE(sa, sc);
}

TEST(BackoffTest, UnseededInstancesDiffer) {
  std::set<std::vector<int64_t>> seen;
  for (int k = 0; k < 3; ++k) {
    Backoff b(milliseconds(1000), milliseconds(1'000'000));
    std::vector<int64_t> s;
    for (int i = 0; i < 8; ++i) s.push_back(b.Next().count());
    seen.insert(s);
  }
  EXPECT_EQ(seen.size(), 3u);
}

TEST(BackoffTest, HugeAttemptCountsDoNotOverflow) {
  Backoff b(milliseconds(1), milliseconds(5000), 9);
  for (int i = 0; i < 100'000; ++i) {
    auto d = b.Next();
    ASSERT_GE(d.count(), 0);
    ASSERT_LE(d.count(), 5000);
  }
}

}  // namespace
}  // namespace torwart::net
