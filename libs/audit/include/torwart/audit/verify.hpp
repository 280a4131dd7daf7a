// Verification of a stored audit chain: recomputes every content hash and chain link, checks the
// signed checkpoints, and says where a record was modified, deleted, inserted, reordered or the
// log truncated. Streaming (records are added in stored order); one verifier per run, not
// thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "torwart/audit/chain.hpp"

namespace torwart::audit {

struct Problem {
  int64_t seq = 0;   // where: the first affected record
  std::string kind;  // modified, deleted, inserted, reordered, truncated, checkpoint
  std::string message;
};

struct VerifyReport {
  int64_t records = 0, purged = 0, first_seq = 0, last_seq = 0;
  int64_t checkpoints = 0;       // signed checkpoints seen
  int64_t anchored_through = 0;  // highest seq whose hash matches a valid signed checkpoint
  std::vector<Problem> problems;
  bool ok() const { return problems.empty(); }
};

// JSON object text of a report (ok, counts, problems).
std::string ToJson(const VerifyReport& r);

class ChainVerifier {
 public:
  // `key` may be null: checkpoints then count as unverifiable problems. `known_head` is the last
  // seq the running server committed (0 if unknown, e.g. offline).
  ChainVerifier(const CheckpointVerifier* key, std::vector<Checkpoint> checkpoints,
                int64_t known_head = 0);
  // Records in ascending seq order, as stored.
  void Add(const Record& r);
  VerifyReport Finish();

 private:
  struct Shift {
    int64_t seq, original;
  };
  struct Tombstone {
    int64_t seq;
    std::string category;
    int64_t time_us;
  };
  struct Purge {
    int64_t seq;
    std::string category;
    int64_t before_us;
  };
  void AddProblem(int64_t seq, std::string kind, std::string message);
  std::optional<int64_t> FindOriginalSeq(const Record& r) const;

  const CheckpointVerifier* key_;
  std::map<int64_t, Checkpoint> checkpoints_;
  int64_t known_head_;
  VerifyReport report_;
  bool have_prev_ = false;
  int64_t prev_seq_ = 0;
  std::string prev_hash_;
  std::vector<Shift> shifts_;
  std::vector<Tombstone> tombstones_;
  std::vector<Purge> purges_;
  std::map<int64_t, Problem> problems_;  // by seq; one per seq
};

}  // namespace torwart::audit
