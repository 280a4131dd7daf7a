// Low-level OpenSSL helpers; see x509.hpp.
#include "torwart/pki/x509.hpp"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <limits>
#include <mutex>

#include "torwart/core/ids.hpp"

namespace torwart::pki {
namespace {

struct BioDeleter {
  void operator()(BIO* b) const noexcept { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

BioPtr MemIn(std::string_view data) {
  if (data.size() > static_cast<size_t>(std::numeric_limits<int>::max())) return nullptr;
  return BioPtr(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

std::string BioToString(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return len > 0 ? std::string(data, static_cast<size_t>(len)) : std::string();
}

Unexpected OsslError(Errc code, std::string_view what) {
  std::string detail = OpenSslErrorString();
  std::string msg(what);
  if (!detail.empty()) msg += ": " + detail;
  return MakeError(code, std::move(msg));
}

template <class T, class F>
Expected<std::string> ToDer(const T* obj, F i2d, std::string_view what) {
  if (obj == nullptr) return MakeError(Errc::kInvalidArgument, std::string(what) + ": null");
  unsigned char* out = nullptr;
  int len = i2d(obj, &out);
  if (len <= 0) return OsslError(Errc::kInternal, what);
  std::string der(reinterpret_cast<char*>(out), static_cast<size_t>(len));
  OPENSSL_free(out);
  return der;
}

}  // namespace

X509Ptr UpRef(X509* cert) {
  if (cert == nullptr || X509_up_ref(cert) != 1) return nullptr;
  return X509Ptr(cert);
}

EvpPkeyPtr UpRef(EVP_PKEY* key) {
  if (key == nullptr || EVP_PKEY_up_ref(key) != 1) return nullptr;
  return EvpPkeyPtr(key);
}

std::string OpenSslErrorString() {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

Expected<EvpPkeyPtr> GenerateP256Key() {
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return OsslError(Errc::kInternal, "generating P-256 key");
  return key;
}

Expected<X509Ptr> CertFromPem(std::string_view pem) {
  BioPtr bio = MemIn(pem);
  if (!bio) return MakeError(Errc::kResourceExhausted, "certificate PEM too large");
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return OsslError(Errc::kParse, "parsing certificate PEM");
  return cert;
}

Expected<X509Ptr> CertFromDer(std::string_view der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  if (der.size() > static_cast<size_t>(std::numeric_limits<long>::max()))
    return MakeError(Errc::kResourceExhausted, "certificate DER too large");
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert) return OsslError(Errc::kParse, "parsing certificate DER");
  return cert;
}

Expected<std::vector<X509Ptr>> CertsFromPem(std::string_view pem) {
  BioPtr bio = MemIn(pem);
  if (!bio) return MakeError(Errc::kResourceExhausted, "certificate PEM too large");
  std::vector<X509Ptr> out;
  while (X509* c = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    out.emplace_back(c);
  }
  ERR_clear_error();  // the loop ends with a "no start line" error
  if (out.empty()) return MakeError(Errc::kParse, "no certificate in PEM");
  return out;
}

Expected<std::string> CertToPem(const X509* cert) {
  if (cert == nullptr) return MakeError(Errc::kInvalidArgument, "null certificate");
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1)
    return OsslError(Errc::kInternal, "writing certificate PEM");
  return BioToString(bio.get());
}

Expected<std::string> CertToDer(const X509* cert) {
  return ToDer(cert, i2d_X509, "encoding certificate");
}

Expected<EvpPkeyPtr> PrivateKeyFromPem(std::string_view pem) {
  BioPtr bio = MemIn(pem);
  if (!bio) return MakeError(Errc::kResourceExhausted, "key PEM too large");
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return OsslError(Errc::kParse, "parsing private key PEM");
  return key;
}

Expected<std::string> PrivateKeyToPem(EVP_PKEY* key) {
  if (key == nullptr) return MakeError(Errc::kInvalidArgument, "null key");
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return OsslError(Errc::kInternal, "writing private key PEM");
  return BioToString(bio.get());
}

Expected<EvpPkeyPtr> PublicKeyFromPem(std::string_view pem) {
  BioPtr bio = MemIn(pem);
  if (!bio) return MakeError(Errc::kResourceExhausted, "key PEM too large");
  EvpPkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return OsslError(Errc::kParse, "parsing public key PEM");
  return key;
}

Expected<std::string> PublicKeyToPem(EVP_PKEY* key) {
  if (key == nullptr) return MakeError(Errc::kInvalidArgument, "null key");
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key) != 1)
    return OsslError(Errc::kInternal, "writing public key PEM");
  return BioToString(bio.get());
}

Expected<std::string> PublicKeyToDer(EVP_PKEY* key) {
  return ToDer(static_cast<const EVP_PKEY*>(key), i2d_PUBKEY, "encoding public key");
}

Expected<X509ReqPtr> CsrFromPem(std::string_view pem) {
  BioPtr bio = MemIn(pem);
  if (!bio) return MakeError(Errc::kResourceExhausted, "CSR PEM too large");
  X509ReqPtr req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!req) return OsslError(Errc::kParse, "parsing CSR PEM");
  return req;
}

Expected<X509ReqPtr> CsrFromDer(std::string_view der) {
  if (der.size() > static_cast<size_t>(std::numeric_limits<long>::max()))
    return MakeError(Errc::kResourceExhausted, "CSR DER too large");
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  X509ReqPtr req(d2i_X509_REQ(nullptr, &p, static_cast<long>(der.size())));
  if (!req) return OsslError(Errc::kParse, "parsing CSR DER");
  if (p != reinterpret_cast<const unsigned char*>(der.data()) + der.size())
    return MakeError(Errc::kParse, "trailing bytes after CSR");
  return req;
}

Expected<std::string> CsrToPem(const X509_REQ* req) {
  if (req == nullptr) return MakeError(Errc::kInvalidArgument, "null CSR");
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509_REQ(bio.get(), req) != 1)
    return OsslError(Errc::kInternal, "writing CSR PEM");
  return BioToString(bio.get());
}

Expected<std::string> CsrToDer(const X509_REQ* req) {
  return ToDer(req, i2d_X509_REQ, "encoding CSR");
}

Expected<X509ReqPtr> MakeCsr(EVP_PKEY* key, std::string_view cn,
                             const std::vector<ExtensionSpec>& extensions) {
  if (key == nullptr) return MakeError(Errc::kInvalidArgument, "MakeCsr: null key");
  X509ReqPtr req(X509_REQ_new());
  if (!req) return OsslError(Errc::kInternal, "X509_REQ_new");
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  if (X509_REQ_set_version(req.get(), 0) != 1 ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(cn.data()),
                                 static_cast<int>(cn.size()), -1, 0) != 1 ||
      X509_REQ_set_pubkey(req.get(), key) != 1) {
    return OsslError(Errc::kInvalidArgument, "building CSR");
  }
  if (!extensions.empty()) {
    STACK_OF(X509_EXTENSION)* exts = sk_X509_EXTENSION_new_null();
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, nullptr, nullptr, req.get(), nullptr, 0);
    bool ok = exts != nullptr;
    for (const auto& spec : extensions) {
      if (!ok) break;
      X509_EXTENSION* ext =
          X509V3_EXT_conf(nullptr, &ctx, spec.name.c_str(), spec.value.c_str());
      ok = ext != nullptr && sk_X509_EXTENSION_push(exts, ext) > 0;
      if (!ok && ext != nullptr) X509_EXTENSION_free(ext);
    }
    if (ok) ok = X509_REQ_add_extensions(req.get(), exts) == 1;
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    if (!ok) return OsslError(Errc::kInvalidArgument, "adding CSR extensions");
  }
  if (X509_REQ_sign(req.get(), key, EVP_sha256()) <= 0)
    return OsslError(Errc::kInternal, "signing CSR");
  return req;
}

Expected<std::string> ReadFile(const std::filesystem::path& path, size_t max_size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return MakeError(Errc::kNotFound, "cannot open " + path.string());
  std::string data;
  char buf[8192];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    data.append(buf, static_cast<size_t>(in.gcount()));
    if (data.size() > max_size)
      return MakeError(Errc::kResourceExhausted, path.string() + " is too large");
  }
  if (in.bad()) return MakeError(Errc::kIo, "reading " + path.string());
  return data;
}

Expected<void> WriteFileAtomic(const std::filesystem::path& path, std::string_view data,
                               std::filesystem::perms mode) {
  std::filesystem::path tmp = path;
  tmp += ".tmp." + RandomToken(6);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                  static_cast<mode_t>(mode) & 0777);
  if (fd < 0) return MakeError(Errc::kIo, "creating " + tmp.string() + ": " + std::strerror(errno));
  // The umask may have narrowed the mode; set it exactly.
  bool ok = ::fchmod(fd, static_cast<mode_t>(mode) & 0777) == 0;
  size_t off = 0;
  while (ok && off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) off += static_cast<size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  int saved = errno;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    if (ok) saved = errno;
    ::unlink(tmp.c_str());
    return MakeError(Errc::kIo, "writing " + path.string() + ": " + std::strerror(saved));
  }
  return {};
}

Expected<void> WritePrivateKeyFile(const std::filesystem::path& path, EVP_PKEY* key) {
  auto pem = PrivateKeyToPem(key);
  if (!pem) return MakeError(pem.error());
  return WriteFileAtomic(path, *pem,
                         std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
}

Expected<X509Ptr> ReadCertFile(const std::filesystem::path& path) {
  auto pem = ReadFile(path);
  if (!pem) return MakeError(pem.error());
  auto cert = CertFromPem(*pem);
  if (!cert) return MakeError(cert.error().WithContext(path.string()));
  return cert;
}

Expected<EvpPkeyPtr> ReadPrivateKeyFile(const std::filesystem::path& path) {
  auto pem = ReadFile(path);
  if (!pem) return MakeError(pem.error());
  auto key = PrivateKeyFromPem(*pem);
  OPENSSL_cleanse(pem->data(), pem->size());
  if (!key) return MakeError(key.error().WithContext(path.string()));
  return key;
}

int MachineFingerprintNid() {
  static std::once_flag once;
  static int nid = NID_undef;
  std::call_once(once, [] {
    nid = OBJ_txt2nid(kMachineFingerprintOid);
    if (nid == NID_undef) {
      nid = OBJ_create(kMachineFingerprintOid, "torwartMachineFingerprint",
                       "torwart machine fingerprint");
    }
  });
  return nid;
}

Expected<X509ExtensionPtr> MakeMachineFingerprintExtension(std::string_view fingerprint) {
  if (fingerprint.size() > 1024)
    return MakeError(Errc::kInvalidArgument, "machine fingerprint longer than 1024 bytes");
  ASN1_UTF8STRING* str = ASN1_UTF8STRING_new();
  if (str == nullptr ||
      ASN1_STRING_set(str, fingerprint.data(), static_cast<int>(fingerprint.size())) != 1) {
    ASN1_UTF8STRING_free(str);
    return OsslError(Errc::kInternal, "encoding machine fingerprint");
  }
  X509ExtensionPtr ext(X509V3_EXT_i2d(MachineFingerprintNid(), 0, str));
  if (!ext) {
    // X509V3_EXT_i2d only knows registered methods; encode by hand.
    unsigned char* der = nullptr;
    int len = i2d_ASN1_UTF8STRING(str, &der);
    ASN1_OCTET_STRING* os = ASN1_OCTET_STRING_new();
    if (len > 0 && os != nullptr && ASN1_OCTET_STRING_set(os, der, len) == 1) {
      ext.reset(X509_EXTENSION_create_by_NID(nullptr, MachineFingerprintNid(), 0, os));
    }
    ASN1_OCTET_STRING_free(os);
    OPENSSL_free(der);
    ERR_clear_error();
  }
  ASN1_UTF8STRING_free(str);
  if (!ext) return OsslError(Errc::kInternal, "building machine fingerprint extension");
  return ext;
}

Expected<std::string> MachineFingerprintFromExtensions(const STACK_OF(X509_EXTENSION) * exts) {
  if (exts == nullptr) return std::string();
  const ASN1_OBJECT* obj = OBJ_nid2obj(MachineFingerprintNid());
  int idx = X509v3_get_ext_by_OBJ(exts, obj, -1);
  if (idx < 0) return std::string();
  const ASN1_OCTET_STRING* data = X509_EXTENSION_get_data(X509v3_get_ext(exts, idx));
  const unsigned char* p = ASN1_STRING_get0_data(data);
  long len = ASN1_STRING_length(data);
  ASN1_UTF8STRING* str = d2i_ASN1_UTF8STRING(nullptr, &p, len);
  if (str == nullptr || p != ASN1_STRING_get0_data(data) + len) {
    ASN1_UTF8STRING_free(str);
    ERR_clear_error();
    return MakeError(Errc::kParse, "machine fingerprint extension is not a UTF8String");
  }
  std::string out(reinterpret_cast<const char*>(ASN1_STRING_get0_data(str)),
                  static_cast<size_t>(ASN1_STRING_length(str)));
  ASN1_UTF8STRING_free(str);
  return out;
}

Expected<std::string> MachineFingerprintOf(const X509* cert) {
  if (cert == nullptr) return MakeError(Errc::kInvalidArgument, "null certificate");
  return MachineFingerprintFromExtensions(X509_get0_extensions(cert));
}

std::string SerialHex(const X509* cert) {
  if (cert == nullptr) return {};
  return AsnIntegerHex(X509_get0_serialNumber(cert));
}

std::string AsnIntegerHex(const ASN1_INTEGER* serial) {
  if (serial == nullptr) return {};
  BIGNUM* bn = ASN1_INTEGER_to_BN(serial, nullptr);
  if (bn == nullptr) return {};
  std::string out;
  if (BN_is_zero(bn)) {
    out = "0";
  } else if (char* hex = BN_bn2hex(bn)) {
    out = hex;
    OPENSSL_free(hex);
  }
  BN_free(bn);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  size_t nz = out.find_first_not_of('0');
  if (nz == std::string::npos) return "0";
  return out.substr(nz);
}

TimePoint AsnTimeToTimePoint(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return TimePoint{};
  return FromUnix(static_cast<int64_t>(timegm(&tm)));
}

TimePoint NotBefore(const X509* cert) {
  return cert ? AsnTimeToTimePoint(X509_get0_notBefore(cert)) : TimePoint{};
}

TimePoint NotAfter(const X509* cert) {
  return cert ? AsnTimeToTimePoint(X509_get0_notAfter(cert)) : TimePoint{};
}

std::string SubjectCn(const X509* cert) {
  if (cert == nullptr) return {};
  const X509_NAME* name = X509_get_subject_name(cert);
  int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (idx < 0) return {};
  const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, data);
  if (len < 0) return {};
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

std::string SubjectOneLine(const X509* cert) {
  if (cert == nullptr) return {};
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio) return {};
  X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_ONELINE);
  return BioToString(bio.get());
}

std::vector<std::string> SanUris(const X509* cert) {
  std::vector<std::string> out;
  if (cert == nullptr) return out;
  auto* names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
    if (gn->type != GEN_URI) continue;
    const ASN1_IA5STRING* s = gn->d.uniformResourceIdentifier;
    out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<size_t>(ASN1_STRING_length(s)));
  }
  GENERAL_NAMES_free(names);
  return out;
}

std::string CertSha256Hex(const X509* cert) {
  if (cert == nullptr) return {};
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &len) != 1) return {};
  return HexEncode(std::string_view(reinterpret_cast<char*>(md), len));
}

}  // namespace torwart::pki
