#include "torwart/audit/verify.hpp"

#include <nlohmann/json.hpp>
#include <utility>

namespace torwart::audit {
namespace {

constexpr int64_t kShiftWindow = 256;   // how far a renumbered record is searched for
constexpr size_t kMaxProblems = 1000;  // a wholesale rewrite is reported, not listed in full

int64_t Micros(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

std::string Range(int64_t a, int64_t b) {
  return a == b ? std::to_string(a) : std::to_string(a) + ".." + std::to_string(b);
}

}  // namespace

std::string ToJson(const VerifyReport& r) {
  nlohmann::ordered_json j;
  j["ok"] = r.ok();
  j["records"] = r.records;
  j["purged"] = r.purged;
  j["first_seq"] = r.first_seq;
  j["last_seq"] = r.last_seq;
  j["checkpoints"] = r.checkpoints;
  j["anchored_through"] = r.anchored_through;
  auto problems = nlohmann::ordered_json::array();
  for (const Problem& p : r.problems) {
    problems.push_back({{"seq", p.seq}, {"kind", p.kind}, {"message", p.message}});
  }
  j["problems"] = std::move(problems);
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

ChainVerifier::ChainVerifier(const CheckpointVerifier* key, std::vector<Checkpoint> checkpoints,
                             int64_t known_head)
    : key_(key), known_head_(known_head) {
  for (Checkpoint& c : checkpoints) {
    int64_t seq = c.seq;
    checkpoints_[seq] = std::move(c);
  }
  report_.checkpoints = static_cast<int64_t>(checkpoints_.size());
}

void ChainVerifier::AddProblem(int64_t seq, std::string kind, std::string message) {
  if (problems_.size() >= kMaxProblems || problems_.count(seq)) return;
  problems_[seq] = Problem{seq, std::move(kind), std::move(message)};
}

std::optional<int64_t> ChainVerifier::FindOriginalSeq(const Record& r) const {
  Event e = r.event;
  const int64_t seq = e.seq;
  auto matches = [&](int64_t candidate) {
    if (candidate < 1 || candidate == seq) return false;
    e.seq = candidate;
    return ContentHash(e) == r.content_hash;
  };
  // A renumbered run shares one offset: try the last one first.
  if (!shifts_.empty()) {
    int64_t guess = seq - (shifts_.back().seq - shifts_.back().original);
    if (matches(guess)) return guess;
  }
  for (int64_t k = 1; k <= kShiftWindow; ++k) {
    if (matches(seq - k)) return seq - k;
    if (matches(seq + k)) return seq + k;
  }
  return std::nullopt;
}

void ChainVerifier::Add(const Record& r) {
  const int64_t seq = r.event.seq;
  ++report_.records;
  if (r.purged) ++report_.purged;
  bool link_known = false;
  if (!have_prev_) {
    report_.first_seq = seq;
    if (seq > 1) {
      AddProblem(1, "deleted",
                 "records " + Range(1, seq - 1) + " are missing (deleted at the start of the log)");
    } else {
      link_known = true;
      prev_hash_ = std::string(kGenesisHash);
    }
  } else if (seq <= prev_seq_) {
    AddProblem(seq, "reordered",
               "record " + std::to_string(seq) + " appears after record " +
                   std::to_string(prev_seq_));
  } else if (seq > prev_seq_ + 1) {
    AddProblem(prev_seq_ + 1, "deleted",
               "records " + Range(prev_seq_ + 1, seq - 1) + " are missing (deleted)");
  } else {
    link_known = true;
  }

  bool content_bad = false;
  if (!r.purged) {
    if (ContentHash(r.event) != r.content_hash) {
      content_bad = true;
      if (auto original = FindOriginalSeq(r)) {
        shifts_.push_back({seq, *original});
      } else {
        AddProblem(seq, "modified",
                   "record " + std::to_string(seq) +
                       " was modified: its content does not match its hash");
      }
    }
    if (r.event.type == "audit.purged" && r.event.result == Result::kSuccess) {
      auto d = nlohmann::json::parse(r.event.details, nullptr, /*allow_exceptions=*/false);
      if (d.is_object() && d.contains("category") && d["category"].is_string() &&
          d.contains("before_us") && d["before_us"].is_number_integer()) {
        purges_.push_back({seq, d["category"].get<std::string>(), d["before_us"].get<int64_t>()});
      }
    }
  } else {
    tombstones_.push_back({seq, r.event.category, Micros(r.event.time)});
  }

  const bool neighbour_bad =
      problems_.count(seq - 1) || (!shifts_.empty() && shifts_.back().seq == seq - 1);
  if (!content_bad && link_known && !neighbour_bad &&
      ChainHash(prev_hash_, r.content_hash) != r.event.hash) {
    AddProblem(seq, "modified",
               "chain link between records " + std::to_string(seq - 1) + " and " +
                   std::to_string(seq) + " is broken: one of them was rewritten");
  }

  if (auto it = checkpoints_.find(seq); it != checkpoints_.end()) {
    const Checkpoint& c = it->second;
    Expected<void> valid = key_ ? key_->Verify(c)
                                : Expected<void>(MakeError(Errc::kInvalidArgument,
                                                           "no public key to verify checkpoints"));
    if (!valid) {
      AddProblem(seq, "checkpoint", valid.error().message());
    } else if (c.hash != r.event.hash) {
      AddProblem(seq, "modified",
                 "record " + std::to_string(seq) +
                     " does not match the signed checkpoint: records after " +
                     std::to_string(report_.anchored_through) + " up to " + std::to_string(seq) +
                     " were rewritten");
    } else {
      report_.anchored_through = seq;
    }
  }

  have_prev_ = true;
  prev_seq_ = seq;
  prev_hash_ = r.event.hash;
  report_.last_seq = seq;
}

VerifyReport ChainVerifier::Finish() {
  const int64_t last = report_.last_seq;
  if (!checkpoints_.empty() && checkpoints_.rbegin()->first > last) {
    const Checkpoint& c = checkpoints_.rbegin()->second;
    Expected<void> valid = key_ ? key_->Verify(c) : Expected<void>();
    if (!valid) {
      AddProblem(c.seq, "checkpoint", valid.error().message());
    } else {
      AddProblem(last + 1, "truncated",
                 "the log ends at seq " + std::to_string(last) +
                     " but a signed checkpoint covers seq " + std::to_string(c.seq) +
                     ": records " + Range(last + 1, c.seq) + " were removed");
    }
  }
  if (known_head_ > last) {
    AddProblem(last + 1, "truncated",
               "the log ends at seq " + std::to_string(last) + " but the server committed up to " +
                   std::to_string(known_head_) + ": records " + Range(last + 1, known_head_) +
                   " were removed");
  }

  // Renumbered records: a run with one offset reaching the end of the log is an insertion
  // (offset > 0) or a hidden deletion (offset < 0); runs that mirror each other are a reordering.
  struct Run {
    int64_t first, last, offset;
  };
  std::vector<Run> runs;
  for (const Shift& s : shifts_) {
    int64_t offset = s.seq - s.original;
    if (!runs.empty() && runs.back().last + 1 == s.seq && runs.back().offset == offset) {
      runs.back().last = s.seq;
    } else {
      runs.push_back({s.seq, s.seq, offset});
    }
  }
  for (const Run& run : runs) {
    bool mirrored = false;
    for (const Run& other : runs) {
      if (&other != &run && other.offset == -run.offset &&
          other.last - other.first == run.last - run.first) {
        mirrored = true;
      }
    }
    if (!mirrored && run.last == last && run.offset > 0) {
      const int64_t a = run.first - run.offset, b = run.first - 1;
      for (int64_t s = a; s <= b; ++s) problems_.erase(s);
      AddProblem(a, "inserted",
                 std::to_string(run.offset) + " record(s) inserted at seq " + Range(a, b) +
                     " (the records after them were renumbered)");
    } else if (!mirrored && run.last == last && run.offset < 0) {
      AddProblem(run.first, "deleted",
                 std::to_string(-run.offset) + " record(s) deleted before seq " +
                     std::to_string(run.first) + " (the records after them were renumbered)");
    } else {
      for (int64_t s = run.first; s <= run.last; ++s) {
        AddProblem(s, "reordered",
                   "record " + std::to_string(s) + " was written as seq " +
                       std::to_string(s - run.offset));
      }
    }
  }

  for (const Tombstone& t : tombstones_) {
    bool covered = false;
    for (const Purge& p : purges_) {
      if (p.seq > t.seq && p.category == t.category && t.time_us < p.before_us) covered = true;
    }
    if (!covered) {
      AddProblem(t.seq, "modified",
                 "record " + std::to_string(t.seq) +
                     " was blanked without an audit.purged event covering it");
    }
  }

  for (auto& [seq, p] : problems_) report_.problems.push_back(std::move(p));
  problems_.clear();
  return std::move(report_);
}

}  // namespace torwart::audit
