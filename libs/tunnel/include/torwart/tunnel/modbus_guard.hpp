// The Modbus/TCP guard at the gateway (docs/design/tunnel.md): parses the technician's requests
// (MBAP header + PDU) and lets through only the function codes the grant's scopes allow:
//   modbus:read  → 1, 2, 3, 4 and 43 with MEI type 14 (read device identification)
//   modbus:write → the above plus 5, 6, 15, 16, 22, 23
//   no scopes    → the whole protocol (every function code; MBAP still checked)
// Anything else is answered by the guard with exception 01 (illegal function) for that
// transaction and unit, and the connection stays open. A malformed MBAP header (protocol id ≠ 0,
// length < 2 or > 254) closes the stream. Pure, no I/O; untrusted input (fuzz target
// tests/fuzz/fuzz_modbus_guard.cpp).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "torwart/tunnel/hooks.hpp"

namespace torwart::tunnel {

struct ModbusPolicy {
  bool read = false;   // modbus:read or modbus:write
  bool write = false;  // modbus:write
  bool all = false;    // no scopes: everything
};
// From a grant's scopes; unknown scopes grant nothing.
ModbusPolicy ModbusPolicyFromScopes(const std::vector<std::string>& scopes);
bool ModbusAllowed(const ModbusPolicy& p, uint8_t function, uint8_t mei_type);

std::unique_ptr<StreamFilter> MakeModbusGuard(ModbusPolicy p);

// Decoding for recordings: one Modbus/TCP ADU (request or response) as text, e.g.
// "tx 7 unit 1 read holding registers addr 0 count 4" or
// "tx 7 unit 1 response read holding registers values [1, 2, 3, 4]" or
// "tx 9 unit 1 exception 01 (illegal function) for write single register".
// `buf` may hold several ADUs; returns one line per ADU and how many bytes were consumed
// (partial ADUs are left for the next call).
struct ModbusDecoded {
  std::vector<std::string> lines;
  size_t consumed = 0;
  bool malformed = false;
};
ModbusDecoded DecodeModbus(std::string_view buf, bool from_target);

}  // namespace torwart::tunnel
