// The torwart certificate authority: an offline-capable root, an issuing CA that signs device,
// server and CMP-protection certificates, CRLs, and verification of device certificates.
// Thread-safe after OpenOrCreate: issuing and verifying are const; EnsureServerCertificate
// serialises file updates with an internal mutex. See docs/design/pki.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "torwart/core/clock.hpp"
#include "torwart/core/error.hpp"
#include "torwart/pki/grant_extension.hpp"
#include "torwart/pki/x509.hpp"

namespace torwart::pki {

using namespace std::chrono_literals;

struct CaSettings {
  std::filesystem::path dir;             // created 0700; holds *.pem and *.key (0600)
  std::string organisation = "torwart";  // O= of the CA subjects
  std::chrono::seconds device_lifetime = std::chrono::days(30);
  std::chrono::seconds root_lifetime = std::chrono::days(365 * 20);
  std::chrono::seconds issuing_lifetime = std::chrono::days(365 * 5);
  std::chrono::seconds server_lifetime = std::chrono::days(90);
  std::chrono::seconds cmp_lifetime = std::chrono::days(365);
  std::chrono::seconds renew_before = std::chrono::days(30);  // server/CMP cert renewal margin
};

// Who a valid device certificate says it is. Revocation status is not checked here.
struct DeviceIdentity {
  std::string uuid;
  std::string serial;  // lowercase hex, as SerialHex
  TimePoint not_after;
  std::string fingerprint;  // machine fingerprint extension, "" if absent
};

// RFC 5280 CRLReason codes used by the platform.
inline constexpr int kReasonUnspecified = 0;
inline constexpr int kReasonKeyCompromise = 1;
inline constexpr int kReasonSuperseded = 4;
inline constexpr int kReasonCessationOfOperation = 5;

struct RevokedEntry {
  std::string serial_hex;
  TimePoint revoked_at;
  int reason = kReasonUnspecified;  // CRLReason; 0 means "no reason code"
};

struct ServerCertificateFiles {
  std::filesystem::path cert_chain;  // server.pem: leaf + issuing CA
  std::filesystem::path key;         // server.key (0600)
  bool renewed = false;
};

inline constexpr char kDeviceUriPrefix[] = "urn:torwart:device:";
inline constexpr char kCmcRaOid[] = "1.3.6.1.5.5.7.3.28";

class CertificateAuthority {
 public:
  // Loads the CA from settings.dir, creating root and issuing CA on first start. The root key
  // may be absent (kept offline) when the issuing CA exists. Also ensures the CMP certificate.
  static Expected<std::unique_ptr<CertificateAuthority>> OpenOrCreate(const CaSettings& settings,
                                                                      Clock& clock);

  // A device certificate for `pub` (only the public half is used): CN = uuid, SAN URI
  // urn:torwart:device:<uuid>, EKU clientAuth, KU digitalSignature, random 128-bit serial.
  // lifetime <= 0 means settings.device_lifetime.
  Expected<X509Ptr> IssueDeviceCertificate(EVP_PKEY* pub, const std::string& device_uuid,
                                           std::chrono::seconds lifetime,
                                           const std::string& machine_fingerprint) const;

  // A grant certificate (docs/design/grant-certificate.md): CN = user, SAN URI
  // urn:torwart:grant:<id>, EKU clientAuth, the grant extension, not-after = claims.not_after
  // (never beyond the issuing CA). kFailedPrecondition if not_after is not in the future.
  Expected<X509Ptr> IssueGrantCertificate(EVP_PKEY* pub, const GrantClaims& claims) const;

  // server.pem/server.key for the HTTPS listener; `names` are DNS names or IP literals.
  // Reissued when missing, not from the current issuing CA, < renew_before left or names changed.
  Expected<ServerCertificateFiles> EnsureServerCertificate(const std::vector<std::string>& names);

  // DER CRL v2 signed by the issuing CA, with CRL number, AKI and nextUpdate = now + validity.
  Expected<std::string> MakeCrlDer(const std::vector<RevokedEntry>& revoked, int64_t crl_number,
                                   std::chrono::seconds validity) const;

  // Validates chain (to our issuing CA and root), EKU clientAuth, time (Clock), CN == SAN UUID.
  Expected<DeviceIdentity> VerifyDeviceCertificate(
      X509* leaf, const std::vector<X509*>& extra_chain = {}) const;

  // issuing + root, PEM.
  const std::string& ChainPem() const { return chain_pem_; }
  X509* root() const { return root_.get(); }
  X509* issuing() const { return issuing_.get(); }
  // The certificate and key that sign CMP responses (EKU cmcRA).
  X509* cmp_cert() const { return cmp_cert_.get(); }
  EVP_PKEY* cmp_key() const { return cmp_key_.get(); }
  bool has_root_key() const { return has_root_key_; }
  const CaSettings& settings() const { return settings_; }
  Clock& clock() const { return clock_; }

  // Offline root: copies dir/root.key to out_path (0600, must not exist), verifies the copy
  // and removes dir/root.key.
  static Expected<void> ExportRootKey(const std::filesystem::path& dir,
                                      const std::filesystem::path& out_path);
  // Installs an issuing CA made elsewhere (e.g. on the offline root machine). It must be a CA
  // signed by dir/root.pem and match the key. Server and CMP certificates are reissued on the
  // next start.
  static Expected<void> ImportIssuingCa(const std::filesystem::path& dir,
                                        const std::filesystem::path& cert_pem_path,
                                        const std::filesystem::path& key_pem_path);

 private:
  CertificateAuthority(CaSettings settings, Clock& clock) : settings_(std::move(settings)),
                                                            clock_(clock) {}
  Expected<void> EnsureCmpCertificate();

  CaSettings settings_;
  Clock& clock_;
  X509Ptr root_;
  X509Ptr issuing_;
  EvpPkeyPtr issuing_key_;
  bool has_root_key_ = false;
  std::string chain_pem_;
  X509Ptr cmp_cert_;
  EvpPkeyPtr cmp_key_;
  std::mutex files_mutex_;
};

}  // namespace torwart::pki
