#include "torwart/audit/group_commit.hpp"

#include <utility>

namespace torwart::audit {

GroupCommitSink::GroupCommitSink(BatchAppender& appender, GroupCommitSettings settings)
    : appender_(appender), settings_(std::move(settings)) {
  if (settings_.max_batch == 0) settings_.max_batch = 1;
  writer_ = std::thread([this] { Run(); });
}

GroupCommitSink::~GroupCommitSink() { Stop(); }

void GroupCommitSink::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
}

Expected<void> GroupCommitSink::Append(Event e) {
  Expected<void> result;
  bool done = false;
  std::unique_lock lock(mu_);
  if (stopping_) return MakeError(Errc::kUnavailable, "audit writer is stopped");
  queue_.push_back(Pending{std::move(e), &result, &done});
  if (queue_.size() == 1) work_cv_.notify_one();
  done_cv_.wait(lock, [&] { return done; });
  return result;
}

GroupCommitSink::Stats GroupCommitSink::stats() const {
  std::lock_guard lock(mu_);
  Stats s = stats_;
  s.queued = queue_.size();
  return s;
}

void GroupCommitSink::Run() {
  std::vector<Event> events;
  std::vector<Pending> batch;
  std::unique_lock lock(mu_);
  while (true) {
    work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping and drained
    batch.clear();
    while (!queue_.empty() && batch.size() < settings_.max_batch) {
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    lock.unlock();

    // While this batch is written, new Appends queue up and form the next batch.
    events.clear();
    events.reserve(batch.size());
    for (Pending& p : batch) events.push_back(std::move(p.event));
    Expected<void> r = appender_.AppendBatch(events);
    if (r) {
      if (settings_.on_committed) settings_.on_committed(events);
    } else if (settings_.on_failed) {
      settings_.on_failed(r.error(), events.size());
    }

    lock.lock();
    ++stats_.batches;
    stats_.events += static_cast<int64_t>(batch.size());
    if (!r) ++stats_.failed_batches;
    if (batch.size() > stats_.largest_batch) stats_.largest_batch = batch.size();
    for (Pending& p : batch) {
      *p.result = r;
      *p.done = true;
    }
    done_cv_.notify_all();
  }
}

}  // namespace torwart::audit
