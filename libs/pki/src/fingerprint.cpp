// MachineFingerprint: SHA-256 over labelled, normalized machine identifiers.
#include "torwart/pki/fingerprint.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <fstream>
#include <optional>
#include <string_view>

#include "torwart/core/ids.hpp"

namespace torwart::pki {
namespace {

// The first line of a small file, trimmed; nullopt if unreadable.
std::optional<std::string> ReadValue(const std::string& path) {
  if (path.empty()) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::string line;
  line.resize(4096);
  in.read(line.data(), static_cast<std::streamsize>(line.size()));
  if (in.bad()) return std::nullopt;
  line.resize(static_cast<size_t>(in.gcount()));
  line = line.substr(0, line.find('\n'));
  auto space = [](unsigned char c) { return std::isspace(c) != 0 || c == '\0'; };
  while (!line.empty() && space(line.back())) line.pop_back();
  size_t start = 0;
  while (start < line.size() && space(line[start])) ++start;
  return line.substr(start);
}

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// Firmware fills DMI fields it does not know with placeholders shared by many machines.
bool IsPlaceholder(const std::string& value) {
  static constexpr std::array<std::string_view, 9> kPlaceholders = {"",
                                                                    "none",
                                                                    "not specified",
                                                                    "not applicable",
                                                                    "to be filled by o.e.m.",
                                                                    "default string",
                                                                    "system serial number",
                                                                    "0123456789",
                                                                    "n/a"};
  std::string lower = Lower(value);
  if (std::find(kPlaceholders.begin(), kPlaceholders.end(), lower) != kPlaceholders.end()) {
    return true;
  }
  // 00000000-0000-... and ffffffff-ffff-... UUIDs, "0", "000000".
  std::string digits;
  for (char c : lower) {
    if (c != '-') digits.push_back(c);
  }
  return digits.find_first_not_of('0') == std::string::npos ||
         digits.find_first_not_of('f') == std::string::npos;
}

}  // namespace

Expected<std::string> MachineFingerprint(const FingerprintSources& sources) {
  auto machine_id = ReadValue(sources.machine_id);
  if (!machine_id || machine_id->empty()) {
    return MakeError(Errc::kNotFound, "machine id " + sources.machine_id +
                                          " is missing or empty (run systemd-machine-id-setup)");
  }
  // Labelled fields, so moving a value from one source to another changes the result.
  std::string input = "torwart-machine-fingerprint-v1\nmachine-id=" + Lower(*machine_id) + "\n";
  if (auto uuid = ReadValue(sources.product_uuid); uuid && !IsPlaceholder(*uuid)) {
    input += "product-uuid=" + Lower(*uuid) + "\n";
  }
  if (auto serial = ReadValue(sources.product_serial); serial && !IsPlaceholder(*serial)) {
    input += "product-serial=" + *serial + "\n";
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(input.data(), input.size(), digest, &len, EVP_sha256(), nullptr) != 1) {
    return MakeError(Errc::kInternal, "SHA-256 failed");
  }
  return HexEncode(std::string_view(reinterpret_cast<const char*>(digest), len));
}

}  // namespace torwart::pki
