// A small, bounds-checked DER walk over an untrusted CMP PKIMessage (RFC 4210), for the header
// fields OpenSSL 3.0 has no public getters for (senderKID, messageTime, senderNonce, ...).
// Pure functions; thread-safe. Also the entry point of the CMP fuzz target.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "torwart/core/error.hpp"

namespace torwart::pki {

// PKIBody CHOICE tags (RFC 4210 5.1.2).
enum CmpBodyType : int {
  kCmpIr = 0, kCmpIp = 1, kCmpCr = 2, kCmpCp = 3, kCmpP10cr = 4, kCmpKur = 7, kCmpKup = 8,
  kCmpRr = 11, kCmpRp = 12, kCmpPkiConf = 19, kCmpGenm = 21, kCmpGenp = 22, kCmpError = 23,
  kCmpCertConf = 24, kCmpPollReq = 25, kCmpPollRep = 26,
};
// "ir", "kur", ... or "body<N>".
std::string CmpBodyName(int body_type);

struct CmpMessageFields {
  int body_type = -1;
  std::optional<std::string> sender_kid;     // raw KeyIdentifier bytes
  std::optional<std::string> message_time;   // DER TLV of the GeneralizedTime
  std::optional<std::string> transaction_id;
  std::optional<std::string> sender_nonce;
  std::optional<std::string> protection_alg_oid;  // OID content bytes (no tag/length)
  bool has_protection = false;
  std::vector<std::string> extra_certs_der;
  // rr only: DER of the first RevDetails' crlEntryDetails (Extensions), if present.
  std::optional<std::string> rr_crl_entry_details;
};

// The OID content bytes of id-PasswordBasedMAC (1.2.840.113533.7.66.13).
inline constexpr std::string_view kPbmOidContent = "\x2A\x86\x48\x86\xF6\x7D\x07\x42\x0D";

// Parses the outer structure of a DER PKIMessage. Fails (kParse) on anything not DER-shaped:
// indefinite lengths, high tag numbers, truncation, trailing bytes, nesting deeper than needed.
Expected<CmpMessageFields> ParseCmpMessageFields(std::string_view der);

// SubjectPublicKeyInfo DER from a DER CRMF CertTemplate (its [6] IMPLICIT publicKey).
Expected<std::string> CertTemplatePublicKeyDer(std::string_view template_der);

// The PKIStatus integer of a DER PKIStatusInfo.
Expected<int> PkiStatusFromDer(std::string_view der);

}  // namespace torwart::pki
