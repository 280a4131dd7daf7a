// CMP client for the agent: initial enrollment with a one-time secret (ir, PBMAC), renewal
// signed by the current certificate (kur, same key) and revocation of its own certificate (rr).
// Keys may live in a PKCS#11 engine or provider: only EVP_PKEY operations are used.
// Thread-safe: each call builds its own OpenSSL context; `transfer` must be safe to call.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "torwart/core/error.hpp"
#include "torwart/pki/x509.hpp"

namespace torwart::pki {

// Sends one DER PKIMessage (HTTP POST, application/pkixcmp) and returns the DER response.
using CmpTransfer = std::function<Expected<std::string>(const std::string& der_request)>;

struct Enrolled {
  X509Ptr cert;
  std::vector<X509Ptr> chain;  // the issuing CA (and any further certificates sent)
};

// `trusted_chain_pem` (issuing + root) verifies signed responses; the new certificate must
// chain to it. `reference`/`secret` are the one-time enrollment credentials.
Expected<Enrolled> InitialEnroll(const CmpTransfer& transfer, const std::string& trusted_chain_pem,
                                 const std::string& reference, const std::string& secret,
                                 EVP_PKEY* key, const std::string& machine_fingerprint);

// kur signed with `current` and `key`; the new certificate certifies the same key.
Expected<Enrolled> Renew(const CmpTransfer& transfer, const std::string& trusted_chain_pem,
                         X509* current, EVP_PKEY* key, const std::string& machine_fingerprint);

// rr for `to_revoke` (default: `current`), signed with `current` and `key`. reason: CRLReason.
Expected<void> RevokeOwn(const CmpTransfer& transfer, const std::string& trusted_chain_pem,
                         X509* current, EVP_PKEY* key, X509* to_revoke = nullptr,
                         int reason = 5 /* cessationOfOperation */);

}  // namespace torwart::pki
