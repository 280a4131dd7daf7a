// The certificate authority; see ca.hpp and docs/design/pki.md.
#include "torwart/pki/ca.hpp"

#include <arpa/inet.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <algorithm>
#include <set>
#include <system_error>

#include "torwart/core/ids.hpp"

namespace torwart::pki {
namespace fs = std::filesystem;

namespace {

constexpr fs::perms kKeyPerms = fs::perms::owner_read | fs::perms::owner_write;
constexpr fs::perms kCertPerms = kKeyPerms | fs::perms::group_read | fs::perms::others_read;

Unexpected OsslError(Errc code, std::string_view what) {
  std::string detail = OpenSslErrorString();
  std::string msg(what);
  if (!detail.empty()) msg += ": " + detail;
  return MakeError(code, std::move(msg));
}

struct NameDeleter {
  void operator()(X509_NAME* n) const noexcept { X509_NAME_free(n); }
};
using NamePtr = std::unique_ptr<X509_NAME, NameDeleter>;

NamePtr MakeName(const std::string& organisation, const std::string& cn) {
  NamePtr name(X509_NAME_new());
  if (!name) return nullptr;
  auto add = [&](const char* field, const std::string& value) {
    return value.empty() ||
           X509_NAME_add_entry_by_txt(name.get(), field, MBSTRING_UTF8,
                                      reinterpret_cast<const unsigned char*>(value.data()),
                                      static_cast<int>(value.size()), -1, 0) == 1;
  };
  if (!add("O", organisation) || !add("CN", cn)) return nullptr;
  return name;
}

// Positive, non-zero random 128-bit serial.
bool SetRandomSerial(X509* cert) {
  std::string bytes = RandomBytes(16);
  bytes[0] = static_cast<char>((static_cast<unsigned char>(bytes[0]) & 0x7f) | 0x01);
  BIGNUM* bn = BN_bin2bn(reinterpret_cast<const unsigned char*>(bytes.data()),
                         static_cast<int>(bytes.size()), nullptr);
  if (bn == nullptr) return false;
  ASN1_INTEGER* serial = BN_to_ASN1_INTEGER(bn, nullptr);
  BN_free(bn);
  bool ok = serial != nullptr && X509_set_serialNumber(cert, serial) == 1;
  ASN1_INTEGER_free(serial);
  return ok;
}

bool SetTime(ASN1_TIME* field, TimePoint t) {
  return ASN1_TIME_set(field, static_cast<time_t>(ToUnix(t))) != nullptr;
}

struct CertSpec {
  const X509_NAME* subject = nullptr;
  EVP_PKEY* pubkey = nullptr;
  X509* issuer = nullptr;  // nullptr: self-signed
  EVP_PKEY* issuer_key = nullptr;
  TimePoint not_before;
  TimePoint not_after;
  std::vector<ExtensionSpec> extensions;  // in order; SKI/AKI are added automatically
  X509_EXTENSION* raw_extension = nullptr;  // optional, added last (not owned)
};

Expected<X509Ptr> BuildCert(const CertSpec& spec) {
  X509Ptr cert(X509_new());
  if (!cert) return OsslError(Errc::kInternal, "X509_new");
  X509* issuer = spec.issuer != nullptr ? spec.issuer : cert.get();
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1 || !SetRandomSerial(cert.get()) ||
      X509_set_subject_name(cert.get(), spec.subject) != 1 ||
      X509_set_issuer_name(cert.get(), spec.issuer != nullptr
                                           ? X509_get_subject_name(spec.issuer)
                                           : spec.subject) != 1 ||
      X509_set_pubkey(cert.get(), spec.pubkey) != 1 ||
      !SetTime(X509_getm_notBefore(cert.get()), spec.not_before) ||
      !SetTime(X509_getm_notAfter(cert.get()), spec.not_after)) {
    return OsslError(Errc::kInvalidArgument, "building certificate");
  }
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert.get(), nullptr, nullptr, 0);
  std::vector<ExtensionSpec> exts = spec.extensions;
  exts.push_back({"subjectKeyIdentifier", "hash"});
  if (spec.issuer != nullptr) exts.push_back({"authorityKeyIdentifier", "keyid:always"});
  for (const auto& e : exts) {
    X509_EXTENSION* ext = X509V3_EXT_conf(nullptr, &ctx, e.name.c_str(), e.value.c_str());
    if (ext == nullptr) return OsslError(Errc::kInvalidArgument, "extension " + e.name);
    int ok = X509_add_ext(cert.get(), ext, -1);
    X509_EXTENSION_free(ext);
    if (ok != 1) return OsslError(Errc::kInternal, "adding extension " + e.name);
  }
  if (spec.raw_extension != nullptr && X509_add_ext(cert.get(), spec.raw_extension, -1) != 1)
    return OsslError(Errc::kInternal, "adding extension");
  if (X509_sign(cert.get(), spec.issuer_key, EVP_sha256()) <= 0)
    return OsslError(Errc::kInternal, "signing certificate");
  return cert;
}

Expected<void> WriteCert(const fs::path& path, const X509* cert) {
  auto pem = CertToPem(cert);
  if (!pem) return MakeError(pem.error());
  return WriteFileAtomic(path, *pem, kCertPerms);
}

bool SignedBy(X509* cert, X509* issuer) {
  EVP_PKEY* key = X509_get0_pubkey(issuer);
  bool ok = key != nullptr && X509_verify(cert, key) == 1 &&
            X509_NAME_cmp(X509_get_issuer_name(cert), X509_get_subject_name(issuer)) == 0;
  ERR_clear_error();
  return ok;
}

bool IsIpLiteral(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

// "dns:<name>" / "ip:<hex of address bytes>" for comparing wanted and present SANs.
std::string NameKey(const std::string& name) {
  if (IsIpLiteral(name)) {
    ASN1_OCTET_STRING* ip = a2i_IPADDRESS(name.c_str());
    std::string key = "ip:";
    if (ip != nullptr) {
      key += HexEncode(std::string_view(reinterpret_cast<const char*>(ip->data),
                                        static_cast<size_t>(ip->length)));
    }
    ASN1_OCTET_STRING_free(ip);
    return key;
  }
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return "dns:" + lower;
}

std::set<std::string> PresentNameKeys(const X509* cert) {
  std::set<std::string> out;
  auto* names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
    if (gn->type == GEN_DNS) {
      std::string dns(reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.dNSName)),
                      static_cast<size_t>(ASN1_STRING_length(gn->d.dNSName)));
      out.insert(NameKey(dns));
    } else if (gn->type == GEN_IPADD) {
      out.insert("ip:" + HexEncode(std::string_view(
                             reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.iPAddress)),
                             static_cast<size_t>(ASN1_STRING_length(gn->d.iPAddress)))));
    }
  }
  GENERAL_NAMES_free(names);
  return out;
}

Expected<void> EnsureDir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return MakeError(Errc::kIo, "creating " + dir.string() + ": " + ec.message());
  fs::permissions(dir, fs::perms::owner_all, ec);
  if (ec) return MakeError(Errc::kIo, "chmod 0700 " + dir.string() + ": " + ec.message());
  return {};
}

bool Exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

bool KeyMatches(X509* cert, EVP_PKEY* key) {
  bool ok = X509_check_private_key(cert, key) == 1;
  ERR_clear_error();
  return ok;
}

// A leaf (server or CMP) needs reissuing when missing, broken, not from `issuing`, or close to
// its end.
bool NeedsReissue(const fs::path& cert_path, const fs::path& key_path, X509* issuing,
                  TimePoint now, std::chrono::seconds renew_before, X509Ptr* cert_out,
                  EvpPkeyPtr* key_out) {
  auto cert = ReadCertFile(cert_path);
  auto key = ReadPrivateKeyFile(key_path);
  if (!cert || !key) return true;
  if (!KeyMatches(cert->get(), key->get()) || !SignedBy(cert->get(), issuing)) return true;
  if (NotAfter(cert->get()) - now < renew_before) return true;
  *cert_out = std::move(*cert);
  *key_out = std::move(*key);
  return false;
}

}  // namespace

Expected<std::unique_ptr<CertificateAuthority>> CertificateAuthority::OpenOrCreate(
    const CaSettings& settings, Clock& clock) {
  if (settings.dir.empty()) return MakeError(Errc::kInvalidArgument, "CA directory not set");
  if (auto r = EnsureDir(settings.dir); !r) return MakeError(r.error());
  std::unique_ptr<CertificateAuthority> ca(new CertificateAuthority(settings, clock));
  const fs::path& dir = settings.dir;
  const TimePoint now = clock.Now();
  const std::string& org = settings.organisation;

  EvpPkeyPtr root_key;
  if (Exists(dir / "root.pem")) {
    auto root = ReadCertFile(dir / "root.pem");
    if (!root) return MakeError(root.error());
    ca->root_ = std::move(*root);
    if (Exists(dir / "root.key")) {
      auto key = ReadPrivateKeyFile(dir / "root.key");
      if (!key) return MakeError(key.error());
      if (!KeyMatches(ca->root_.get(), key->get()))
        return MakeError(Errc::kFailedPrecondition, "root.key does not match root.pem");
      root_key = std::move(*key);
    }
  } else {
    if (Exists(dir / "issuing.pem"))
      return MakeError(Errc::kFailedPrecondition, "issuing.pem present but root.pem missing");
    auto key = GenerateP256Key();
    if (!key) return MakeError(key.error());
    NamePtr name = MakeName(org, org + " Root CA");
    if (!name) return OsslError(Errc::kInternal, "root CA name");
    CertSpec spec{name.get(), key->get(), nullptr, key->get(), now - std::chrono::hours(1),
                  now + settings.root_lifetime,
                  {{"basicConstraints", "critical,CA:TRUE"},
                   {"keyUsage", "critical,keyCertSign,cRLSign"}}};
    auto root = BuildCert(spec);
    if (!root) return MakeError(root.error().WithContext("creating root CA"));
    if (auto r = WritePrivateKeyFile(dir / "root.key", key->get()); !r) return MakeError(r.error());
    if (auto r = WriteCert(dir / "root.pem", root->get()); !r) return MakeError(r.error());
    ca->root_ = std::move(*root);
    root_key = std::move(*key);
  }
  ca->has_root_key_ = root_key != nullptr;

  if (Exists(dir / "issuing.pem")) {
    auto cert = ReadCertFile(dir / "issuing.pem");
    if (!cert) return MakeError(cert.error());
    auto key = ReadPrivateKeyFile(dir / "issuing.key");
    if (!key) return MakeError(key.error());
    if (!KeyMatches(cert->get(), key->get()))
      return MakeError(Errc::kFailedPrecondition, "issuing.key does not match issuing.pem");
    if (!SignedBy(cert->get(), ca->root_.get()))
      return MakeError(Errc::kFailedPrecondition, "issuing.pem is not signed by root.pem");
    ca->issuing_ = std::move(*cert);
    ca->issuing_key_ = std::move(*key);
  } else {
    if (!root_key)
      return MakeError(Errc::kFailedPrecondition,
                       "no issuing CA and the root key is offline: import one with "
                       "ImportIssuingCa (see docs/design/pki.md)");
    auto key = GenerateP256Key();
    if (!key) return MakeError(key.error());
    NamePtr name = MakeName(org, org + " Issuing CA");
    if (!name) return OsslError(Errc::kInternal, "issuing CA name");
    CertSpec spec{name.get(), key->get(), ca->root_.get(), root_key.get(),
                  now - std::chrono::hours(1), now + settings.issuing_lifetime,
                  {{"basicConstraints", "critical,CA:TRUE,pathlen:0"},
                   {"keyUsage", "critical,keyCertSign,cRLSign"}}};
    auto cert = BuildCert(spec);
    if (!cert) return MakeError(cert.error().WithContext("creating issuing CA"));
    if (auto r = WritePrivateKeyFile(dir / "issuing.key", key->get()); !r)
      return MakeError(r.error());
    if (auto r = WriteCert(dir / "issuing.pem", cert->get()); !r) return MakeError(r.error());
    ca->issuing_ = std::move(*cert);
    ca->issuing_key_ = std::move(*key);
  }
  if (NotAfter(ca->issuing_.get()) < now)
    return MakeError(Errc::kExpired, "the issuing CA certificate has expired");

  auto issuing_pem = CertToPem(ca->issuing_.get());
  auto root_pem = CertToPem(ca->root_.get());
  if (!issuing_pem || !root_pem) return OsslError(Errc::kInternal, "encoding chain");
  ca->chain_pem_ = *issuing_pem + *root_pem;
  if (auto r = WriteFileAtomic(dir / "chain.pem", ca->chain_pem_, kCertPerms); !r)
    return MakeError(r.error());
  if (auto r = ca->EnsureCmpCertificate(); !r) return MakeError(r.error());
  return ca;
}

Expected<void> CertificateAuthority::EnsureCmpCertificate() {
  const fs::path& dir = settings_.dir;
  const TimePoint now = clock_.Now();
  if (!NeedsReissue(dir / "cmp.pem", dir / "cmp.key", issuing_.get(), now,
                    settings_.renew_before, &cmp_cert_, &cmp_key_)) {
    return {};
  }
  auto key = GenerateP256Key();
  if (!key) return MakeError(key.error());
  NamePtr name = MakeName(settings_.organisation, settings_.organisation + " CMP RA");
  if (!name) return OsslError(Errc::kInternal, "CMP name");
  CertSpec spec{name.get(), key->get(), issuing_.get(), issuing_key_.get(), now - 60s,
                now + settings_.cmp_lifetime,
                {{"basicConstraints", "critical,CA:FALSE"},
                 {"keyUsage", "critical,digitalSignature"},
                 {"extendedKeyUsage", kCmcRaOid}}};
  auto cert = BuildCert(spec);
  if (!cert) return MakeError(cert.error().WithContext("creating CMP certificate"));
  auto leaf_pem = CertToPem(cert->get());
  if (!leaf_pem) return MakeError(leaf_pem.error());
  if (auto r = WritePrivateKeyFile(dir / "cmp.key", key->get()); !r) return MakeError(r.error());
  if (auto r = WriteFileAtomic(dir / "cmp.pem", *leaf_pem, kCertPerms); !r)
    return MakeError(r.error());
  cmp_cert_ = std::move(*cert);
  cmp_key_ = std::move(*key);
  return {};
}

Expected<X509Ptr> CertificateAuthority::IssueDeviceCertificate(
    EVP_PKEY* pub, const std::string& device_uuid, std::chrono::seconds lifetime,
    const std::string& machine_fingerprint) const {
  if (pub == nullptr) return MakeError(Errc::kInvalidArgument, "no public key");
  if (!IsUuid(device_uuid))
    return MakeError(Errc::kInvalidArgument, "device id is not a UUID: " + device_uuid);
  if (lifetime <= 0s) lifetime = settings_.device_lifetime;
  const TimePoint now = clock_.Now();
  TimePoint not_after = now + lifetime;
  // Never outlive the issuing CA.
  not_after = std::min(not_after, NotAfter(issuing_.get()));
  NamePtr name = MakeName(settings_.organisation, device_uuid);
  if (!name) return OsslError(Errc::kInternal, "device name");
  CertSpec spec{name.get(), pub, issuing_.get(), issuing_key_.get(), now - 60s, not_after,
                {{"basicConstraints", "critical,CA:FALSE"},
                 {"keyUsage", "critical,digitalSignature"},
                 {"extendedKeyUsage", "clientAuth"},
                 {"subjectAltName", std::string("URI:") + kDeviceUriPrefix + device_uuid}}};
  X509ExtensionPtr fingerprint_ext;
  if (!machine_fingerprint.empty()) {
    auto ext = MakeMachineFingerprintExtension(machine_fingerprint);
    if (!ext) return MakeError(ext.error());
    fingerprint_ext = std::move(*ext);
    spec.raw_extension = fingerprint_ext.get();
  }
  return BuildCert(spec);
}

Expected<X509Ptr> CertificateAuthority::IssueGrantCertificate(EVP_PKEY* pub,
                                                             const GrantClaims& claims) const {
  if (pub == nullptr) return MakeError(Errc::kInvalidArgument, "no public key");
  const TimePoint now = clock_.Now();
  if (claims.not_after <= now) {
    return MakeError(Errc::kFailedPrecondition, "grant " + claims.grant_id + " has ended");
  }
  if (claims.grant_id.find_first_of(",\n\r") != std::string::npos) {
    return MakeError(Errc::kInvalidArgument, "bad grant id");
  }
  auto ext = MakeGrantExtension(claims);
  if (!ext) return MakeError(ext.error());
  NamePtr name = MakeName(settings_.organisation, claims.user);
  if (!name) return OsslError(Errc::kInvalidArgument, "grant certificate name");
  CertSpec spec{name.get(), pub, issuing_.get(), issuing_key_.get(), now - 60s,
                std::min(claims.not_after, NotAfter(issuing_.get())),
                {{"basicConstraints", "critical,CA:FALSE"},
                 {"keyUsage", "critical,digitalSignature"},
                 {"extendedKeyUsage", "clientAuth"},
                 {"subjectAltName", std::string("URI:") + kGrantUriPrefix + claims.grant_id}}};
  spec.raw_extension = ext->get();
  return BuildCert(spec);
}

Expected<ServerCertificateFiles> CertificateAuthority::EnsureServerCertificate(
    const std::vector<std::string>& names) {
  if (names.empty()) return MakeError(Errc::kInvalidArgument, "server certificate needs names");
  std::lock_guard lock(files_mutex_);
  const fs::path& dir = settings_.dir;
  ServerCertificateFiles files{dir / "server.pem", dir / "server.key", false};
  const TimePoint now = clock_.Now();
  std::set<std::string> wanted;
  for (const auto& n : names) wanted.insert(NameKey(n));
  X509Ptr current;
  EvpPkeyPtr current_key;
  if (!NeedsReissue(files.cert_chain, files.key, issuing_.get(), now, settings_.renew_before,
                    &current, &current_key) &&
      PresentNameKeys(current.get()) == wanted) {
    return files;
  }
  std::string san;
  for (const auto& n : names) {
    if (n.empty() || n.find_first_of(",\n\r") != std::string::npos)
      return MakeError(Errc::kInvalidArgument, "bad server name '" + n + "'");
    if (!san.empty()) san += ",";
    san += (IsIpLiteral(n) ? "IP:" : "DNS:") + n;
  }
  auto key = GenerateP256Key();
  if (!key) return MakeError(key.error());
  NamePtr name = MakeName(settings_.organisation, names.front());
  if (!name) return OsslError(Errc::kInvalidArgument, "server name");
  CertSpec spec{name.get(), key->get(), issuing_.get(), issuing_key_.get(), now - 60s,
                std::min(now + settings_.server_lifetime, NotAfter(issuing_.get())),
                {{"basicConstraints", "critical,CA:FALSE"},
                 {"keyUsage", "critical,digitalSignature"},
                 {"extendedKeyUsage", "serverAuth"},
                 {"subjectAltName", san}}};
  auto cert = BuildCert(spec);
  if (!cert) return MakeError(cert.error().WithContext("creating server certificate"));
  auto leaf_pem = CertToPem(cert->get());
  auto issuing_pem = CertToPem(issuing_.get());
  if (!leaf_pem || !issuing_pem) return OsslError(Errc::kInternal, "encoding server chain");
  if (auto r = WritePrivateKeyFile(files.key, key->get()); !r) return MakeError(r.error());
  if (auto r = WriteFileAtomic(files.cert_chain, *leaf_pem + *issuing_pem, kCertPerms); !r)
    return MakeError(r.error());
  files.renewed = true;
  return files;
}

Expected<std::string> CertificateAuthority::MakeCrlDer(const std::vector<RevokedEntry>& revoked,
                                                       int64_t crl_number,
                                                       std::chrono::seconds validity) const {
  if (crl_number < 0) return MakeError(Errc::kInvalidArgument, "negative CRL number");
  if (validity <= 0s) return MakeError(Errc::kInvalidArgument, "CRL validity must be positive");
  X509CrlPtr crl(X509_CRL_new());
  if (!crl) return OsslError(Errc::kInternal, "X509_CRL_new");
  const TimePoint now = clock_.Now();
  ASN1_TIME* last = ASN1_TIME_new();
  ASN1_TIME* next = ASN1_TIME_new();
  bool ok = last != nullptr && next != nullptr && SetTime(last, now) &&
            SetTime(next, now + validity) && X509_CRL_set_version(crl.get(), 1) == 1 &&
            X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(issuing_.get())) == 1 &&
            X509_CRL_set1_lastUpdate(crl.get(), last) == 1 &&
            X509_CRL_set1_nextUpdate(crl.get(), next) == 1;
  ASN1_TIME_free(last);
  ASN1_TIME_free(next);
  if (!ok) return OsslError(Errc::kInternal, "building CRL");

  for (const auto& entry : revoked) {
    BIGNUM* bn = nullptr;
    if (entry.serial_hex.empty() || entry.serial_hex.size() > 64 ||
        BN_hex2bn(&bn, entry.serial_hex.c_str()) != static_cast<int>(entry.serial_hex.size())) {
      BN_free(bn);
      ERR_clear_error();
      return MakeError(Errc::kInvalidArgument, "bad serial '" + entry.serial_hex + "'");
    }
    ASN1_INTEGER* serial = BN_to_ASN1_INTEGER(bn, nullptr);
    BN_free(bn);
    X509_REVOKED* rev = X509_REVOKED_new();
    ASN1_TIME* when = ASN1_TIME_new();
    ok = serial != nullptr && rev != nullptr && when != nullptr &&
         X509_REVOKED_set_serialNumber(rev, serial) == 1 && SetTime(when, entry.revoked_at) &&
         X509_REVOKED_set_revocationDate(rev, when) == 1;
    if (ok && entry.reason > 0 && entry.reason <= 10 && entry.reason != 7) {
      ASN1_ENUMERATED* reason = ASN1_ENUMERATED_new();
      ok = reason != nullptr && ASN1_ENUMERATED_set(reason, entry.reason) == 1 &&
           X509_REVOKED_add1_ext_i2d(rev, NID_crl_reason, reason, 0, 0) == 1;
      ASN1_ENUMERATED_free(reason);
    }
    ASN1_INTEGER_free(serial);
    ASN1_TIME_free(when);
    if (ok && X509_CRL_add0_revoked(crl.get(), rev) == 1) continue;
    X509_REVOKED_free(rev);
    return OsslError(Errc::kInternal, "adding CRL entry");
  }

  ASN1_INTEGER* number = ASN1_INTEGER_new();
  ok = number != nullptr && ASN1_INTEGER_set_int64(number, crl_number) == 1 &&
       X509_CRL_add1_ext_i2d(crl.get(), NID_crl_number, number, 0, 0) == 1;
  ASN1_INTEGER_free(number);
  if (!ok) return OsslError(Errc::kInternal, "CRL number");
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuing_.get(), nullptr, nullptr, crl.get(), 0);
  X509_EXTENSION* aki =
      X509V3_EXT_conf_nid(nullptr, &ctx, NID_authority_key_identifier, "keyid:always");
  ok = aki != nullptr && X509_CRL_add_ext(crl.get(), aki, -1) == 1;
  X509_EXTENSION_free(aki);
  if (!ok) return OsslError(Errc::kInternal, "CRL authority key identifier");
  X509_CRL_sort(crl.get());
  if (X509_CRL_sign(crl.get(), issuing_key_.get(), EVP_sha256()) <= 0)
    return OsslError(Errc::kInternal, "signing CRL");
  unsigned char* der = nullptr;
  int len = i2d_X509_CRL(crl.get(), &der);
  if (len <= 0) return OsslError(Errc::kInternal, "encoding CRL");
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

Expected<DeviceIdentity> CertificateAuthority::VerifyDeviceCertificate(
    X509* leaf, const std::vector<X509*>& extra_chain) const {
  if (leaf == nullptr) return MakeError(Errc::kInvalidArgument, "no certificate");
  X509StorePtr store(X509_STORE_new());
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  auto cleanup = [&] {
    X509_STORE_CTX_free(ctx);
    sk_X509_free(untrusted);
  };
  bool ok = store && untrusted != nullptr && ctx != nullptr &&
            X509_STORE_add_cert(store.get(), root_.get()) == 1 &&
            sk_X509_push(untrusted, issuing_.get()) > 0;
  for (X509* c : extra_chain) ok = ok && c != nullptr && sk_X509_push(untrusted, c) > 0;
  ok = ok && X509_STORE_CTX_init(ctx, store.get(), leaf, untrusted) == 1;
  if (!ok) {
    cleanup();
    return OsslError(Errc::kInternal, "preparing certificate verification");
  }
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx);
  X509_VERIFY_PARAM_set_time(param, static_cast<time_t>(ToUnix(clock_.Now())));
  X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
  int verified = X509_verify_cert(ctx);
  int err = X509_STORE_CTX_get_error(ctx);
  STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(ctx);
  bool via_issuing = chain != nullptr && sk_X509_num(chain) == 3 &&
                     X509_cmp(sk_X509_value(chain, 1), issuing_.get()) == 0;
  cleanup();
  ERR_clear_error();
  if (verified != 1) {
    Errc code = err == X509_V_ERR_CERT_HAS_EXPIRED ? Errc::kExpired : Errc::kUnauthenticated;
    return MakeError(code, std::string("device certificate rejected: ") +
                               X509_verify_cert_error_string(err));
  }
  if (!via_issuing)
    return MakeError(Errc::kUnauthenticated, "device certificate not issued by our issuing CA");
  if (X509_check_ca(leaf) != 0)
    return MakeError(Errc::kUnauthenticated, "a CA certificate is not a device certificate");
  if ((X509_get_extension_flags(leaf) & EXFLAG_XKUSAGE) == 0 ||
      (X509_get_extended_key_usage(leaf) & XKU_SSL_CLIENT) == 0)
    return MakeError(Errc::kUnauthenticated, "device certificate lacks EKU clientAuth");
  DeviceIdentity id;
  id.uuid = SubjectCn(leaf);
  if (!IsUuid(id.uuid)) return MakeError(Errc::kUnauthenticated, "device CN is not a UUID");
  std::vector<std::string> uris = SanUris(leaf);
  if (uris.size() != 1 || uris[0] != kDeviceUriPrefix + id.uuid)
    return MakeError(Errc::kUnauthenticated, "device SAN URI does not match its CN");
  auto fp = MachineFingerprintOf(leaf);
  if (!fp) return MakeError(fp.error());
  id.fingerprint = std::move(*fp);
  id.serial = SerialHex(leaf);
  id.not_after = NotAfter(leaf);
  return id;
}

Expected<void> CertificateAuthority::ExportRootKey(const fs::path& dir, const fs::path& out_path) {
  const fs::path src = dir / "root.key";
  if (!Exists(src)) return MakeError(Errc::kNotFound, src.string() + " not found (already offline?)");
  if (Exists(out_path)) return MakeError(Errc::kAlreadyExists, out_path.string() + " exists");
  auto root = ReadCertFile(dir / "root.pem");
  if (!root) return MakeError(root.error());
  auto pem = ReadFile(src);
  if (!pem) return MakeError(pem.error());
  auto key = PrivateKeyFromPem(*pem);
  if (!key) return MakeError(key.error().WithContext(src.string()));
  if (!KeyMatches(root->get(), key->get()))
    return MakeError(Errc::kFailedPrecondition, "root.key does not match root.pem");
  auto written = WriteFileAtomic(out_path, *pem, kKeyPerms);
  OPENSSL_cleanse(pem->data(), pem->size());
  if (!written) return written;
  auto copy = ReadPrivateKeyFile(out_path);
  if (!copy || !KeyMatches(root->get(), copy->get()))
    return MakeError(Errc::kIo, "the exported copy does not read back; root.key kept");
  std::error_code ec;
  fs::remove(src, ec);
  if (ec) return MakeError(Errc::kIo, "removing " + src.string() + ": " + ec.message());
  return {};
}

Expected<void> CertificateAuthority::ImportIssuingCa(const fs::path& dir,
                                                     const fs::path& cert_pem_path,
                                                     const fs::path& key_pem_path) {
  auto root = ReadCertFile(dir / "root.pem");
  if (!root) return MakeError(root.error());
  auto cert = ReadCertFile(cert_pem_path);
  if (!cert) return MakeError(cert.error());
  auto key = ReadPrivateKeyFile(key_pem_path);
  if (!key) return MakeError(key.error());
  if (!KeyMatches(cert->get(), key->get()))
    return MakeError(Errc::kInvalidArgument, "issuing key does not match the certificate");
  if (!SignedBy(cert->get(), root->get()))
    return MakeError(Errc::kInvalidArgument, "issuing certificate is not signed by root.pem");
  if (X509_check_ca(cert->get()) == 0)
    return MakeError(Errc::kInvalidArgument, "issuing certificate is not a CA certificate");
  if (auto r = WritePrivateKeyFile(dir / "issuing.key", key->get()); !r) return r;
  if (auto r = WriteCert(dir / "issuing.pem", cert->get()); !r) return r;
  // Leaves from the old issuing CA are reissued by OpenOrCreate/EnsureServerCertificate.
  return {};
}

}  // namespace torwart::pki
