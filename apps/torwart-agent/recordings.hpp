// Recordings on the gateway (docs/design/agent-tunnels.md): <state-dir>/recordings/<stream>.rec,
// a sidecar <stream>.rec.uploaded once torwartd has it. The quota is enforced by deleting the
// oldest UPLOADED recordings only; when not-yet-uploaded recordings alone fill it, new streams
// are refused (busy) — an auditable gateway never carries a stream it cannot record.
// PlanEviction is pure; Scan/Apply touch only that directory. RecordingUploader runs one
// background thread (thread-safe Wake/Stop/Status).
#pragma once

#include <openssl/evp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "torwart/core/error.hpp"
#include "torwart/pki/x509.hpp"

namespace torwart::agent {

struct RecordingFile {
  std::string stream;  // file name without ".rec"
  uint64_t size = 0;   // bytes on disk
  int64_t mtime = 0;   // Unix s (age order)
  bool uploaded = false;
  bool live = false;  // its stream is still being recorded
};

// All *.rec in `dir` (oldest first). `live`: stream ids still recording.
std::vector<RecordingFile> ScanRecordings(const std::string& dir,
                                          const std::set<std::string>& live);

struct EvictionPlan {
  std::vector<std::string> remove;  // streams whose uploaded recordings go, oldest first
  uint64_t used = 0;                // bytes after removing them
  uint64_t pending = 0;             // bytes not yet uploaded (incl. live)
  bool full = false;                // used + reserve > quota even after evicting
};
// Frees space for `reserve` more bytes: removes uploaded, finished recordings, oldest first,
// until used + reserve <= quota. Never removes one that is not uploaded or still live.
EvictionPlan PlanEviction(const std::vector<RecordingFile>& files, uint64_t quota,
                          uint64_t reserve);
// Deletes the planned files (and their sidecars). Returns how many were removed.
size_t ApplyEviction(const std::string& dir, const EvictionPlan& plan);

std::string RecordingPath(const std::string& dir, const std::string& stream);
Expected<void> MarkUploaded(const std::string& dir, const std::string& stream);

struct UploaderSettings {
  std::string dir;     // <state-dir>/recordings
  std::string server;  // torwartd base URL
  std::string ca_file;
  std::string device_cert_file;  // device.pem (leaf + chain), re-read for every upload
  std::function<Expected<pki::EvpPkeyPtr>()> key;  // the device key (a new reference)
  std::function<std::set<std::string>()> live;     // streams still recording
  std::chrono::milliseconds backoff_base{2000};
  std::chrono::milliseconds backoff_cap{300000};
  std::chrono::seconds poll{30};
  uint64_t max_upload_bytes = uint64_t{1} << 30;
};

// PUT <server>/api/v1/recordings/<stream> with the device client certificate; 2xx or 409
// (already there) marks it uploaded. Failures back off (full jitter) and are retried forever.
class RecordingUploader {
 public:
  explicit RecordingUploader(UploaderSettings s);
  ~RecordingUploader();  // Stop()
  void Start();
  void Wake();  // a recording finished: try now
  void Stop();
  nlohmann::json Status() const;  // {"uploaded":n,"failed":n,"last_error":"…","pending":n}

 private:
  void Loop();
  Expected<void> UploadOne(const RecordingFile& f);

  UploaderSettings s_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false, wake_ = false;
  uint64_t uploaded_ = 0, failed_ = 0;
  size_t pending_ = 0;
  std::string last_error_;
  std::thread thread_;
};

}  // namespace torwart::agent
