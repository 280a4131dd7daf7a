// Pure helpers of `torwart connect` (cmd_connect.cpp): the relay address, the gateway identity
// check of the inner TLS, and what to print. No I/O; thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "torwart/core/error.hpp"

namespace torwart::cli {

struct HostPort {
  std::string host;  // without brackets
  uint16_t port = 0;
};

// "tls://host:port" or "tls://[v6]:port" (the relay_url of /.well-known/torwart/agent.json).
std::optional<HostPort> ParseRelayUrl(const std::string& url);

// The inner TLS server must be the device the relay named (its chain is already verified against
// our CA by the inner context): a device certificate (CN = UUID, SAN urn:torwart:device:<uuid>,
// EKU clientAuth) for `device_id`; if `expected_device` is set, also exactly that device.
Expected<void> VerifyGateway(const std::string& leaf_der, const std::string& device_id,
                             const std::string& expected_device);

// "[::1]" for IPv6 literals, else the host as is.
std::string HostForUrl(const std::string& host);
// How to use the local port for a target protocol (first line: the command; more: notes).
std::vector<std::string> UsageLines(const std::string& protocol, const std::string& host,
                                    uint16_t port);
// "45s", "42m", "2h5m".
std::string HumanLeft(std::chrono::seconds left);
// Replaces every "{port}" and "{host}".
std::string Substitute(std::string cmd, const std::string& host, const std::string& port);

}  // namespace torwart::cli
