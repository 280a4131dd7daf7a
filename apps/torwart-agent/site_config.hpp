// The gateway's site configuration (docs/design/agent-tunnels.md): `<state-dir>/site.toml`, owned
// by the site operator, lists the targets this gateway may connect ([[target]]), where the
// on-site consent input is read ([consent]) and the stream limits ([streams]). Strict TOML via
// core's ConfigReader (unknown keys and bad values are errors with file:line:col). The agent
// re-reads it on every stream.open. Pure parsing plus one file read; thread-safe (no state).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "torwart/core/error.hpp"

namespace torwart::agent {

struct SiteTarget {
  std::string name;  // the target's name in the policy (what a grant names)
  std::string host;  // without brackets for IPv6
  uint16_t port = 0;
  std::string protocol;  // modbus | ssh | rdp | vnc | http | https | tcp
  bool consent = false;  // every stream to it needs on-site consent
  std::string site;      // optional: the grant's site must match
};

struct SiteConfig {
  bool present = false;  // false: no site.toml, nothing is allowed
  std::string source;    // the file it came from
  std::vector<SiteTarget> targets;
  std::string consent_input;  // file or GPIO value path; "1" = consent on; empty = none
  std::chrono::seconds idle_timeout{900};  // 0 = none
  uint64_t recording_quota = uint64_t{1} << 30;
  size_t max_streams = 16;

  const SiteTarget* Find(std::string_view name) const;
};

// Parses the text of a site.toml; all problems in one error, one per line, with positions.
Expected<SiteConfig> ParseSiteConfig(std::string_view text, const std::string& source);
// Reads `path`. A missing file is not an error: SiteConfig{present=false} (no targets).
Expected<SiteConfig> LoadSiteConfig(const std::string& path);

// "1GiB", "512MiB", "100MB", "64KiB", "1048576" (bytes). Decimal (kB, MB, GB, TB) and binary
// (KiB, MiB, GiB, TiB) units; at most 2^50 bytes.
Expected<uint64_t> ParseByteSize(std::string_view text);
std::string FormatByteSize(uint64_t bytes);
// "host:port", "[v6]:port"; port 1-65535, host non-empty without spaces or control characters.
Expected<std::pair<std::string, uint16_t>> ParseHostPort(std::string_view text);

}  // namespace torwart::agent
