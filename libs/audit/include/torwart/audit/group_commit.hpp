// Group commit: many threads call Append; one writer thread takes everything queued and hands it
// to a BatchAppender as one batch (one transaction, one fsync). Each Append returns only when
// its batch is durable, or with the batch's error. Thread-safe; Stop() before destruction of the
// appender.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "torwart/audit/event.hpp"

namespace torwart::audit {

class BatchAppender {
 public:
  virtual ~BatchAppender() = default;
  // Appends all events atomically (all or none are durable on return), assigning seq and hash.
  virtual Expected<void> AppendBatch(std::vector<Event>& events) = 0;
};

struct GroupCommitSettings {
  size_t max_batch = 1024;
  // Called on the writer thread after each batch, with the committed events (seq and hash set)
  // or the error. Must not call Append (it would wait for itself).
  std::function<void(const std::vector<Event>&)> on_committed;
  std::function<void(const Error&, size_t events)> on_failed;
};

class GroupCommitSink final : public Sink {
 public:
  GroupCommitSink(BatchAppender& appender, GroupCommitSettings settings);
  ~GroupCommitSink() override;
  GroupCommitSink(const GroupCommitSink&) = delete;
  GroupCommitSink& operator=(const GroupCommitSink&) = delete;

  Expected<void> Append(Event e) override;
  // Writes what is queued, then stops the writer; later Appends fail with kUnavailable.
  void Stop();

  struct Stats {
    int64_t batches = 0, events = 0, failed_batches = 0;
    size_t largest_batch = 0;
    size_t queued = 0;  // waiting for the next batch now
  };
  Stats stats() const;

 private:
  struct Pending {
    Event event;
    Expected<void>* result;
    bool* done;
  };
  void Run();

  BatchAppender& appender_;
  GroupCommitSettings settings_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<Pending> queue_;
  bool stopping_ = false;
  Stats stats_;
  std::thread writer_;
};

}  // namespace torwart::audit
