#include "totp.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <array>
#include <cctype>

namespace torwart::server::totp {
namespace {

constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

const char* HashName(Hash h) {
  switch (h) {
    case Hash::kSha256:
      return "SHA256";
    case Hash::kSha512:
      return "SHA512";
    case Hash::kSha1:
      break;
  }
  return "SHA1";
}

std::string PercentEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '@') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace

std::string Base32Encode(std::string_view bytes) {
  std::string out;
  uint32_t buffer = 0;
  int bits = 0;
  for (unsigned char c : bytes) {
    buffer = (buffer << 8) | c;
    bits += 8;
    while (bits >= 5) {
      out += kAlphabet[(buffer >> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += kAlphabet[(buffer << (5 - bits)) & 31];
  return out;
}

Expected<std::string> Base32Decode(std::string_view text) {
  std::string out;
  uint32_t buffer = 0;
  int bits = 0;
  for (char raw : text) {
    if (raw == ' ' || raw == '=' || raw == '-') continue;
    char c = static_cast<char>(std::toupper(static_cast<unsigned char>(raw)));
    auto pos = kAlphabet.find(c);
    if (pos == std::string_view::npos) {
      return MakeError(Errc::kInvalidArgument, "not a base32 secret (letters A-Z and digits 2-7)");
    }
    buffer = (buffer << 5) | static_cast<uint32_t>(pos);
    bits += 5;
    if (bits >= 8) {
      out += static_cast<char>((buffer >> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return out;
}

Expected<std::string> Hotp(std::string_view key, uint64_t counter, int digits, Hash hash) {
  if (digits < 6 || digits > 8) return MakeError(Errc::kInvalidArgument, "digits must be 6..8");
  unsigned char msg[8];
  for (int i = 7; i >= 0; --i) {
    msg[i] = static_cast<unsigned char>(counter & 0xff);
    counter >>= 8;
  }
  std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
  size_t len = 0;
  if (!EVP_Q_mac(nullptr, "HMAC", nullptr, HashName(hash), nullptr, key.data(), key.size(), msg,
                 sizeof msg, mac.data(), mac.size(), &len) ||
      len < 20) {
    return MakeError(Errc::kInternal, "HMAC failed");
  }
  // Dynamic truncation (RFC 4226 section 5.3).
  int offset = mac[len - 1] & 0x0f;
  uint32_t bin = (static_cast<uint32_t>(mac[offset] & 0x7f) << 24) |
                 (static_cast<uint32_t>(mac[offset + 1]) << 16) |
                 (static_cast<uint32_t>(mac[offset + 2]) << 8) | mac[offset + 3];
  uint32_t mod = 1;
  for (int i = 0; i < digits; ++i) mod *= 10;
  std::string code = std::to_string(bin % mod);
  return std::string(static_cast<size_t>(digits) - code.size(), '0') + code;
}

int64_t StepAt(TimePoint t, std::chrono::seconds period) {
  int64_t s = ToUnix(t);
  int64_t p = period.count() > 0 ? period.count() : 30;
  return s >= 0 ? s / p : -((-s + p - 1) / p);
}

Expected<std::string> CodeAt(std::string_view key, TimePoint t, const Params& p) {
  int64_t step = StepAt(t, p.period);
  if (step < 0) return MakeError(Errc::kInvalidArgument, "time before the Unix epoch");
  return Hotp(key, static_cast<uint64_t>(step), p.digits, p.hash);
}

std::optional<int64_t> Verify(std::string_view key, std::string_view code, TimePoint now,
                              int64_t last_used_step, const Params& p) {
  if (code.size() != static_cast<size_t>(p.digits)) return std::nullopt;
  for (char c : code) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  int64_t current = StepAt(now, p.period);
  std::optional<int64_t> match;
  // Check every step in the window (no early exit) so timing does not say which one matched.
  for (int64_t step = current - p.window; step <= current + p.window; ++step) {
    if (step < 0) continue;
    auto expected = Hotp(key, static_cast<uint64_t>(step), p.digits, p.hash);
    if (!expected) return std::nullopt;
    if (CRYPTO_memcmp(expected->data(), code.data(), code.size()) == 0 && !match) match = step;
  }
  if (!match || *match <= last_used_step) return std::nullopt;
  return match;
}

std::string Uri(std::string_view issuer, std::string_view account, std::string_view secret_b32,
                const Params& p) {
  std::string label = PercentEncode(issuer) + ":" + PercentEncode(account);
  return "otpauth://totp/" + label + "?secret=" + std::string(secret_b32) +
         "&issuer=" + PercentEncode(issuer) + "&algorithm=" + HashName(p.hash) +
         "&digits=" + std::to_string(p.digits) + "&period=" + std::to_string(p.period.count());
}

}  // namespace torwart::server::totp
