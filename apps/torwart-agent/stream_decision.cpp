#include "stream_decision.hpp"

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>

#include "torwart/pki/grant_extension.hpp"
#include "torwart/pki/x509.hpp"

namespace torwart::agent {
namespace {

using nlohmann::json;

Expected<std::string> Str(const json& args, const char* key, bool required, size_t max = 256) {
  if (!args.contains(key)) {
    if (required) return MakeError(Errc::kInvalidArgument, std::string("missing \"") + key + "\"");
    return std::string();
  }
  const json& v = args[key];
  if (!v.is_string()) {
    return MakeError(Errc::kInvalidArgument, std::string("\"") + key + "\" must be a string");
  }
  const auto& s = v.get_ref<const std::string&>();
  if ((required && s.empty()) || s.size() > max) {
    return MakeError(Errc::kInvalidArgument,
                     std::string("\"") + key + "\" must be 1-" + std::to_string(max) + " bytes");
  }
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return MakeError(Errc::kInvalidArgument,
                       std::string("\"") + key + "\" contains a control character");
    }
  }
  return s;
}

}  // namespace

bool IsStreamIdText(std::string_view s) {
  if (s.size() != 19 || s.substr(0, 3) != "st-") return false;
  return std::all_of(s.begin() + 3, s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

Expected<OpenRequest> ParseStreamOpen(const json& args, int64_t now) {
  if (!args.is_object()) return MakeError(Errc::kInvalidArgument, "args must be an object");
  OpenRequest r;
  auto stream = Str(args, "stream", true, 19);
  if (!stream) return MakeError(stream.error());
  if (!IsStreamIdText(*stream)) {
    return MakeError(Errc::kInvalidArgument, "\"stream\" must be st- and 16 lowercase hex digits");
  }
  r.stream = *stream;
  auto relay = Str(args, "relay", true, 300);
  if (!relay) return MakeError(relay.error());
  auto hp = ParseHostPort(*relay);
  if (!hp) return MakeError(Errc::kInvalidArgument, "\"relay\": " + hp.error().message());
  r.relay_host = hp->first;
  r.relay_port = hp->second;
  auto name = Str(args, "relay_name", false, 253);
  if (!name) return MakeError(name.error());
  r.relay_name = name->empty() ? r.relay_host : *name;
  for (auto [key, out] : {std::pair{"grant", &r.grant}, std::pair{"user", &r.user},
                          std::pair{"site", &r.site}, std::pair{"target", &r.target}}) {
    auto v = Str(args, key, true);
    if (!v) return MakeError(v.error());
    *out = *v;
  }
  if (args.contains("scopes")) {
    const json& s = args["scopes"];
    if (!s.is_array() || s.size() > 32) {
      return MakeError(Errc::kInvalidArgument, "\"scopes\" must be an array of at most 32 strings");
    }
    for (const auto& e : s) {
      if (!e.is_string() || e.get_ref<const std::string&>().empty() ||
          e.get_ref<const std::string&>().size() > 256) {
        return MakeError(Errc::kInvalidArgument, "\"scopes\" must hold strings of 1-256 bytes");
      }
      r.scopes.push_back(e.get<std::string>());
    }
  }
  if (args.contains("consent_required")) {
    if (!args["consent_required"].is_boolean()) {
      return MakeError(Errc::kInvalidArgument, "\"consent_required\" must be true or false");
    }
    r.consent_required = args["consent_required"].get<bool>();
  }
  if (!args.contains("deadline") || !args["deadline"].is_number_integer()) {
    return MakeError(Errc::kInvalidArgument, "\"deadline\" must be an integer (Unix seconds)");
  }
  r.deadline = args["deadline"].get<int64_t>();
  if (r.deadline <= now) {
    return MakeError(Errc::kInvalidArgument, "the grant's deadline has already passed");
  }
  return r;
}

Decision DecideOpen(const OpenRequest& req, const DecisionInput& in) {
  Decision d;
  auto refuse = [&](const char* code, std::string message) {
    d.ok = false;
    d.code = code;
    d.message = std::move(message);
    return d;
  };
  // 1. Quarantine: the machine runs cut off until the operator releases it.
  if (in.quarantine.on) {
    return refuse(
        "quarantined",
        "this gateway is quarantined" +
            (in.quarantine.reason.empty() ? std::string() : " (" + in.quarantine.reason + ")") +
            ": no streams until it is released");
  }
  // 2. The site operator's allowlist (fail closed on a broken site.toml).
  if (!in.site) {
    return refuse("not_allowed",
                  "the gateway's site configuration is invalid, so nothing is "
                  "allowed: " +
                      in.site_error);
  }
  const SiteTarget* t = in.site->Find(req.target);
  if (!t) {
    return refuse("not_allowed", "target " + req.target + " is not on this gateway's allowlist");
  }
  if (!t->site.empty() && t->site != req.site) {
    return refuse("not_allowed", "target " + req.target + " belongs to site " + t->site +
                                     " on this gateway, not " + req.site);
  }
  // 3. On-site consent, if the policy or the site operator requires it.
  bool needs = req.consent_required || t->consent;
  if (needs && !in.consent.on) {
    return refuse("consent", "on-site consent is required for " + req.target +
                                 " and is off (someone on site must run `torwart-agent consent "
                                 "on --for 2h`" +
                                 (in.consent.input.empty() ? std::string(")")
                                                           : " or switch the consent input on)"));
  }
  // 4. Limits.
  if (in.live_streams >= in.site->max_streams) {
    return refuse("busy", "this gateway already carries " + std::to_string(in.live_streams) +
                              " streams (max_streams = " + std::to_string(in.site->max_streams) +
                              ")");
  }
  if (!in.recording_space) {
    return refuse("busy",
                  "the gateway's recording quota is full of recordings not yet uploaded; "
                  "streams resume once the server has received them");
  }
  d.ok = true;
  d.target = *t;
  d.needs_consent = needs;
  return d;
}

Expected<RevocationList> RevocationList::FromDer(std::string_view der,
                                                 std::string_view ca_chain_pem) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  pki::X509CrlPtr crl(d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size())));
  if (!crl || p != reinterpret_cast<const unsigned char*>(der.data()) + der.size()) {
    return MakeError(Errc::kParse, "the CRL is not valid DER");
  }
  auto chain = pki::CertsFromPem(ca_chain_pem);
  if (!chain) return MakeError(chain.error().WithContext("CA chain for the CRL"));
  const X509_NAME* issuer = X509_CRL_get_issuer(crl.get());
  bool verified = false;
  for (const auto& c : *chain) {
    if (X509_NAME_cmp(X509_get_subject_name(c.get()), issuer) != 0) continue;
    EVP_PKEY* pub = X509_get0_pubkey(c.get());
    if (pub && X509_CRL_verify(crl.get(), pub) == 1) {
      verified = true;
      break;
    }
  }
  if (!verified) {
    return MakeError(Errc::kPermissionDenied, "the CRL is not signed by our CA");
  }
  RevocationList out;
  if (auto* t = X509_CRL_get0_lastUpdate(crl.get())) out.this_update_ = pki::AsnTimeToTimePoint(t);
  if (auto* t = X509_CRL_get0_nextUpdate(crl.get())) out.next_update_ = pki::AsnTimeToTimePoint(t);
  if (auto* num = static_cast<ASN1_INTEGER*>(
          X509_CRL_get_ext_d2i(crl.get(), NID_crl_number, nullptr, nullptr))) {
    long v = ASN1_INTEGER_get(num);
    out.number_ = v;
    ASN1_INTEGER_free(num);
  }
  STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl.get());
  for (int i = 0; revoked && i < sk_X509_REVOKED_num(revoked); ++i) {
    const X509_REVOKED* r = sk_X509_REVOKED_value(revoked, i);
    out.revoked_.insert(pki::AsnIntegerHex(X509_REVOKED_get0_serialNumber(r)));
  }
  return out;
}

Expected<tunnel::GrantCheck> CheckGrantCertificate(std::string_view leaf_der,
                                                   const OpenRequest& req,
                                                   const RevocationList* crl, TimePoint now) {
  auto deny = [](const std::string& why) {
    return MakeError(Errc::kPermissionDenied, "grant certificate refused: " + why);
  };
  auto cert = pki::CertFromDer(leaf_der);
  if (!cert) return deny("not a certificate");
  if (!crl) {
    return deny(
        "no certificate revocation list is available (server unreachable and no cached "
        "copy), so revocation cannot be checked");
  }
  std::string serial = pki::SerialHex(cert->get());
  if (crl->Revoked(serial)) return deny("certificate " + serial + " is revoked");
  auto claims = pki::GrantClaimsOf(cert->get());
  if (!claims) return deny("malformed grant extension: " + claims.error().message());
  if (!*claims) return deny("it has no grant extension (not a grant certificate)");
  const pki::GrantClaims& c = **claims;
  auto uris = pki::SanUris(cert->get());
  if (std::find(uris.begin(), uris.end(), pki::kGrantUriPrefix + c.grant_id) == uris.end()) {
    return deny("its subjectAltName does not name grant " + c.grant_id);
  }
  if (c.grant_id != req.grant) {
    return deny("it is for grant " + c.grant_id + ", the stream for grant " + req.grant);
  }
  if (c.user != req.user || pki::SubjectCn(cert->get()) != c.user) {
    return deny("it is for user " + c.user + ", the stream for " + req.user);
  }
  if (c.target != req.target) {
    return deny("it is for target " + c.target + ", the stream for " + req.target);
  }
  if (c.site != req.site) {
    return deny("it is for site " + c.site + ", the stream for " + req.site);
  }
  TimePoint cert_end = pki::NotAfter(cert->get());
  if (cert_end <= now || c.not_after <= now) return deny("the grant has ended");
  if (pki::NotBefore(cert->get()) > now + std::chrono::minutes(5)) {
    return deny("it is not valid yet");
  }
  tunnel::GrantCheck g;
  g.grant_id = c.grant_id;
  g.user = c.user;
  g.site = c.site;
  g.target = c.target;
  g.scopes = c.scopes;  // the signed scopes, not the command's copy
  g.deadline = std::min({cert_end, c.not_after, FromUnix(req.deadline)});
  return g;
}

}  // namespace torwart::agent
