#include "torwart/net/testing/test_pki.hpp"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace torwart::net::testing {
namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "test_pki: %s failed\n", what);
    std::abort();
  }
}

std::string BioToString(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

void AddExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  Check(ext != nullptr, "X509V3_EXT_conf_nid");
  Check(X509_add_ext(cert, ext, -1) == 1, "X509_add_ext");
  X509_EXTENSION_free(ext);
}

Issued Make(const std::string& cn, const std::vector<std::string>& sans, Usage usage,
            const Issued* issuer, const std::string& file_base) {
  Issued out;
  out.key.reset(EVP_EC_gen("P-256"));
  Check(out.key != nullptr, "EVP_EC_gen");
  out.cert.reset(X509_new());
  X509* c = out.cert.get();
  Check(X509_set_version(c, 2) == 1, "X509_set_version");
  unsigned char serial[16];
  Check(RAND_bytes(serial, sizeof serial) == 1, "RAND_bytes");
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  Check(BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(c)) != nullptr, "serial");
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(c), -3600);
  X509_gmtime_adj(X509_getm_notAfter(c), 86400);
  X509_NAME* name = X509_get_subject_name(c);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("torwart test"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509* issuer_cert = issuer ? issuer->cert.get() : c;
  EVP_PKEY* issuer_key = issuer ? issuer->key.get() : out.key.get();
  Check(X509_set_issuer_name(c, X509_get_subject_name(issuer_cert)) == 1, "issuer");
  Check(X509_set_pubkey(c, out.key.get()) == 1, "X509_set_pubkey");
  AddExt(c, issuer_cert, NID_subject_key_identifier, "hash");
  if (issuer) AddExt(c, issuer_cert, NID_authority_key_identifier, "keyid");
  switch (usage) {
    case Usage::kCa:
      AddExt(c, issuer_cert, NID_basic_constraints, "critical,CA:TRUE");
      AddExt(c, issuer_cert, NID_key_usage, "critical,keyCertSign,cRLSign");
      break;
    case Usage::kServer:
      AddExt(c, issuer_cert, NID_basic_constraints, "critical,CA:FALSE");
      AddExt(c, issuer_cert, NID_key_usage, "critical,digitalSignature");
      AddExt(c, issuer_cert, NID_ext_key_usage, "serverAuth");
      break;
    case Usage::kClient:
      AddExt(c, issuer_cert, NID_basic_constraints, "critical,CA:FALSE");
      AddExt(c, issuer_cert, NID_key_usage, "critical,digitalSignature");
      AddExt(c, issuer_cert, NID_ext_key_usage, "clientAuth");
      break;
  }
  if (!sans.empty()) {
    std::string v;
    for (const auto& s : sans) v += (v.empty() ? "" : ",") + s;
    AddExt(c, issuer_cert, NID_subject_alt_name, v);
  }
  Check(X509_sign(c, issuer_key, EVP_sha256()) > 0, "X509_sign");

  BIO* bio = BIO_new(BIO_s_mem());
  Check(PEM_write_bio_X509(bio, c) == 1, "PEM_write_bio_X509");
  out.cert_pem = BioToString(bio);
  BIO_free(bio);
  bio = BIO_new(BIO_s_mem());
  Check(PEM_write_bio_PrivateKey(bio, out.key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1,
        "PEM_write_bio_PrivateKey");
  out.key_pem = BioToString(bio);
  BIO_free(bio);
  unsigned char* der = nullptr;
  int n = i2d_X509(c, &der);
  Check(n > 0, "i2d_X509");
  out.der.assign(reinterpret_cast<char*>(der), static_cast<size_t>(n));
  OPENSSL_free(der);

  out.cert_file = file_base + ".crt";
  out.key_file = file_base + ".key";
  WriteFile(out.cert_file, out.cert_pem);
  WriteFile(out.key_file, out.key_pem);
  return out;
}

}  // namespace

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << content;
  f.close();
  Check(f.good(), "writing a test file");
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/torwart-test-XXXXXX";
  Check(mkdtemp(tmpl.data()) != nullptr, "mkdtemp");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

TestCa::TestCa(std::string dir, std::string name) : dir_(std::move(dir)), name_(std::move(name)) {
  ca_ = Make(name_ + " CA", {}, Usage::kCa, nullptr, dir_ + "/" + name_ + "-ca");
}

Issued TestCa::Issue(const std::string& cn, const std::vector<std::string>& sans, Usage usage) {
  return Make(cn, sans, usage, &ca_, dir_ + "/" + name_ + "-" + cn);
}

}  // namespace torwart::net::testing
