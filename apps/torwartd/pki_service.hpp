// torwartd's PKI service: the CA, the CMP and EST endpoints, the CRL, device revocation.
// Thread-safe. Lives in the composition root because it joins the CA with the database.
#pragma once

#include <memory>
#include <string>

#include "context.hpp"
#include "torwart/http/server.hpp"

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
