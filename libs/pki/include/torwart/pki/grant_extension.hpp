// The grant extension of torwart grant certificates (OID ...102.2, non-critical): which grant,
// user, site, target and scopes a short-lived client certificate stands for, and until when.
// Wire format: docs/design/grant-certificate.md. Encode/decode are pure and thread-safe; the
// decoder is strict (DER only, bounded sizes) and meant for untrusted input.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "torwart/core/clock.hpp"
#include "torwart/core/error.hpp"
#include "torwart/pki/x509.hpp"

namespace torwart::pki {

inline constexpr char kGrantExtensionOid[] = "2.25.78651378630191958022851039446016456102.2";
inline constexpr char kGrantUriPrefix[] = "urn:torwart:grant:";
inline constexpr int kGrantExtensionVersion = 1;

struct GrantClaims {
  std::string grant_id;
  std::string user;
  std::string site;
  std::string target;
  std::vector<std::string> scopes;  // empty: the whole protocol of the target
  TimePoint not_after;              // whole seconds, UTC

  bool operator==(const GrantClaims&) const = default;
};

// DER of TorwartGrant. kInvalidArgument for empty ids, strings over 256 bytes, invalid UTF-8,
// more than 32 scopes, or a time outside 1950..9999.
Expected<std::string> EncodeGrantClaims(const GrantClaims& claims);
// Strict DER decoding; kParse with a reason for anything else (trailing bytes, wrong tags,
// non-minimal lengths, unknown version, bad time).
Expected<GrantClaims> DecodeGrantClaims(std::string_view der);

// The X509 extension (non-critical) carrying EncodeGrantClaims(claims).
Expected<X509ExtensionPtr> MakeGrantExtension(const GrantClaims& claims);
// The claims of a certificate; nullopt if it has no grant extension, kParse if it is malformed.
Expected<std::optional<GrantClaims>> GrantClaimsOf(const X509* cert);

}  // namespace torwart::pki
