// torwartd's PKI service: the CA, the CMP and EST endpoints, the CRL, device revocation.
// Thread-safe. Lives in the composition root because it joins the CA with the database.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "context.hpp"
#include "torwart/http/server.hpp"
#include "torwart/pki/ca.hpp"
#include "torwart/pki/grant_extension.hpp"

namespace torwart::server {

class PkiService {
 public:
  virtual ~PkiService() = default;
  // Registers /pki/*, /.well-known/cmp and /.well-known/est/* on the router.
  virtual void RegisterRoutes(http::Router& router) = 0;
  // Revokes every certificate of the device, cancels its enrollments, regenerates the CRL.
  virtual Expected<int> RevokeDevice(const storage::Device& d, int reason_code) = 0;
  // Regenerates the CRL if it is due (half its validity has passed) or forced.
  virtual Expected<void> RefreshCrl(bool force) = 0;
  // Paths of the server's TLS certificate chain and key, and of the CA chain for clients.
  virtual std::string server_cert_file() const = 0;
  virtual std::string server_key_file() const = 0;
  virtual std::string ca_chain_file() const = 0;

  // Access grants (access.cpp): a grant certificate for the CSR's key (CSR signature checked),
  // recorded under device id "grant:<id>" so revocation and the CRL cover it. Returns PEM leaf +
  // issuing CA.
  virtual Expected<std::string> IssueGrantCertificate(const std::string& csr_pem,
                                                      const pki::GrantClaims& claims) = 0;
  // Revokes every certificate of grant `grant_id` and regenerates the CRL; returns how many.
  virtual Expected<int> RevokeGrantCertificates(const std::string& grant_id) = 0;

  // Called (on the thread that made the change) after a certificate was issued or revoked, so
  // the broker's view (plugin state) follows at once. Set once at start-up, before serving.
  virtual void OnCertificatesChanged(std::function<void()> hook) = 0;
  // A clientAuth certificate for one of torwartd's own services (e.g. its broker connection):
  // CN is a fresh random UUID that is not a device. Returns PEM chain (leaf + issuing CA) and key.
  struct ServiceCredentials {
    std::string cert_chain_pem, key_pem, sha256_hex, serial;
    TimePoint not_after;
  };
  virtual Expected<ServiceCredentials> IssueServiceCertificate(std::chrono::seconds lifetime) = 0;

  // A device's TLS client certificate (DER, as the HTTPS listener saw it): chain to our CA,
  // clientAuth, not expired, and in the database a known device that is not revoked with this
  // certificate on record, not revoked. kUnauthenticated, kRevoked or kPermissionDenied.
  virtual Expected<pki::DeviceIdentity> AuthenticateDevice(std::string_view client_cert_der) = 0;
};

Expected<std::unique_ptr<PkiService>> MakePkiService(Context& ctx);

// RFC 5280 CRLReason from a name ("keyCompromise", "superseded", ...); -1 if unknown.
int RevocationReasonCode(const std::string& name);

}  // namespace torwart::server

namespace torwart::server {
// Offline-root operations for `torwartd ca ...` (the server must be stopped).
Expected<void> ExportRootKey(const std::string& pki_dir, const std::string& out_path);
Expected<void> ImportIssuing(const std::string& pki_dir, const std::string& cert_pem,
                             const std::string& key_pem);
}  // namespace torwart::server
