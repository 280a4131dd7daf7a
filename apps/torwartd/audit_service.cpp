#include "audit_service.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "audit_forwarder.hpp"
#include "torwart/core/log.hpp"

namespace torwart::server {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

int64_t Micros(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

Expected<void> WriteFile(const std::string& path, const std::string& data, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, mode);
  if (fd < 0) return MakeError(Errc::kIo, "creating " + path + ": " + std::strerror(errno));
  bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  ok = ::fsync(fd) == 0 && ok;
  ::close(fd);
  if (!ok) return MakeError(Errc::kIo, "writing " + path);
  return {};
}

}  // namespace

Expected<audit::CheckpointSigner> LoadOrCreateAuditKey(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return MakeError(Errc::kIo, "creating " + dir + ": " + ec.message());
  ::chmod(dir.c_str(), 0700);
  const std::string key_path = dir + "/audit.key", pub_path = dir + "/audit.pub";
  if (!fs::exists(key_path)) {
    auto pem = audit::CheckpointSigner::GeneratePrivateKeyPem();
    if (!pem) return MakeError(pem.error());
    if (auto ok = WriteFile(key_path, *pem, 0600); !ok) return MakeError(ok.error());
  }
  std::ifstream f(key_path);
  std::stringstream ss;
  ss << f.rdbuf();
  auto signer = audit::CheckpointSigner::FromPrivateKeyPem(ss.str());
  if (!signer) return MakeError(signer.error().WithContext(key_path));
  if (!fs::exists(pub_path)) {
    if (auto ok = WriteFile(pub_path, signer->public_key_pem(), 0644); !ok) {
      return MakeError(ok.error());
    }
  }
  return signer;
}

Expected<audit::VerifyReport> VerifyStoredChain(storage::AuditStore& store,
                                                const audit::CheckpointVerifier* key,
                                                int64_t known_head) {
  auto cps = store.Checkpoints();
  if (!cps) return MakeError(cps.error());
  audit::ChainVerifier v(key, std::move(*cps), known_head);
  int64_t after = 0;
  while (true) {
    auto page = store.ReadRecords(after, 2000);
    if (!page) return MakeError(page.error());
    if (page->empty()) break;
    for (const audit::Record& r : *page) v.Add(r);
    after = page->back().event.seq;
  }
  return v.Finish();
}

int RunOfflineVerify(const std::string& data_dir, const std::string& public_key_file,
                     bool as_json) {
  const std::string db = data_dir + "/torwart.db";
  if (!fs::exists(db)) {
    std::cerr << "torwartd: no database at " << db << "\n";
    return 2;
  }
  const std::string key_path =
      public_key_file.empty() ? data_dir + "/audit/audit.pub" : public_key_file;
  std::ifstream f(key_path);
  if (!f) {
    std::cerr << "torwartd: cannot read the audit public key " << key_path << "\n";
    return 2;
  }
  std::stringstream ss;
  ss << f.rdbuf();
  auto key = audit::CheckpointVerifier::FromPublicKeyPem(ss.str());
  if (!key) {
    std::cerr << "torwartd: " << key.error().WithContext(key_path).message() << "\n";
    return 2;
  }
  auto store = storage::OpenSqlite({.path = db});
  if (!store) {
    std::cerr << "torwartd: " << store.error().message() << "\n";
    return 2;
  }
  auto report = VerifyStoredChain((*store)->audit(), &*key, 0);
  if (!report) {
    std::cerr << "torwartd: " << report.error().WithContext("verifying").message() << "\n";
    return 2;
  }
  if (as_json) {
    std::cout << audit::ToJson(*report) << "\n";
  } else {
    std::cout << (report->ok() ? "audit chain intact" : "AUDIT CHAIN DAMAGED") << ": "
              << report->records << " records (seq " << report->first_seq << ".."
              << report->last_seq << "), " << report->purged << " purged by retention, "
              << report->checkpoints << " signed checkpoints, anchored through seq "
              << report->anchored_through << "\n";
    for (const audit::Problem& p : report->problems) {
      std::cout << "  seq " << p.seq << ": " << p.kind << ": " << p.message << "\n";
    }
  }
  return report->ok() ? 0 : 1;
}

AuditService::AuditService(storage::AuditStore& store, storage::KeyValueRepo& kv,
                           const AuditConfig& cfg, audit::CheckpointSigner signer, Clock& clock)
    : store_(store), kv_(kv), cfg_(cfg), signer_(std::move(signer)), clock_(clock) {
  health_.capacity_bytes = cfg_.capacity_bytes;
}

AuditService::~AuditService() { Stop(); }

Expected<void> AuditService::Start() {
  // Make sure the key that signs our checkpoints is the one whose public half sits in the data
  // directory: an auditor verifies against that file (or a copy they keep).
  auto head = store_.Head();
  if (!head) return MakeError(head.error().WithContext("reading the audit chain"));
  health_.head_seq = head->first;
  last_checkpoint_ = clock_.Now();
  if (cfg_.capacity_bytes > 0) {
    if (auto ok = store_.SetMaxBytes(cfg_.capacity_bytes); !ok) return ok;
  }
  audit::GroupCommitSettings gs;
  gs.on_committed = [this](const std::vector<audit::Event>& ev) { OnCommitted(ev); };
  gs.on_failed = [this](const Error& e, size_t n) { OnFailed(e, n); };
  sink_ = std::make_unique<audit::GroupCommitSink>(store_, std::move(gs));
  if (!cfg_.syslog.address.empty()) {
    forwarder_ = std::make_unique<AuditForwarder>(store_, kv_, cfg_.syslog);
    forwarder_->Start();
  }
  {
    std::lock_guard lock(mu_);
    started_ = true;
  }
  maintenance_ = std::thread([this] { Maintain(); });
  return {};
}

void AuditService::Stop() {
  {
    std::lock_guard lock(mu_);
    if (!started_ || stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (maintenance_.joinable()) maintenance_.join();
  if (sink_) sink_->Stop();
  (void)CheckpointNow();
  if (forwarder_) forwarder_->Stop();
}

Expected<void> AuditService::Append(audit::Event e) {
  if (!sink_) return store_.Append(std::move(e));
  return sink_->Append(std::move(e));
}

Expected<void> AuditService::Available() const {
  std::lock_guard lock(mu_);
  if (health_.writable) return {};
  return MakeError(Errc::kUnavailable,
                   "the audit trail cannot be written (" + health_.error +
                       "); security-relevant actions are refused until it recovers");
}

AuditHealth AuditService::Health() const {
  AuditHealth h;
  {
    std::lock_guard lock(mu_);
    h = health_;
  }
  if (forwarder_) {
    auto s = forwarder_->status();
    h.forwarding = true;
    h.forwarder_connected = s.connected;
    h.forwarded_seq = s.cursor;
    h.forwarder_error = s.error;
  }
  return h;
}

void AuditService::OnCommitted(const std::vector<audit::Event>& events) {
  bool checkpoint_due = false;
  {
    std::lock_guard lock(mu_);
    if (!health_.writable) {
      health_.writable = true;
      recovered_pending_ = true;
    }
    health_.head_seq = events.back().seq;
    since_checkpoint_ += static_cast<int64_t>(events.size());
    checkpoint_due = since_checkpoint_ >= cfg_.checkpoint_every || recovered_pending_;
  }
  if (checkpoint_due) cv_.notify_all();
  if (forwarder_) forwarder_->Wake();
}

void AuditService::OnFailed(const Error& e, size_t n) {
  std::lock_guard lock(mu_);
  if (health_.writable) {
    health_.failing_since = clock_.Now();
    health_.refused_events = 0;
    log::error("AUDIT FAILURE: the audit store cannot be written: {}. Security-relevant actions "
               "are refused until it recovers.",
               e.message());
  }
  health_.writable = false;
  health_.error = e.message();
  health_.refused_events += static_cast<int64_t>(n);
}

audit::Event AuditService::SystemEvent(std::string type) const {
  audit::Event e;
  e.time = clock_.Now();
  e.actor_type = audit::ActorType::kSystem;
  e.actor = "torwartd";
  e.source = "local";
  e.category = "audit";
  e.type = std::move(type);
  e.details = "{}";
  return e;
}

Expected<audit::Checkpoint> AuditService::CheckpointNow() {
  std::lock_guard cp_lock(checkpoint_mu_);
  auto head = store_.Head();
  if (!head) return MakeError(head.error());
  if (head->first == 0) return MakeError(Errc::kFailedPrecondition, "the audit log is empty");
  auto cp = signer_.Sign(head->first, head->second, clock_.Now());
  if (!cp) return MakeError(cp.error());
  {
    std::lock_guard lock(mu_);
    if (head->first == last_checkpoint_seq_) {
      last_checkpoint_ = clock_.Now();
      return *cp;  // nothing new since the last one
    }
  }
  if (auto ok = store_.AddCheckpoint(*cp); !ok) return MakeError(ok.error());
  std::lock_guard lock(mu_);
  last_checkpoint_seq_ = head->first;
  last_checkpoint_ = clock_.Now();
  since_checkpoint_ = 0;
  return *cp;
}

Expected<audit::VerifyReport> AuditService::Verify() {
  auto verifier = audit::CheckpointVerifier::FromPublicKeyPem(signer_.public_key_pem());
  if (!verifier) return MakeError(verifier.error());
  int64_t head = 0;
  {
    std::lock_guard lock(mu_);
    head = health_.head_seq;
  }
  return VerifyStoredChain(store_, &*verifier, head);
}

Expected<std::vector<storage::AuditPurgeResult>> AuditService::RunRetention() {
  std::vector<storage::AuditPurgeResult> out;
  for (const auto& [category, keep] : cfg_.retention) {
    const TimePoint before = clock_.Now() - keep;
    // Refuse up front when the store is failing: a purge whose event cannot be written would
    // leave blanked records that verification reports as tampering.
    if (auto ok = Available(); !ok) return MakeError(ok.error());
    auto r = store_.Purge(category, before);
    if (!r) return MakeError(r.error().WithContext("retention of " + category));
    out.push_back(*r);
    if (r->count == 0 && r->held == 0) continue;
    audit::Event e = SystemEvent("audit.purged");
    e.target = category;
    e.reason = "retention";
    e.details = json{{"category", category},
                     {"before_us", Micros(before)},
                     {"before", FormatRfc3339(before)},
                     {"count", r->count},
                     {"first_seq", r->first_seq},
                     {"last_seq", r->last_seq},
                     {"held", r->held}}
                    .dump();
    if (auto ok = Append(std::move(e)); !ok) return MakeError(ok.error());
    log::info("audit retention: purged {} {} record(s) older than {} ({} held)", r->count,
              category, FormatRfc3339(before), r->held);
  }
  return out;
}

void AuditService::CheckCapacity() {
  auto used = store_.UsedBytes();
  if (!used) return;
  bool warn = false;
  {
    std::lock_guard lock(mu_);
    health_.used_bytes = *used;
    if (cfg_.capacity_bytes <= 0) return;
    if (!health_.capacity_warning && *used * 10 >= cfg_.capacity_bytes * 8) {
      health_.capacity_warning = true;
      warn = true;
    } else if (health_.capacity_warning && *used * 4 < cfg_.capacity_bytes * 3) {
      health_.capacity_warning = false;  // hysteresis: warn again after dropping below 75 %
    }
  }
  if (!warn) return;
  log::warn("audit capacity: {} of {} bytes used (>= 80 %)", *used, cfg_.capacity_bytes);
  audit::Event e = SystemEvent("audit.capacity_warning");
  e.result = audit::Result::kFailure;
  e.reason = "audit storage is at least 80 % full";
  e.details = json{{"used_bytes", *used},
                   {"capacity_bytes", cfg_.capacity_bytes},
                   {"percent", *used * 100 / cfg_.capacity_bytes}}
                  .dump();
  (void)Append(std::move(e));
}

void AuditService::Maintain() {
  TimePoint last_retention{}, last_capacity{};
  std::unique_lock lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, std::chrono::milliseconds(500));
    if (stopping_) break;
    const TimePoint now = clock_.Now();
    const bool writable = health_.writable;
    const bool recovered = std::exchange(recovered_pending_, false);
    const bool checkpoint_due =
        since_checkpoint_ >= cfg_.checkpoint_every ||
        (since_checkpoint_ > 0 && now - last_checkpoint_ >= cfg_.checkpoint_interval);
    const std::optional<TimePoint> failing_since = health_.failing_since;
    const int64_t refused = health_.refused_events;
    const std::string error = health_.error;
    lock.unlock();

    if (!writable) {
      // Probe: the first event that gets through is the recovery record itself.
      audit::Event e = SystemEvent("audit.recovered");
      e.reason = "the audit store is writable again";
      e.details = json{{"failing_since", failing_since ? FormatRfc3339(*failing_since) : ""},
                       {"refused_events", refused},
                       {"error", error}}
                      .dump();
      if (Append(std::move(e))) {
        log::warn("audit store recovered; {} event(s) were refused while it failed", refused);
        lock.lock();
        recovered_pending_ = false;
        health_.failing_since.reset();
        lock.unlock();
      }
    } else if (recovered) {
      audit::Event e = SystemEvent("audit.recovered");
      e.reason = "the audit store is writable again";
      e.details = json{{"failing_since", failing_since ? FormatRfc3339(*failing_since) : ""},
                       {"refused_events", refused},
                       {"error", error}}
                      .dump();
      (void)Append(std::move(e));
      log::warn("audit store recovered; {} event(s) were refused while it failed", refused);
      lock.lock();
      health_.failing_since.reset();
      lock.unlock();
    }
    if (checkpoint_due) {
      if (auto cp = CheckpointNow(); !cp && !cp.error().Is(Errc::kFailedPrecondition)) {
        log::error("audit checkpoint: {}", cp.error().message());
      }
    }
    if (now - last_capacity >= std::chrono::seconds(2)) {
      last_capacity = now;
      CheckCapacity();
    }
    if (!cfg_.retention.empty() && now - last_retention >= cfg_.retention_interval) {
      last_retention = now;
      if (auto r = RunRetention(); !r) log::error("audit retention: {}", r.error().message());
    }
    lock.lock();
  }
}

}  // namespace torwart::server
