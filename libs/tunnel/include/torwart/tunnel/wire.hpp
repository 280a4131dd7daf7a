// The relay's leg protocol (docs/design/tunnel.md): after the outer TLS handshake each leg sends
// one line, the relay answers one line, then the leg carries raw bytes (the inner TLS).
//   technician (CLI):  "TORWART/1 CONNECT\n"               (the grant is the TLS client cert)
//   gateway (agent):   "TORWART/1 ACCEPT <stream-id>\n"    (the device is the TLS client cert)
//   relay → both:      "OK <stream-id> <device-uuid>\n"    once the two legs are paired
//   relay → one leg:   "ERR <code> <text>\n"               then close
// Lines are ASCII without control characters, at most kMaxLine bytes including the '\n'.
// Pure, no I/O; the parsers see untrusted input (fuzz target tests/fuzz/fuzz_tunnel_wire.cpp).
#pragma once

#include <string>
#include <string_view>

#include "torwart/core/error.hpp"

namespace torwart::tunnel {

inline constexpr size_t kMaxLine = 1024;

struct Hello {
  enum class Kind { kConnect, kAccept } kind = Kind::kConnect;
  std::string stream_id;  // kAccept only: "st-" + 16 lowercase hex
};

struct Reply {
  bool ok = false;
  std::string stream_id, device_id;  // ok
  std::string code, message;         // !ok; code is one token, e.g. "forbidden"
};

// `line` without the trailing '\n'. kParse with a clear message on anything else.
Expected<Hello> ParseHello(std::string_view line);
Expected<Reply> ParseReply(std::string_view line);

// With the trailing '\n'. FormatErr replaces control characters and truncates to fit kMaxLine.
std::string FormatConnect();
std::string FormatAccept(std::string_view stream_id);
std::string FormatOk(std::string_view stream_id, std::string_view device_id);
std::string FormatErr(std::string_view code, std::string_view message);

bool IsStreamId(std::string_view s);  // "st-" + 16 lowercase hex
std::string NewStreamId();            // random (RAND_bytes)

}  // namespace torwart::tunnel
