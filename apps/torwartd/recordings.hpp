// Stream recordings on the server (docs/design/recording.md, "Storage on the server"): gateways
// upload them with their device certificate (PUT /api/v1/recordings/{id}, id = the stream id);
// torwartd checks the upload against the tunnel session, verifies it with the device's public
// key, keeps the bytes in <data>/recordings/<stream>.rec (also when verification fails: evidence
// is never dropped) and indexes them in RecordingRepo; users list and download them.
// Thread-safe: handlers run on the HTTP worker pool; uploads are written one at a time.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>

#include "context.hpp"
#include "pki_service.hpp"
#include "torwart/http/server.hpp"

namespace torwart::server {

class RecordingService {
 public:
  // `dir`: where the files go (created 0700 by Init). `max_upload`: largest accepted body.
  RecordingService(Context& ctx, PkiService& pki, std::string dir, uint64_t max_upload);

  Expected<void> Init();
  // PUT /api/v1/recordings/{id}, GET /api/v1/recordings, GET /api/v1/recordings/{id}.
  void RegisterRoutes(http::Router& router);
  // For http::ServerSettings::body_limit_for: max_upload for an upload from a peer that
  // presented a client certificate, `default_limit` for everything else.
  size_t BodyLimitFor(const http::Request& head, size_t default_limit) const;

  // The upload handler (device-authenticated), public for unit tests.
  http::Response Upload(const http::Request& req);

 private:
  Context& ctx_;
  PkiService& pki_;
  std::string dir_;
  uint64_t max_upload_;
  std::timed_mutex upload_mu_;  // one upload writes at a time (idempotency check + file + row)
};

}  // namespace torwart::server
