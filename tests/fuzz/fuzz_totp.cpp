// Fuzzes what a client controls in TOTP handling: the code string (login, mfa confirm) and, for
// robustness, base32 secrets. Must never crash; a decoded secret must re-encode canonically.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "totp.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace torwart;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto decoded = server::totp::Base32Decode(in);
  if (decoded) {
    auto again = server::totp::Base32Decode(server::totp::Base32Encode(*decoded));
    if (!again || *again != *decoded) __builtin_trap();
  }
  const std::string key = "12345678901234567890";
  auto step = server::totp::Verify(key, in, FromUnix(1795356412), -1);
  if (step && (*step < 1795356412 / 30 - 1 || *step > 1795356412 / 30 + 1)) __builtin_trap();
  return 0;
}
