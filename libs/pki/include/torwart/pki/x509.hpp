// Low-level OpenSSL helpers shared by the CA, CMP, EST and key-store code: RAII owners, key
// generation, PEM/DER conversion and certificate field accessors.
// Thread-safe: all functions are stateless (OpenSSL 3 is thread-safe for these operations).
#pragma once

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "torwart/core/clock.hpp"
#include "torwart/core/error.hpp"

namespace torwart::pki {

struct X509Deleter {
  void operator()(X509* p) const noexcept { X509_free(p); }
};
struct EvpPkeyDeleter {
  void operator()(EVP_PKEY* p) const noexcept { EVP_PKEY_free(p); }
};
struct X509ReqDeleter {
  void operator()(X509_REQ* p) const noexcept { X509_REQ_free(p); }
};
struct X509CrlDeleter {
  void operator()(X509_CRL* p) const noexcept { X509_CRL_free(p); }
};
struct X509StoreDeleter {
  void operator()(X509_STORE* p) const noexcept { X509_STORE_free(p); }
};
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyDeleter>;
using X509ReqPtr = std::unique_ptr<X509_REQ, X509ReqDeleter>;
using X509CrlPtr = std::unique_ptr<X509_CRL, X509CrlDeleter>;
using X509StorePtr = std::unique_ptr<X509_STORE, X509StoreDeleter>;

// Takes another reference on `cert` (X509_up_ref) and returns an owner of it.
X509Ptr UpRef(X509* cert);
EvpPkeyPtr UpRef(EVP_PKEY* key);

// Drains the thread's OpenSSL error queue into one line ("" if empty).
std::string OpenSslErrorString();

// A fresh ECDSA P-256 key pair.
Expected<EvpPkeyPtr> GenerateP256Key();

// Certificates.
Expected<X509Ptr> CertFromPem(std::string_view pem);
Expected<X509Ptr> CertFromDer(std::string_view der);
// All certificates in a PEM bundle, in order; error if there are none.
Expected<std::vector<X509Ptr>> CertsFromPem(std::string_view pem);
Expected<std::string> CertToPem(const X509* cert);
Expected<std::string> CertToDer(const X509* cert);

// Keys. Private keys in PEM are unencrypted PKCS#8.
Expected<EvpPkeyPtr> PrivateKeyFromPem(std::string_view pem);
Expected<std::string> PrivateKeyToPem(EVP_PKEY* key);
Expected<EvpPkeyPtr> PublicKeyFromPem(std::string_view pem);
Expected<std::string> PublicKeyToPem(EVP_PKEY* key);
// SubjectPublicKeyInfo DER.
Expected<std::string> PublicKeyToDer(EVP_PKEY* key);

// CSRs (PKCS#10).
Expected<X509ReqPtr> CsrFromPem(std::string_view pem);
Expected<X509ReqPtr> CsrFromDer(std::string_view der);
Expected<std::string> CsrToPem(const X509_REQ* req);
Expected<std::string> CsrToDer(const X509_REQ* req);

// One extension for MakeCsr: OpenSSL config syntax, e.g. {"subjectAltName", "URI:urn:x"}.
struct ExtensionSpec {
  std::string name;
  std::string value;
};
// A CSR with subject CN=`cn`, signed by `key` (SHA-256). Works with engine/provider keys.
Expected<X509ReqPtr> MakeCsr(EVP_PKEY* key, std::string_view cn,
                             const std::vector<ExtensionSpec>& extensions = {});

// Files. WriteFileAtomic writes to a temp file with `mode` and renames it over `path`.
Expected<std::string> ReadFile(const std::filesystem::path& path, size_t max_size = 1 << 20);
Expected<void> WriteFileAtomic(const std::filesystem::path& path, std::string_view data,
                               std::filesystem::perms mode);
// PEM private key written with mode 0600.
Expected<void> WritePrivateKeyFile(const std::filesystem::path& path, EVP_PKEY* key);
Expected<X509Ptr> ReadCertFile(const std::filesystem::path& path);
Expected<EvpPkeyPtr> ReadPrivateKeyFile(const std::filesystem::path& path);

// The private extension carrying a device's machine fingerprint (a UTF8String, non-critical).
inline constexpr char kMachineFingerprintOid[] = "2.25.78651378630191958022851039446016456102.1";
// NID of kMachineFingerprintOid, registered with OBJ_create on first use.
int MachineFingerprintNid();
struct X509ExtensionDeleter {
  void operator()(X509_EXTENSION* p) const noexcept { X509_EXTENSION_free(p); }
};
using X509ExtensionPtr = std::unique_ptr<X509_EXTENSION, X509ExtensionDeleter>;
Expected<X509ExtensionPtr> MakeMachineFingerprintExtension(std::string_view fingerprint);
// The fingerprint in `exts` ("" if absent); error if present but not a UTF8String.
Expected<std::string> MachineFingerprintFromExtensions(const STACK_OF(X509_EXTENSION) * exts);
Expected<std::string> MachineFingerprintOf(const X509* cert);

// Certificate fields.
// Serial number as lowercase hex without leading zeros ("0" for zero).
std::string SerialHex(const X509* cert);
std::string AsnIntegerHex(const ASN1_INTEGER* value);
TimePoint NotBefore(const X509* cert);
TimePoint NotAfter(const X509* cert);
TimePoint AsnTimeToTimePoint(const ASN1_TIME* t);
// First commonName of the subject, "" if none.
std::string SubjectCn(const X509* cert);
std::string SubjectOneLine(const X509* cert);
// All URI entries of subjectAltName.
std::vector<std::string> SanUris(const X509* cert);
// SHA-256 of the DER certificate, lowercase hex.
std::string CertSha256Hex(const X509* cert);

}  // namespace torwart::pki
