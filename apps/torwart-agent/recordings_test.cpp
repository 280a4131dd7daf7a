#include "recordings.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <utime.h>

#include <filesystem>
#include <fstream>

#include "torwart/core/ids.hpp"

namespace torwart::agent {
namespace {

namespace fs = std::filesystem;

RecordingFile F(const char* stream, uint64_t size, int64_t mtime, bool uploaded,
                bool live = false) {
  return RecordingFile{stream, size, mtime, uploaded, live};
}

TEST(Quota, NothingToDoUnderTheQuota) {
  auto p = PlanEviction({F("a", 100, 1, true), F("b", 100, 2, false)}, 1000, 1);
  EXPECT_TRUE(p.remove.empty());
  EXPECT_EQ(p.used, 200u);
  EXPECT_EQ(p.pending, 100u);
  EXPECT_FALSE(p.full);
}

TEST(Quota, EvictsOnlyUploadedOldestFirst) {
  std::vector<RecordingFile> files = {
      F("old-uploaded", 300, 1, true), F("old-pending", 300, 2, false),
      F("mid-uploaded", 300, 3, true), F("new-uploaded", 300, 4, true),
      F("live", 300, 5, true, /*live=*/true)};
  // 1500 used; quota 1000: remove 300 + 300 (oldest uploaded first), never the pending or live.
  auto p = PlanEviction(files, 1000, 1);
  EXPECT_EQ(p.remove, (std::vector<std::string>{"old-uploaded", "mid-uploaded"}));
  EXPECT_EQ(p.used, 900u);
  EXPECT_FALSE(p.full);
  // The input order does not matter: age does.
  std::reverse(files.begin(), files.end());
  EXPECT_EQ(PlanEviction(files, 1000, 1).remove,
            (std::vector<std::string>{"old-uploaded", "mid-uploaded"}));
}

TEST(Quota, FullOfNotUploadedRecordingsMeansFull) {
  std::vector<RecordingFile> files = {F("a", 600, 1, false), F("b", 300, 2, true),
                                      F("c", 500, 3, false)};
  auto p = PlanEviction(files, 1000, 1);
  EXPECT_EQ(p.remove, std::vector<std::string>{"b"}) << "what can go, goes";
  EXPECT_EQ(p.used, 1100u);
  EXPECT_EQ(p.pending, 1100u);
  EXPECT_TRUE(p.full) << "new streams must be refused";
  // Exactly at the quota with a reserve of one byte: full.
  EXPECT_TRUE(PlanEviction({F("a", 1000, 1, false)}, 1000, 1).full);
  EXPECT_FALSE(PlanEviction({F("a", 999, 1, false)}, 1000, 1).full);
}

TEST(Quota, ScanAndApplyOnDisk) {
  fs::path dir = fs::temp_directory_path() / ("rec-" + RandomToken(6));
  fs::create_directories(dir);
  auto write = [&](const std::string& stream, size_t size, time_t mtime, bool uploaded) {
    std::string p = RecordingPath(dir.string(), stream);
    std::ofstream(p) << std::string(size, 'x');
    utimbuf t{mtime, mtime};
    ::utime(p.c_str(), &t);
    if (uploaded) {
      ASSERT_TRUE(MarkUploaded(dir.string(), stream));
    }
  };
  write("st-000000000000000a", 400, 1000, true);
  write("st-000000000000000b", 400, 2000, false);
  write("st-000000000000000c", 400, 3000, true);
  std::ofstream(dir / "notes.txt") << "ignored";
  std::ofstream(dir / "st-bad.rec") << "ignored: not one of ours";
  auto files = ScanRecordings(dir.string(), {"st-000000000000000c"});
  ASSERT_EQ(files.size(), 3u);
  EXPECT_EQ(files[0].stream, "st-000000000000000a");
  EXPECT_TRUE(files[0].uploaded);
  EXPECT_FALSE(files[1].uploaded);
  EXPECT_TRUE(files[2].live);
  auto plan = PlanEviction(files, 1000, 1);
  EXPECT_EQ(plan.remove, std::vector<std::string>{"st-000000000000000a"});
  EXPECT_EQ(ApplyEviction(dir.string(), plan), 1u);
  EXPECT_FALSE(fs::exists(RecordingPath(dir.string(), "st-000000000000000a")));
  EXPECT_FALSE(fs::exists(RecordingPath(dir.string(), "st-000000000000000a") + ".uploaded"));
  EXPECT_TRUE(fs::exists(RecordingPath(dir.string(), "st-000000000000000b")));
  EXPECT_EQ(ScanRecordings(dir.string(), {}).size(), 2u);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace torwart::agent
