// EST (RFC 7030) body codec: base64 PKCS#10 requests in, base64 certs-only PKCS#7 out.
// Transport, authentication and approval belong to the HTTP layer. Pure; thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "torwart/core/error.hpp"
#include "torwart/pki/x509.hpp"

namespace torwart::pki {

inline constexpr char kEstCsrContentType[] = "application/pkcs10";
inline constexpr char kEstCertsContentType[] = "application/pkcs7-mime; smime-type=certs-only";
inline constexpr char kEstCaCertsContentType[] = "application/pkcs7-mime";
inline constexpr char kEstCsrAttrsContentType[] = "application/csrattrs";
inline constexpr size_t kEstMaxCsrBody = 16 * 1024;

// Base64 DER PKCS#10 (whitespace tolerated, also PEM armour), at most kEstMaxCsrBody bytes.
// The CSR's self-signature is verified.
Expected<X509ReqPtr> ParseEstCsr(std::string_view body);

// Degenerate PKCS#7 signedData holding `certs`, base64 with CRLF line breaks every 64 chars.
Expected<std::string> EncodeCertsOnly(const std::vector<X509*>& certs);

// Inverse of EncodeCertsOnly (for clients and tests).
Expected<std::vector<X509Ptr>> DecodeCertsOnly(std::string_view body);

}  // namespace torwart::pki
