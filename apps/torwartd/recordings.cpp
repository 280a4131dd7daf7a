#include "recordings.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "auth.hpp"
#include "torwart/core/ids.hpp"
#include "torwart/core/log.hpp"
#include "torwart/pki/x509.hpp"
#include "torwart/tunnel/recording.hpp"
#include "torwart/tunnel/wire.hpp"

namespace torwart::server {
namespace {

namespace fs = std::filesystem;
using http::Request;
using http::Response;
using nlohmann::json;

constexpr std::string_view kUploadPrefix = "/api/v1/recordings/";
constexpr auto kUploadWait = std::chrono::seconds(5);
constexpr size_t kMaxProblem = 512;

std::string Sha256Hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr) != 1) return "";
  return HexEncode(std::string_view(reinterpret_cast<const char*>(md), n));
}

Expected<void> WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return MakeError(Errc::kIo, std::string("writing recording: ") + std::strerror(errno));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

// Temp file (0600) + fsync + rename + fsync of the directory: the file is there completely or
// not at all, also after a crash.
Expected<void> StoreFile(const std::string& dir, const std::string& name, std::string_view data) {
  const std::string tmp = dir + "/." + name + "." + HexEncode(RandomBytes(6)) + ".tmp";
  const std::string final_path = dir + "/" + name;
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return MakeError(Errc::kIo, "creating " + tmp + ": " + std::strerror(errno));
  }
  auto w = WriteAll(fd, data);
  if (w && ::fsync(fd) != 0) {
    w = MakeError(Errc::kIo, std::string("syncing recording: ") + std::strerror(errno));
  }
  ::close(fd);
  if (w && ::rename(tmp.c_str(), final_path.c_str()) != 0) {
    w = MakeError(Errc::kIo, "renaming to " + final_path + ": " + std::strerror(errno));
  }
  if (!w) {
    ::unlink(tmp.c_str());
    return w;
  }
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return {};
}

std::string FileName(const std::string& stream) { return stream + ".rec"; }

json RecordingJson(Context& ctx, const storage::StoredRecording& r) {
  std::string device_name;
  if (auto d = ctx.store->devices().GetById(r.device_id)) device_name = d->name;
  json j{{"id", r.id},
         {"stream", r.id},
         {"device", device_name},
         {"device_id", r.device_id},
         {"user", r.user},
         {"grant", r.grant_id},
         {"site", r.site},
         {"target", r.target},
         {"protocol", r.protocol},
         {"size", r.size},
         {"sha256", r.sha256},
         {"uploaded", FormatRfc3339(r.uploaded)},
         {"status", r.status}};
  j["started"] = r.started ? json(FormatRfc3339(*r.started)) : json(nullptr);
  if (!r.problem.empty()) j["problem"] = r.problem;
  return j;
}

// The verdict on an upload: what ReadRecording and the header say, and the header's fields.
struct Verdict {
  std::string status;   // verified, incomplete, tampered_on_upload
  std::string problem;  // "" when verified
  std::string protocol;
  std::optional<TimePoint> started;
};

Verdict Verify(std::string_view body, X509* cert, const std::string& stream,
               const std::string& device_id) {
  Verdict v;
  auto rec = tunnel::ReadRecording(body, X509_get0_pubkey(cert));
  if (!rec) {
    v.status = "tampered_on_upload";
    v.problem = rec.error().message().substr(0, kMaxProblem);
    return v;
  }
  v.protocol = rec->meta.protocol.substr(0, 32);
  if (rec->meta.started_ms > 0) {
    v.started = TimePoint(std::chrono::duration_cast<TimePoint::duration>(
        std::chrono::milliseconds(rec->meta.started_ms)));
  }
  if (rec->meta.stream_id != stream) {
    v.status = "tampered_on_upload";
    v.problem = "the recording's header names stream '" + rec->meta.stream_id.substr(0, 64) +
                "', it was uploaded as " + stream;
  } else if (rec->meta.device_id != device_id) {
    v.status = "tampered_on_upload";
    v.problem = "the recording's header names device '" + rec->meta.device_id.substr(0, 64) +
                "', the uploading device is " + device_id;
  } else if (!rec->complete) {
    v.status = "incomplete";
    v.problem = "no trailer: the recording ends without the gateway's signature (cut off)";
  } else if (!rec->signature_ok) {
    v.status = "tampered_on_upload";
    v.problem = "the trailer's signature does not verify with the device's key";
  } else {
    v.status = "verified";
  }
  return v;
}

}  // namespace

RecordingService::RecordingService(Context& ctx, PkiService& pki, std::string dir,
                                   uint64_t max_upload)
    : ctx_(ctx), pki_(pki), dir_(std::move(dir)), max_upload_(max_upload) {}

Expected<void> RecordingService::Init() {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return MakeError(Errc::kIo, "creating " + dir_ + ": " + ec.message());
  if (::chmod(dir_.c_str(), 0700) != 0) {
    return MakeError(Errc::kIo, "chmod " + dir_ + ": " + std::strerror(errno));
  }
  return {};
}

size_t RecordingService::BodyLimitFor(const Request& head, size_t default_limit) const {
  // Only a peer with a client certificate (the TLS layer checked it chains to our CA) may send
  // a large body, and only to the upload path; the handler authenticates it fully.
  if (head.method == "PUT" && head.target.rfind(kUploadPrefix, 0) == 0 &&
      !head.client_cert_der.empty()) {
    return static_cast<size_t>(std::max<uint64_t>(max_upload_, default_limit));
  }
  return default_limit;
}

Response RecordingService::Upload(const Request& req) {
  // Fail closed: nothing is stored that the audit trail cannot record.
  if (auto ok = AuditAvailable(ctx_); !ok) return ErrorResponse(ok.error());
  const std::string stream = req.params.count("id") ? req.params.at("id") : "";
  auto refuse = [&](int status, const std::string& code, const std::string& why,
                    const std::string& device) {
    audit::Event e = MakeEvent(ctx_, req, "recording", "recording.upload_refused");
    if (!device.empty()) {
      e.actor_type = audit::ActorType::kDevice;
      e.actor = device;
    }
    e.target = tunnel::IsStreamId(stream) ? stream : stream.substr(0, 64);
    e.result = audit::Result::kDenied;
    e.reason = why;
    e.details = json{{"bytes", req.body.size()}}.dump();
    if (auto a = Audit(ctx_, e); !a) return ErrorResponse(a.error());
    log::warn("recording upload {} from {} refused: {}", e.target, req.peer, why);
    return Response::Error(status, code, why);
  };

  auto id = pki_.AuthenticateDevice(req.client_cert_der);
  if (!id) {
    const bool unauthenticated = id.error().Is(Errc::kUnauthenticated);
    return refuse(unauthenticated ? 401 : 403,
                  unauthenticated ? "unauthenticated" : "permission_denied",
                  "recording uploads need a valid device certificate: " + id.error().message(), "");
  }
  const std::string device = id->uuid;
  if (!tunnel::IsStreamId(stream)) {
    return refuse(400, "invalid_argument", "not a stream id (st- and 16 lowercase hex)", device);
  }
  if (req.body.size() > max_upload_) {
    return refuse(413, "payload_too_large",
                  "recording larger than " + std::to_string(max_upload_) + " bytes", device);
  }
  auto session = ctx_.store->tunnels().Get(stream);
  if (!session) {
    if (session.error().Is(Errc::kNotFound)) {
      return refuse(404, "not_found", "no tunnel session " + stream, device);
    }
    return ErrorResponse(session.error());
  }
  if (session->device_id != device) {
    return refuse(403, "permission_denied", "stream " + stream + " went through another gateway",
                  device);
  }
  auto cert = pki::CertFromDer(req.client_cert_der);
  if (!cert) return ErrorResponse(cert.error());
  const std::string sha = Sha256Hex(req.body);
  if (sha.empty()) return ErrorResponse(Error(Errc::kInternal, "SHA-256 failed"));
  // Verification reads the whole recording: done before taking the lock.
  Verdict v = Verify(req.body, cert->get(), stream, device);

  std::unique_lock lock(upload_mu_, std::defer_lock);
  if (!lock.try_lock_for(kUploadWait)) {
    Response r = Response::Error(503, "unavailable", "another recording is being stored; retry");
    r.headers["Retry-After"] = "10";
    return r;
  }
  auto existing = ctx_.store->recordings().Get(stream);
  if (existing) {
    if (existing->device_id == device && existing->sha256 == sha) {
      return Response::Json(200, RecordingJson(ctx_, *existing).dump());  // a retry: idempotent
    }
    audit::Event e = MakeEvent(ctx_, req, "recording", "recording.conflict");
    e.actor_type = audit::ActorType::kDevice;
    e.actor = device;
    e.target = stream;
    e.result = audit::Result::kFailure;
    e.reason = "a different recording of this stream is already stored";
    e.details = json{
        {"stored_sha256", existing->sha256},
        {"stored_size", existing->size},
        {"uploaded_sha256", sha},
        {"uploaded_size", req.body.size()},
        {"uploaded_status",
         v.status}}.dump();
    if (auto a = Audit(ctx_, e); !a) return ErrorResponse(a.error());
    log::warn("recording {}: device {} uploaded different bytes than stored", stream, device);
    return Response::Error(409, "conflict",
                           "a different recording of stream " + stream + " is already stored");
  }
  if (!existing.error().Is(Errc::kNotFound)) return ErrorResponse(existing.error());

  if (auto w = StoreFile(dir_, FileName(stream), req.body); !w) {
    return ErrorResponse(w.error().WithContext("storing recording " + stream));
  }
  storage::StoredRecording r;
  r.id = stream;
  r.device_id = device;
  r.user = session->user;
  r.grant_id = session->grant_id;
  r.site = session->site;
  r.target = session->target;
  r.protocol = v.protocol;
  r.size = static_cast<int64_t>(req.body.size());
  r.sha256 = sha;
  r.uploaded = ctx_.clock->Now();
  r.started = v.started;
  r.status = v.status;
  r.problem = v.problem;
  r.cert_serial = id->serial;
  if (auto ins = ctx_.store->recordings().Insert(r); !ins) {
    return ErrorResponse(ins.error().WithContext("indexing recording " + stream));
  }
  audit::Event e = MakeEvent(ctx_, req, "recording", "recording.stored");
  e.actor_type = audit::ActorType::kDevice;
  e.actor = device;
  e.target = stream;
  const bool tampered = v.status == "tampered_on_upload";
  e.result = tampered ? audit::Result::kFailure : audit::Result::kSuccess;
  if (tampered) e.reason = "tampered on upload: " + v.problem;
  e.details = json{{"status", v.status},  {"size", r.size},
                   {"sha256", sha},       {"user", r.user},
                   {"grant", r.grant_id}, {"site", r.site},
                   {"target", r.target},  {"certificate", r.cert_serial},
                   {"problem", v.problem}}
                  .dump(-1, ' ', false, json::error_handler_t::replace);
  if (auto a = Audit(ctx_, e); !a) {
    // Not recorded, so not stored: the gateway keeps its copy and uploads it again.
    (void)ctx_.store->recordings().Delete(stream);
    ::unlink((dir_ + "/" + FileName(stream)).c_str());
    return ErrorResponse(a.error());
  }
  if (tampered) {
    log::error("recording {} from device {} failed verification (stored, flagged): {}", stream,
               device, v.problem);
  } else {
    log::info("recording {} stored ({} bytes, {})", stream, r.size, v.status);
  }
  return Response::Json(201, RecordingJson(ctx_, r).dump());
}

void RecordingService::RegisterRoutes(http::Router& router) {
  router.Add("PUT", "/api/v1/recordings/{id}",  // id = the stream id
             [this](const Request& req) { return Upload(req); });

  router.Add("GET", "/api/v1/recordings",
             RequireRole(ctx_, {"admin", "auditor", "technician"},
                         [this](const Request& req, const Principal& who) {
                           int limit = 100;
                           if (auto it = req.query.find("limit"); it != req.query.end()) {
                             try {
                               limit = std::clamp(std::stoi(it->second), 1, 1000);
                             } catch (...) {
                               return Response::Error(400, "invalid_argument",
                                                      "limit must be a number");
                             }
                           }
                           // Technicians see the recordings of their own sessions only.
                           auto list = ctx_.store->recordings().List(
                               who.role == "technician" ? who.name : "", limit);
                           if (!list) return ErrorResponse(list.error());
                           json out = json::array();
                           for (auto& r : *list) out.push_back(RecordingJson(ctx_, r));
                           return Response::Json(200, json{{"recordings", out}}.dump());
                         }));

  router.Add(
      "GET", "/api/v1/recordings/{id}",
      RequireRole(
          ctx_, {"admin", "auditor", "technician"},
          [this](const Request& req, const Principal& who) {
            const std::string& id = req.params.at("id");
            auto r = ctx_.store->recordings().Get(id);
            // Another technician's recording is as absent as one that does not exist.
            if (!r || (who.role == "technician" && r->user != who.name)) {
              if (r || r.error().Is(Errc::kNotFound)) {
                return Response::Error(404, "not_found", "no recording " + id.substr(0, 64));
              }
              return ErrorResponse(r.error());
            }
            // Whatever is on disk now goes out, also if it changed since the upload: the
            // client verifies it (a file grown by more than this is refused as damaged).
            const uint64_t cap =
                2 * std::max<uint64_t>(max_upload_,
                                       static_cast<uint64_t>(std::max<int64_t>(r->size, 0)));
            auto bytes = pki::ReadFile(dir_ + "/" + FileName(r->id), static_cast<size_t>(cap));
            if (!bytes) {
              return ErrorResponse(
                  Error(Errc::kDataLoss, "the stored file of recording " + r->id +
                                             " cannot be read: " + bytes.error().message()));
            }
            auto cert = ctx_.store->certificates().GetBySerial(r->cert_serial);
            if (!cert) return ErrorResponse(cert.error().WithContext("device certificate"));
            audit::Event e = MakeUserEvent(ctx_, req, who, "recording", "recording.read");
            e.target = r->id;
            e.details =
                json{{"device", r->device_id}, {"user", r->user}, {"size", bytes->size()}}.dump();
            if (auto a = Audit(ctx_, e); !a) return ErrorResponse(a.error());
            Response resp;
            resp.content_type = "application/octet-stream";
            resp.headers["X-Torwart-Device-Cert"] = Base64Encode(cert->pem);
            resp.headers["X-Torwart-Recording-Status"] = r->status;
            resp.headers["X-Torwart-Recording-Sha256"] = r->sha256;
            resp.body = std::move(*bytes);
            return resp;
          }));
}

}  // namespace torwart::server
