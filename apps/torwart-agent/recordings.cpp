#include "recordings.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>

#include "stream_decision.hpp"
#include "torwart/core/log.hpp"
#include "torwart/http/client.hpp"
#include "torwart/net/backoff.hpp"
#include "torwart/pki/x509.hpp"

namespace torwart::agent {
namespace fs = std::filesystem;

std::string RecordingPath(const std::string& dir, const std::string& stream) {
  return dir + "/" + stream + ".rec";
}

std::vector<RecordingFile> ScanRecordings(const std::string& dir,
                                          const std::set<std::string>& live) {
  std::vector<RecordingFile> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (name.size() <= 4 || name.compare(name.size() - 4, 4, ".rec") != 0) continue;
    std::string stream = name.substr(0, name.size() - 4);
    if (!IsStreamIdText(stream)) continue;  // only files we wrote
    struct stat st {};
    if (::lstat(e.path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    RecordingFile f;
    f.stream = stream;
    f.size = static_cast<uint64_t>(st.st_size);
    f.mtime = static_cast<int64_t>(st.st_mtime);
    f.uploaded = fs::exists(e.path().string() + ".uploaded", ec);
    f.live = live.contains(stream);
    out.push_back(std::move(f));
  }
  std::sort(out.begin(), out.end(), [](const RecordingFile& a, const RecordingFile& b) {
    return a.mtime != b.mtime ? a.mtime < b.mtime : a.stream < b.stream;
  });
  return out;
}

EvictionPlan PlanEviction(const std::vector<RecordingFile>& files, uint64_t quota,
                          uint64_t reserve) {
  EvictionPlan p;
  for (const auto& f : files) {
    p.used += f.size;
    if (!f.uploaded || f.live) p.pending += f.size;
  }
  std::vector<const RecordingFile*> order;
  for (const auto& f : files) order.push_back(&f);
  std::stable_sort(order.begin(), order.end(), [](const RecordingFile* a, const RecordingFile* b) {
    return a->mtime < b->mtime;
  });
  for (const RecordingFile* f : order) {
    if (p.used + reserve <= quota) break;
    if (!f->uploaded || f->live) continue;
    p.remove.push_back(f->stream);
    p.used -= f->size;
  }
  p.full = p.used + reserve > quota;
  return p;
}

size_t ApplyEviction(const std::string& dir, const EvictionPlan& plan) {
  size_t n = 0;
  for (const auto& s : plan.remove) {
    std::error_code ec;
    std::string path = RecordingPath(dir, s);
    if (fs::remove(path, ec)) {
      ++n;
      log::info("recording {} evicted (uploaded; quota)", s);
    }
    fs::remove(path + ".uploaded", ec);
  }
  return n;
}

Expected<void> MarkUploaded(const std::string& dir, const std::string& stream) {
  return pki::WriteFileAtomic(RecordingPath(dir, stream) + ".uploaded", "", fs::perms(0600));
}

RecordingUploader::RecordingUploader(UploaderSettings s) : s_(std::move(s)) {}

RecordingUploader::~RecordingUploader() { Stop(); }

void RecordingUploader::Start() {
  std::lock_guard lock(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Loop(); });
}

void RecordingUploader::Wake() {
  std::lock_guard lock(mu_);
  wake_ = true;
  cv_.notify_all();
}

void RecordingUploader::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

nlohmann::json RecordingUploader::Status() const {
  std::lock_guard lock(mu_);
  nlohmann::json j{{"uploaded", uploaded_}, {"failed_attempts", failed_}, {"pending", pending_}};
  if (!last_error_.empty()) j["last_error"] = last_error_;
  return j;
}

Expected<void> RecordingUploader::UploadOne(const RecordingFile& f) {
  if (f.size > s_.max_upload_bytes) {
    return MakeError(Errc::kResourceExhausted, "recording " + f.stream + " is larger than " +
                                                   std::to_string(s_.max_upload_bytes) + " bytes");
  }
  auto body = pki::ReadFile(RecordingPath(s_.dir, f.stream), s_.max_upload_bytes);
  if (!body) return MakeError(body.error());
  auto chain = pki::ReadFile(s_.device_cert_file);
  if (!chain) return MakeError(chain.error());
  auto key = s_.key();
  if (!key) return MakeError(key.error());
  http::ClientSettings cs;
  cs.base_url = s_.server;
  cs.ca_file = s_.ca_file;
  cs.client_key = key->get();
  cs.client_cert_chain_pem = *chain;
  cs.timeout = std::chrono::seconds(120);
  http::Client c(cs);
  auto r = c.Send("PUT", "/api/v1/recordings/" + f.stream,
                  {{"content-type", "application/octet-stream"}}, *body);
  if (!r) return MakeError(r.error());
  if ((r->status >= 200 && r->status < 300) || r->status == 409) return {};
  std::string text = r->body.size() < 300 ? r->body : r->body.substr(0, 300);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return MakeError(Errc::kUnavailable, "PUT /api/v1/recordings/" + f.stream + ": HTTP " +
                                           std::to_string(r->status) +
                                           (text.empty() ? "" : ": " + text));
}

void RecordingUploader::Loop() {
  net::Backoff backoff(s_.backoff_base, s_.backoff_cap);
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (stop_) return;
      wake_ = false;
    }
    auto files = ScanRecordings(s_.dir, s_.live ? s_.live() : std::set<std::string>{});
    std::vector<RecordingFile> todo;
    for (auto& f : files) {
      if (!f.uploaded && !f.live) todo.push_back(f);
    }
    {
      std::lock_guard lock(mu_);
      pending_ = todo.size();
    }
    std::chrono::milliseconds wait = s_.poll;
    bool backing_off = false;
    for (const auto& f : todo) {
      {
        std::lock_guard lock(mu_);
        if (stop_) return;
      }
      auto r = UploadOne(f);
      if (r) r = MarkUploaded(s_.dir, f.stream);
      std::lock_guard lock(mu_);
      if (r) {
        ++uploaded_;
        if (pending_ > 0) --pending_;
        last_error_.clear();
        backoff.Reset();
        log::info("recording {} uploaded ({} bytes)", f.stream, f.size);
      } else {
        ++failed_;
        last_error_ = r.error().message();
        wait = backoff.Next();
        backing_off = true;
        log::warn("uploading recording {}: {}; retrying in {} ms", f.stream, last_error_,
                  wait.count());
        break;
      }
    }
    std::unique_lock lock(mu_);
    // A finished recording wakes the uploader, but never cuts a backoff short: a server that
    // refuses uploads is not hammered by every stream that ends.
    cv_.wait_for(lock, wait, [&] { return stop_ || (wake_ && !backing_off); });
  }
}

}  // namespace torwart::agent
