// Fuzzes EST request bodies: base64 (or PEM) PKCS#10 CSRs, and certs-only responses.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "torwart/pki/est.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  (void)torwart::pki::ParseEstCsr(in);
  (void)torwart::pki::DecodeCertsOnly(in);
  return 0;
}
