// Fuzzes the bounded DER walk that reads CMP header fields (senderKID, nonces, extraCerts, ...)
// before OpenSSL sees the message.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "torwart/pki/cmp_der.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  (void)torwart::pki::ParseCmpMessageFields(in);
  (void)torwart::pki::CertTemplatePublicKeyDer(in);
  (void)torwart::pki::PkiStatusFromDer(in);
  return 0;
}
