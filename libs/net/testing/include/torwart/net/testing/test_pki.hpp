// Throw-away PKI for tests: EC P-256 keys, a self-signed CA and leaf certificates, written as PEM
// into a temporary directory. Test-only (aborts on OpenSSL failure). Not thread-safe.
#pragma once

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>
#include <string>
#include <vector>

namespace torwart::net::testing {

struct EvpPkeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyDeleter>;
struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Deleter>;

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct Issued {
  EvpPkeyPtr key;
  X509Ptr cert;
  std::string key_pem;
  std::string cert_pem;  // this certificate only
  std::string der;       // DER of the certificate
  std::string key_file;
  std::string cert_file;
};

enum class Usage { kCa, kServer, kClient };

class TestCa {
 public:
  // Creates the CA and writes <dir>/<name>-ca.crt and .key.
  TestCa(std::string dir, std::string name);
  const Issued& ca() const { return ca_; }
  const std::string& cert_file() const { return ca_.cert_file; }

  // sans like {"IP:127.0.0.1", "DNS:localhost"}. Files: <dir>/<name>-<cn>.crt and .key.
  Issued Issue(const std::string& cn, const std::vector<std::string>& sans, Usage usage);

 private:
  std::string dir_;
  std::string name_;
  Issued ca_;
};

// Writes `content` to `path` (aborts on failure).
void WriteFile(const std::string& path, const std::string& content);

}  // namespace torwart::net::testing
