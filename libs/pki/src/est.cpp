// EST codec; see est.hpp.
#include "torwart/pki/est.hpp"

#include <openssl/err.h>
#include <openssl/pkcs7.h>

#include <limits>

#include "torwart/core/ids.hpp"

namespace torwart::pki {
namespace {

struct Pkcs7Deleter {
  void operator()(PKCS7* p) const noexcept { PKCS7_free(p); }
};
using Pkcs7Ptr = std::unique_ptr<PKCS7, Pkcs7Deleter>;

std::string_view StripPemArmour(std::string_view body, std::string_view label) {
  std::string begin = "-----BEGIN " + std::string(label) + "-----";
  std::string end = "-----END " + std::string(label) + "-----";
  size_t b = body.find(begin);
  if (b == std::string_view::npos) return body;
  size_t e = body.find(end, b);
  if (e == std::string_view::npos) return body;
  return body.substr(b + begin.size(), e - b - begin.size());
}

}  // namespace

Expected<X509ReqPtr> ParseEstCsr(std::string_view body) {
  if (body.size() > kEstMaxCsrBody)
    return MakeError(Errc::kResourceExhausted, "EST request body too large");
  body = StripPemArmour(body, "CERTIFICATE REQUEST");
  auto der = Base64Decode(body);
  if (!der) return MakeError(Errc::kParse, "EST request body is not base64");
  auto req = CsrFromDer(*der);
  if (!req) return MakeError(req.error());
  EVP_PKEY* key = X509_REQ_get0_pubkey(req->get());
  if (key == nullptr || X509_REQ_verify(req->get(), key) != 1) {
    ERR_clear_error();
    return MakeError(Errc::kUnauthenticated, "CSR self-signature does not verify");
  }
  return req;
}

Expected<std::string> EncodeCertsOnly(const std::vector<X509*>& certs) {
  Pkcs7Ptr p7(PKCS7_new());
  bool ok = p7 && PKCS7_set_type(p7.get(), NID_pkcs7_signed) == 1 &&
            PKCS7_content_new(p7.get(), NID_pkcs7_data) == 1;
  for (X509* c : certs) ok = ok && c != nullptr && PKCS7_add_certificate(p7.get(), c) == 1;
  if (!ok) {
    ERR_clear_error();
    return MakeError(Errc::kInternal, "building certs-only PKCS#7");
  }
  unsigned char* der = nullptr;
  int len = i2d_PKCS7(p7.get(), &der);
  if (len <= 0) return MakeError(Errc::kInternal, "encoding PKCS#7");
  std::string b64 = Base64Encode(std::string_view(reinterpret_cast<char*>(der),
                                                  static_cast<size_t>(len)));
  OPENSSL_free(der);
  std::string out;
  out.reserve(b64.size() + b64.size() / 32 + 2);
  for (size_t i = 0; i < b64.size(); i += 64) {
    out.append(b64, i, 64);
    out += "\n";  // LF, not CRLF: `curl ... | base64 -d` must work (RFC 8951 allows either)
  }
  return out;
}

Expected<std::vector<X509Ptr>> DecodeCertsOnly(std::string_view body) {
  if (body.size() > (1 << 20)) return MakeError(Errc::kResourceExhausted, "PKCS#7 too large");
  auto der = Base64Decode(StripPemArmour(body, "PKCS7"));
  if (!der) return MakeError(Errc::kParse, "PKCS#7 body is not base64");
  const auto* p = reinterpret_cast<const unsigned char*>(der->data());
  Pkcs7Ptr p7(d2i_PKCS7(nullptr, &p, static_cast<long>(der->size())));
  if (!p7 || PKCS7_type_is_signed(p7.get()) == 0 || p7->d.sign == nullptr) {
    ERR_clear_error();
    return MakeError(Errc::kParse, "not a PKCS#7 signedData");
  }
  std::vector<X509Ptr> out;
  STACK_OF(X509)* certs = p7->d.sign->cert;
  for (int i = 0; certs != nullptr && i < sk_X509_num(certs); ++i)
    out.push_back(UpRef(sk_X509_value(certs, i)));
  return out;
}

}  // namespace torwart::pki
