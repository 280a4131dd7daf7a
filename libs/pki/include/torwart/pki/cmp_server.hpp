// Lightweight CMP server (RFC 9483) on OpenSSL's OSSL_CMP_SRV_CTX: ir/cr/p10cr with a one-time
// secret (PBMAC), kur/cr/p10cr/rr signed by the current device certificate, certConf, genm.
// Thread-safe: Handle may be called concurrently; each transaction has its own OpenSSL context
// (kept in a bounded, expiring map between the certificate response and certConf).
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>

#include "torwart/core/clock.hpp"
#include "torwart/core/error.hpp"
#include "torwart/pki/ca.hpp"
#include "torwart/pki/x509.hpp"

namespace torwart::pki {

struct EnrollmentSecret {
  std::string device_id;
  std::string secret;
};

// Implemented by torwartd over its database. Must be thread-safe.
class CmpBackend {
 public:
  virtual ~CmpBackend() = default;
  // Unknown, used or expired reference -> error.
  virtual Expected<EnrollmentSecret> LookupReference(const std::string& reference) = 0;
  // Atomically single-use; error if already used.
  virtual Expected<void> ConsumeReference(const std::string& reference,
                                          const std::string& fingerprint) = 0;
  // Refuses a revoked device or certificate, or a fingerprint mismatch.
  virtual Expected<void> AuthorizeRenewal(const DeviceIdentity& current,
                                          const std::string& fingerprint) = 0;
  virtual Expected<void> RecordIssued(const std::string& device_id, X509* cert,
                                      const std::string& fingerprint) = 0;
  // Must refuse a serial that does not belong to requester.uuid.
  virtual Expected<void> Revoke(const DeviceIdentity& requester, const std::string& serial,
                                int reason) = 0;
  virtual std::chrono::seconds DeviceLifetime() = 0;
};

struct CmpOutcome {
  // ir, cr, kur, p10cr, rr, certConf, genm, pollReq, error, malformed
  std::string kind;
  std::string reference, device_id, serial;
  bool accepted = false;
  std::string error;
};

struct CmpServerSettings {
  size_t max_request_bytes = 64 * 1024;
  size_t max_pending = 1024;                        // open transactions awaiting certConf
  std::chrono::seconds pending_ttl = std::chrono::minutes(5);
  size_t nonce_cache = 16384;                       // remembered senderNonces
  std::chrono::seconds max_clock_skew = std::chrono::minutes(5);  // messageTime tolerance
};

inline constexpr char kCmpContentType[] = "application/pkixcmp";

class CmpServer {
 public:
  CmpServer(CertificateAuthority& ca, CmpBackend& backend, Clock& clock,
            CmpServerSettings settings = {});
  ~CmpServer();
  CmpServer(const CmpServer&) = delete;
  CmpServer& operator=(const CmpServer&) = delete;

  struct Result {
    int http_status = 400;  // 200 with a PKIMessage, 400 for non-CMP input, 500 internal
    std::string der;        // the response PKIMessage (content type kCmpContentType)
    CmpOutcome outcome;
  };
  // One HTTP POST body. `peer` is for logs only.
  Result Handle(std::string_view der_request, const std::string& peer);

  struct Transaction;  // internal, public for the OpenSSL callbacks
  CertificateAuthority& ca() { return ca_; }
  CmpBackend& backend() { return backend_; }

 private:
  bool RememberNonce(const std::string& nonce);
  std::unique_ptr<Transaction> TakePending(const std::string& transaction_id);
  void StorePending(std::unique_ptr<Transaction> t);
  bool IsPending(const std::string& transaction_id);

  CertificateAuthority& ca_;
  CmpBackend& backend_;
  Clock& clock_;
  CmpServerSettings settings_;

  std::mutex mutex_;
  std::map<std::string, std::unique_ptr<Transaction>> pending_;  // by transactionID
  std::unordered_set<std::string> nonces_;
  std::deque<std::string> nonce_order_;
};

}  // namespace torwart::pki
