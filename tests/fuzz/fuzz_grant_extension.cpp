// Fuzzes the strict DER decoder of the grant-certificate extension (docs/design/
// grant-certificate.md): whatever decodes must re-encode to the same bytes (DER is canonical).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "torwart/pki/grant_extension.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto claims = torwart::pki::DecodeGrantClaims(in);
  if (claims) {
    auto again = torwart::pki::EncodeGrantClaims(*claims);
    if (!again || *again != in) std::abort();
  }
  return 0;
}
