// The gateway's persisted switches (docs/design/agent-tunnels.md): the on-site consent switch
// (<state-dir>/consent.json, written by `torwart-agent consent on|off`, plus the optional digital
// input named in site.toml) and the quarantine flag (<state-dir>/quarantine.json, set by the
// server's `quarantine` command). Small files written atomically; the Evaluate*/Parse* parts are
// pure (unit-tested). Thread-safe: no shared state; concurrent writers are the caller's concern.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "torwart/core/error.hpp"

namespace torwart::agent {

struct ConsentState {
  bool on = false;
  int64_t until = 0;       // Unix s of the switch (consent.json), 0 if none or in the past
  bool switch_on = false;  // consent.json says on now
  bool input_on = false;   // the digital input reads "1"
  std::string input;       // the input path (empty: none configured)
  std::string problem;     // e.g. an unreadable input or a corrupt consent.json (then: off)
};

// consent.json: {"v":1,"until":<unix s>,"set_at":<unix s>}. `consent_json` nullopt = no file;
// `input_value` nullopt = no input configured or unreadable. Consent is on when the switch's
// `until` is in the future or the input's first line is exactly "1" (GPIO "value" files).
ConsentState EvaluateConsent(const std::optional<std::string>& consent_json,
                             const std::optional<std::string>& input_value, int64_t now);
// Reads <state_dir>/consent.json and `input_path` (if set) and evaluates.
ConsentState ReadConsent(const std::string& state_dir, const std::string& input_path, int64_t now);
Expected<void> WriteConsentOn(const std::string& state_dir, int64_t until, int64_t now);
Expected<void> WriteConsentOff(const std::string& state_dir);

struct QuarantineState {
  bool on = false;
  std::string reason;
  int64_t since = 0;
};
// quarantine.json: {"v":1,"on":bool,"reason":"…","since":<unix s>}. A corrupt file counts as
// quarantined (fail closed), with the reason saying so.
QuarantineState ParseQuarantine(const std::optional<std::string>& text);
QuarantineState ReadQuarantine(const std::string& state_dir);
Expected<void> WriteQuarantine(const std::string& state_dir, const QuarantineState& q);

// Reads a small file (at most `max` bytes); nullopt if missing or unreadable.
std::optional<std::string> ReadSmallFile(const std::string& path, size_t max = 64 * 1024);

}  // namespace torwart::agent
