// Syslog forms of an audit event: RFC 5424 messages (facility "log audit", structured data with
// the chain fields) and RFC 5425/6587 octet-counting frames for TLS transport. Pure functions.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "torwart/audit/event.hpp"

namespace torwart::audit {

struct SyslogOptions {
  std::string hostname = "-";   // printable US-ASCII, at most 255 characters
  std::string app_name = "torwartd";
  // SD-ID of our structured data: name@private-enterprise-number. 32473 is the example number
  // of RFC 5612; a deployment may set its own.
  std::string sd_id = "torwart@32473";
};

// "<PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID [SD] BOM{json}". PRI: facility 13 (log audit);
// severity info for success, warning for failure and denied.
std::string FormatRfc5424(const Event& e, const SyslogOptions& o);
// "LEN SP MSG" (RFC 5425 section 4.3).
std::string FrameOctetCounted(std::string_view message);
// Parses one octet-counted frame at the start of `in`; returns the message and sets `consumed`.
// nullopt if incomplete or malformed (`malformed` tells which). For tests and tools.
std::optional<std::string> ParseOctetCounted(std::string_view in, size_t& consumed,
                                             bool& malformed);

}  // namespace torwart::audit
