// The audit trail of torwartd: group commit in front of the store (one writer thread), signed
// checkpoints every N events or T seconds, fail-closed health with recovery, capacity warning,
// retention with legal holds, and SIEM forwarding (AuditForwarder). Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "server_config.hpp"
#include "torwart/audit/chain.hpp"
#include "torwart/audit/group_commit.hpp"
#include "torwart/audit/verify.hpp"
#include "torwart/core/clock.hpp"
#include "torwart/storage/store.hpp"

namespace torwart::server {

class AuditForwarder;

// Loads <dir>/audit.key (creating it, 0600, with audit.pub next to it, at first start).
Expected<audit::CheckpointSigner> LoadOrCreateAuditKey(const std::string& dir);
// Verifies the whole stored chain. `known_head` > 0 also catches truncation after the last
// checkpoint (the running server knows what it committed).
Expected<audit::VerifyReport> VerifyStoredChain(storage::AuditStore& store,
                                                const audit::CheckpointVerifier* key,
                                                int64_t known_head);

// `torwartd audit verify`: opens <data_dir>/torwart.db, verifies against `public_key_file`
// (default <data_dir>/audit/audit.pub), prints the report. Exit code 0 intact, 1 tampered, 2 error.
int RunOfflineVerify(const std::string& data_dir, const std::string& public_key_file, bool json);

struct AuditHealth {
  bool writable = true;
  std::string error;  // last write error while not writable
  std::optional<TimePoint> failing_since;
  int64_t refused_events = 0;  // events not recorded during the current failure
  bool capacity_warning = false;
  int64_t used_bytes = 0, capacity_bytes = 0;
  int64_t head_seq = 0;
  // forwarding
  bool forwarding = false, forwarder_connected = false;
  int64_t forwarded_seq = 0;
  std::string forwarder_error;
};

class AuditService final : public audit::Sink {
 public:
  AuditService(storage::AuditStore& store, storage::KeyValueRepo& kv, const AuditConfig& cfg,
               audit::CheckpointSigner signer, Clock& clock);
  ~AuditService() override;
  // Starts the writer, maintenance and (if configured) forwarder threads.
  Expected<void> Start();
  // Drains the queue, signs a final checkpoint and joins the threads.
  void Stop();

  // Durable when it returns success; fails closed while the store cannot be written.
  Expected<void> Append(audit::Event e) override;
  Expected<void> Available() const;
  AuditHealth Health() const;

  Expected<audit::VerifyReport> Verify();
  Expected<audit::Checkpoint> CheckpointNow();
  // Purges every category with a retention rule; each purge writes audit.purged.
  Expected<std::vector<storage::AuditPurgeResult>> RunRetention();
  const audit::CheckpointSigner& signer() const { return signer_; }

 private:
  void OnCommitted(const std::vector<audit::Event>& events);
  void OnFailed(const Error& e, size_t n);
  void Maintain();
  void CheckCapacity();
  audit::Event SystemEvent(std::string type) const;

  storage::AuditStore& store_;
  storage::KeyValueRepo& kv_;
  AuditConfig cfg_;
  audit::CheckpointSigner signer_;
  Clock& clock_;
  std::unique_ptr<audit::GroupCommitSink> sink_;
  std::unique_ptr<AuditForwarder> forwarder_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false, started_ = false;
  AuditHealth health_;
  bool recovered_pending_ = false;
  int64_t since_checkpoint_ = 0;
  TimePoint last_checkpoint_{};
  int64_t last_checkpoint_seq_ = 0;
  std::mutex checkpoint_mu_;
  std::thread maintenance_;
};

}  // namespace torwart::server
