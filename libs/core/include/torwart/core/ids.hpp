// Identifiers, randomness and text encodings used across libraries. Thread-safe (stateless).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "torwart/core/error.hpp"

namespace torwart {

// Cryptographically secure random bytes from the kernel (getrandom). Aborts if the kernel fails.
std::string RandomBytes(size_t n);
// Random version-4 UUID, lowercase canonical text form.
std::string NewUuid();
bool IsUuid(std::string_view s);
// Random token of n random bytes in URL-safe base64 without padding.
std::string RandomToken(size_t n);

std::string HexEncode(std::string_view bytes);
Expected<std::string> HexDecode(std::string_view hex);
std::string Base64Encode(std::string_view bytes);
// Standard alphabet; ignores ASCII whitespace (CR/LF as in EST bodies); padding optional.
Expected<std::string> Base64Decode(std::string_view text);
std::string Base64UrlEncode(std::string_view bytes);

// Parses durations like "30s", "15m", "2h", "30d", "1h30m" or plain seconds "90".
Expected<std::chrono::seconds> ParseDuration(std::string_view text);
std::string FormatDuration(std::chrono::seconds d);

// Constant-time comparison for secrets.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace torwart
