// Time-based one-time passwords: HOTP (RFC 4226) and TOTP (RFC 6238) over OpenSSL's HMAC, plus
// the base32 (RFC 4648) secret encoding and the otpauth:// URI authenticator apps understand.
// Pure functions, no state: thread-safe. Replay protection is the caller's job (see auth.cpp:
// a verified step must be strictly greater than the last step the user consumed).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "torwart/core/clock.hpp"
#include "torwart/core/error.hpp"

namespace torwart::server::totp {

enum class Hash { kSha1, kSha256, kSha512 };

struct Params {
  Hash hash = Hash::kSha1;
  int digits = 6;                   // 6..8
  std::chrono::seconds period{30};  // the time step X of RFC 6238
  int window = 1;                   // accepted steps before and after the current one
};

// RFC 4648 base32 without padding (upper case). Decoding ignores case, spaces and '=' padding.
std::string Base32Encode(std::string_view bytes);
Expected<std::string> Base32Decode(std::string_view text);

// The HOTP value of `counter`, zero-padded to `digits`.
Expected<std::string> Hotp(std::string_view key, uint64_t counter, int digits = 6,
                           Hash hash = Hash::kSha1);

// The time step that contains `t` (floor((t - T0) / period), T0 = Unix epoch).
int64_t StepAt(TimePoint t, std::chrono::seconds period = std::chrono::seconds(30));

// The code for the step containing `t`.
Expected<std::string> CodeAt(std::string_view key, TimePoint t, const Params& p = {});

// Checks `code` against the steps around `now` (±window). Returns the matching step, or nullopt
// if no step matches or the matching step is <= `last_used_step` (a replay). The comparison does
// not leak which digits matched.
std::optional<int64_t> Verify(std::string_view key, std::string_view code, TimePoint now,
                              int64_t last_used_step, const Params& p = {});

// otpauth://totp/<issuer>:<account>?secret=...&issuer=...&algorithm=SHA1&digits=6&period=30
std::string Uri(std::string_view issuer, std::string_view account, std::string_view secret_b32,
                const Params& p = {});

}  // namespace torwart::server::totp
