// Fuzzes the text decoders of libs/core that see network input (base64 in EST bodies and HTTP
// basic auth, hex, durations and RFC 3339 times in API requests).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "torwart/core/clock.hpp"
#include "torwart/core/ids.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto b = torwart::Base64Decode(in);
  if (b) {
    auto again = torwart::Base64Decode(torwart::Base64Encode(*b));
    if (!again || *again != *b) __builtin_trap();  // round trip must hold
  }
  auto h = torwart::HexDecode(in);
  if (h && torwart::HexEncode(*h).size() != in.size()) __builtin_trap();
  (void)torwart::ParseDuration(in);
  torwart::TimePoint t;
  (void)torwart::ParseRfc3339(in, t);
  return 0;
}
