// The torwart Mosquitto plugin's pure core: the state file torwartd writes (which certificates
// may connect, which certificate is torwartd's own), and the per-device topic rules.
// No Mosquitto or I/O here, so it is unit-tested and fuzzed on its own. Not thread-safe by itself
// (the broker calls the plugin from its single main thread).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

namespace torwart::broker_plugin {

// One certificate that may connect on the device listener.
struct AllowedCert {
  std::string uuid;       // the device UUID (certificate CN and SAN URI)
  int64_t not_after = 0;  // Unix seconds
};

struct State {
  int64_t generated = 0;                                // Unix seconds, when torwartd wrote it
  std::unordered_map<std::string, AllowedCert> certs;   // key: NormalizeSerial(serial)
  std::unordered_set<std::string> server_fingerprints;  // SHA-256 of DER, lowercase hex
};

// Parses the state file (format in docs/design/control-channel.md). Strict: any malformed line,
// a missing header or a missing final "end" line is an error (a half-written file is never
// taken for a smaller allowlist). On error `out` is untouched and `error` says why.
bool ParseState(std::string_view text, State& out, std::string& error);

// Serializes a state in the same format (torwartd uses it; the tests round-trip).
std::string FormatState(const State& s);

// Lowercase hex without leading zeros ("00AB" -> "ab", "0" -> "0"); "" if not hex.
std::string NormalizeSerial(std::string_view hex);

// True if `s` is a canonical lowercase UUID (8-4-4-4-12).
bool IsLowerUuid(std::string_view s);

// Access bits as in mosquitto_plugin.h (MOSQ_ACL_READ, _WRITE, _SUBSCRIBE, _UNSUBSCRIBE).
inline constexpr int kAclRead = 0x01;
inline constexpr int kAclWrite = 0x02;
inline constexpr int kAclSubscribe = 0x04;
inline constexpr int kAclUnsubscribe = 0x08;

// The device topic rules: device `uuid` may write
// torwart/d/<uuid>/{status,inventory,health,res,event},
// may subscribe to and read exactly torwart/d/<uuid>/cmd, may unsubscribe from anything (it
// only loses access), and nothing else.
bool DeviceMayAccess(std::string_view uuid, std::string_view topic, int access);

}  // namespace torwart::broker_plugin
