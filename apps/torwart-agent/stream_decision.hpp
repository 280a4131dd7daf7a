// The gateway's decisions about a stream (docs/design/agent-tunnels.md), pure so they test
// without a network:
//  - ParseStreamOpen: the control-channel command's arguments (untrusted: strict).
//  - DecideOpen: quarantine → allowlist (target, site) → consent → max_streams → recording
//    space, each refusal with its code (quarantined, not_allowed, consent, busy).
//  - RevocationList: a CRL (DER) verified against our CA chain; serials looked up in memory.
//  - CheckGrantCertificate: the technician's leaf from the inner TLS against the stream.open it
//    belongs to (not revoked, grant extension: grant id, user, site, target, not expired) and
//    the deadline = min(certificate notAfter, extension notAfter, stream.open deadline).
// Thread-safety: functions are stateless; a RevocationList is immutable after construction.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "gateway_state.hpp"
#include "site_config.hpp"
#include "torwart/core/clock.hpp"
#include "torwart/core/error.hpp"
#include "torwart/tunnel/endpoint.hpp"

namespace torwart::agent {

struct OpenRequest {
  std::string stream;  // "st-" + 16 lowercase hex
  std::string relay_host;
  uint16_t relay_port = 0;
  std::string relay_name;  // the name in the relay's certificate (default: relay_host)
  std::string grant, user, site, target;
  std::vector<std::string> scopes;
  bool consent_required = false;
  int64_t deadline = 0;  // Unix s
};

// Strict: required string fields, sizes bounded, stream id format, relay host:port, integer
// deadline in the future (`now`). Unknown fields are ignored (v:1 may grow). kInvalidArgument.
Expected<OpenRequest> ParseStreamOpen(const nlohmann::json& args, int64_t now);
bool IsStreamIdText(std::string_view s);  // "st-" + 16 lowercase hex

struct DecisionInput {
  const SiteConfig* site = nullptr;  // null: site.toml unreadable/invalid (site_error says why)
  std::string site_error;
  QuarantineState quarantine;
  ConsentState consent;
  size_t live_streams = 0;      // streams open or being opened
  bool recording_space = true;  // false: the quota is full of not-yet-uploaded recordings
};

struct Decision {
  bool ok = false;
  std::string code;            // quarantined | not_allowed | consent | busy
  std::string message;         // for the technician (goes back through the server)
  SiteTarget target;           // ok: the allowlisted target
  bool needs_consent = false;  // ok: consent was required (a later `consent off` ends it)
};

Decision DecideOpen(const OpenRequest& req, const DecisionInput& in);

class RevocationList {
 public:
  // Parses `der` and verifies its signature with the certificate in `ca_chain_pem` whose subject
  // is the CRL's issuer. kParse / kPermissionDenied on failure.
  static Expected<RevocationList> FromDer(std::string_view der, std::string_view ca_chain_pem);
  bool Revoked(const std::string& serial_hex) const { return revoked_.contains(serial_hex); }
  size_t size() const { return revoked_.size(); }
  TimePoint this_update() const { return this_update_; }
  TimePoint next_update() const { return next_update_; }
  int64_t number() const { return number_; }

 private:
  std::set<std::string> revoked_;
  TimePoint this_update_{}, next_update_{};
  int64_t number_ = -1;
};

// `crl` null: no revocation list is available at all → refused (fail closed).
Expected<tunnel::GrantCheck> CheckGrantCertificate(std::string_view leaf_der,
                                                   const OpenRequest& req,
                                                   const RevocationList* crl, TimePoint now);

}  // namespace torwart::agent
