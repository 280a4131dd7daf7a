// The Modbus/TCP guard and decoder. Framing: MBAP header (transaction id, protocol id = 0,
// length = unit id + PDU, unit id) followed by the PDU (function code + data), all big-endian.
// Both the guard and the decoder bound their work by the MBAP length (at most 260 bytes per ADU).
#include "torwart/tunnel/modbus_guard.hpp"

#include <cstdio>

namespace torwart::tunnel {
namespace {

constexpr size_t kMbapSize = 7;       // header including the unit id
constexpr size_t kMaxAdu = 6 + 254;   // 6 header bytes + the largest length field
constexpr uint8_t kMeiDeviceId = 14;  // FC 43 / MEI type 14: read device identification
constexpr uint8_t kIllegalFunction = 0x01;

uint16_t U16(std::string_view s, size_t at) {
  return static_cast<uint16_t>((static_cast<uint8_t>(s[at]) << 8) |
                               static_cast<uint8_t>(s[at + 1]));
}
uint8_t U8(std::string_view s, size_t at) { return static_cast<uint8_t>(s[at]); }

constexpr struct {
  uint8_t code;
  std::string_view name;
} kFunctionNames[] = {
    {1, "read coils"},
    {2, "read discrete inputs"},
    {3, "read holding registers"},
    {4, "read input registers"},
    {5, "write single coil"},
    {6, "write single register"},
    {7, "read exception status"},
    {8, "diagnostics"},
    {11, "get comm event counter"},
    {12, "get comm event log"},
    {15, "write multiple coils"},
    {16, "write multiple registers"},
    {17, "report server id"},
    {20, "read file record"},
    {21, "write file record"},
    {22, "mask write register"},
    {23, "read/write multiple registers"},
    {24, "read fifo queue"},
    {43, "encapsulated interface transport"},
};

std::string_view FunctionName(uint8_t fc) {
  for (const auto& e : kFunctionNames) {
    if (e.code == fc) return e.name;
  }
  return {};
}

constexpr struct {
  uint8_t code;
  std::string_view name;
} kExceptionNames[] = {
    {0x01, "illegal function"},
    {0x02, "illegal data address"},
    {0x03, "illegal data value"},
    {0x04, "server device failure"},
    {0x05, "acknowledge"},
    {0x06, "server device busy"},
    {0x08, "memory parity error"},
    {0x0A, "gateway path unavailable"},
    {0x0B, "gateway target device failed to respond"},
};

std::string_view ExceptionName(uint8_t code) {
  for (const auto& e : kExceptionNames) {
    if (e.code == code) return e.name;
  }
  return "unknown exception";
}

// "function 6 (write single register)", "function 43/14 (read device identification)".
std::string DescribeFunction(uint8_t fc, int mei) {
  std::string s = "function " + std::to_string(fc);
  if (fc == 43 && mei >= 0) {
    s += "/" + std::to_string(mei);
    if (mei == 14) return s + " (read device identification)";
    if (mei == 13) return s + " (CANopen general reference)";
    return s + " (encapsulated interface transport)";
  }
  std::string_view name = FunctionName(fc);
  if (!name.empty()) s += " (" + std::string(name) + ")";
  return s;
}

bool IsReadFunction(uint8_t fc, uint8_t mei) {
  return (fc >= 1 && fc <= 4) || (fc == 43 && mei == kMeiDeviceId);
}
bool IsWriteFunction(uint8_t fc) {
  return fc == 5 || fc == 6 || fc == 15 || fc == 16 || fc == 22 || fc == 23;
}

std::string MbapProblem(std::string_view buf) {
  uint16_t protocol = U16(buf, 2);
  uint16_t length = U16(buf, 4);
  if (protocol != 0) {
    return "malformed Modbus/TCP header: protocol id " + std::to_string(protocol) + " (must be 0)";
  }
  if (length < 2 || length > 254) {
    return "malformed Modbus/TCP header: length " + std::to_string(length) + " (must be 2..254)";
  }
  return {};
}

class ModbusGuard final : public StreamFilter {
 public:
  explicit ModbusGuard(ModbusPolicy p) : policy_(p) {}

  Result OnClientData(std::string_view data) override {
    Result r;
    if (closed_) {
      r.close = true;
      r.close_reason = close_reason_;
      return r;
    }
    buf_.append(data);
    size_t pos = 0;
    while (buf_.size() - pos >= kMbapSize) {
      std::string_view rest = std::string_view(buf_).substr(pos);
      std::string problem = MbapProblem(rest);
      if (!problem.empty()) {
        closed_ = true;
        close_reason_ = std::move(problem);
        r.close = true;
        r.close_reason = close_reason_;
        buf_.clear();
        return r;
      }
      size_t adu = 6 + U16(rest, 4);
      if (rest.size() < adu) break;  // partial frame: wait for more
      uint8_t fc = U8(rest, 7);
      int mei = adu > 8 ? U8(rest, 8) : -1;
      if (ModbusAllowed(policy_, fc, mei < 0 ? 0 : static_cast<uint8_t>(mei))) {
        r.forward.append(rest.substr(0, adu));
      } else {
        Refusal ref;
        ref.transaction = U16(rest, 0);
        ref.unit = U8(rest, 6);
        ref.function = fc;
        ref.reason = DescribeFunction(fc, fc == 43 ? mei : -1) + " " + Needs(fc, mei);
        char reply[9] = {rest[0],
                         rest[1],
                         0,
                         0,
                         0,
                         3,
                         rest[6],
                         static_cast<char>(fc | 0x80),
                         static_cast<char>(kIllegalFunction)};
        r.reply.append(reply, sizeof reply);
        r.refused.push_back(std::move(ref));
      }
      pos += adu;
    }
    buf_.erase(0, pos);
    return r;
  }

 private:
  // Why a refused function was refused, relative to what the grant holds.
  std::string Needs(uint8_t fc, int mei) const {
    uint8_t m = mei < 0 ? 0 : static_cast<uint8_t>(mei);
    if (IsReadFunction(fc, m)) return "needs scope modbus:read";
    if (IsWriteFunction(fc)) return "needs scope modbus:write";
    return "is not allowed by the grant's scopes (only a grant for the whole protocol allows it)";
  }

  ModbusPolicy policy_;
  std::string buf_;  // at most one partial ADU (< 260 bytes) between calls
  bool closed_ = false;
  std::string close_reason_;
};

// --- decoding ---

std::string Hex16(uint16_t v) {
  char b[8];
  std::snprintf(b, sizeof b, "0x%04x", v);
  return b;
}

std::string RegisterList(std::string_view d) {
  std::string s = "[";
  for (size_t i = 0; i + 1 < d.size(); i += 2) {
    if (i) s += ", ";
    s += std::to_string(U16(d, i));
  }
  return s + "]";
}

std::string BitList(std::string_view d, size_t count) {
  std::string s = "[";
  for (size_t i = 0; i < count && i / 8 < d.size(); ++i) {
    if (i) s += ", ";
    s += ((U8(d, i / 8) >> (i % 8)) & 1) ? '1' : '0';
  }
  return s + "]";
}

std::string Quoted(std::string_view v) {
  std::string s = "\"";
  for (char c : v) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      s += '\\';
      s += c;
    } else if (u >= 0x20 && u < 0x7f) {
      s += c;
    } else {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", u);
      s += b;
    }
  }
  return s + "\"";
}

std::string Malformed(std::string_view name, size_t n) {
  return std::string(name) + " (malformed, " + std::to_string(n) + " data bytes)";
}

// FC 43/14 response objects: id, length, value; bounded by the PDU.
std::string DeviceIdObjects(std::string_view d) {
  // d: MEI type, read code, conformity, more follows, next object id, number of objects, objects
  if (d.size() < 6) return Malformed("response read device identification", d.size());
  std::string s = "response read device identification code " + std::to_string(U8(d, 1)) +
                  " conformity " + std::to_string(U8(d, 2));
  if (U8(d, 3) != 0) s += " more follows next object " + std::to_string(U8(d, 4));
  size_t n = U8(d, 5);
  size_t at = 6;
  s += " objects [";
  for (size_t i = 0; i < n; ++i) {
    if (at + 2 > d.size()) return s + "] (truncated)";
    size_t len = U8(d, at + 1);
    if (at + 2 + len > d.size()) return s + "] (truncated)";
    if (i) s += ", ";
    s += std::to_string(U8(d, at)) + ": " + Quoted(d.substr(at + 2, len));
    at += 2 + len;
  }
  s += "]";
  if (at != d.size()) s += " (+" + std::to_string(d.size() - at) + " bytes)";
  return s;
}

std::string DecodeRequest(uint8_t fc, std::string_view d) {
  std::string_view name = FunctionName(fc);
  switch (fc) {
    case 1:
    case 2:
    case 3:
    case 4:
      if (d.size() != 4) return Malformed(name, d.size());
      return std::string(name) + " addr " + std::to_string(U16(d, 0)) + " count " +
             std::to_string(U16(d, 2));
    case 5: {
      if (d.size() != 4) return Malformed(name, d.size());
      uint16_t v = U16(d, 2);
      std::string value = v == 0xFF00 ? "1" : v == 0 ? "0" : Hex16(v) + " (invalid)";
      return std::string(name) + " addr " + std::to_string(U16(d, 0)) + " value " + value;
    }
    case 6:
      if (d.size() != 4) return Malformed(name, d.size());
      return std::string(name) + " addr " + std::to_string(U16(d, 0)) + " value " +
             std::to_string(U16(d, 2));
    case 15:
    case 16: {
      if (d.size() < 5 || d.size() != 5u + U8(d, 4)) return Malformed(name, d.size());
      uint16_t count = U16(d, 2);
      std::string_view values = d.substr(5);
      return std::string(name) + " addr " + std::to_string(U16(d, 0)) + " count " +
             std::to_string(count) + " values " +
             (fc == 15 ? BitList(values, count) : RegisterList(values));
    }
    case 22:
      if (d.size() != 6) return Malformed(name, d.size());
      return std::string(name) + " addr " + std::to_string(U16(d, 0)) + " and " + Hex16(U16(d, 2)) +
             " or " + Hex16(U16(d, 4));
    case 23:
      if (d.size() < 9 || d.size() != 9u + U8(d, 8)) return Malformed(name, d.size());
      return std::string(name) + " read addr " + std::to_string(U16(d, 0)) + " count " +
             std::to_string(U16(d, 2)) + " write addr " + std::to_string(U16(d, 4)) + " count " +
             std::to_string(U16(d, 6)) + " values " + RegisterList(d.substr(9));
    case 43:
      if (!d.empty() && U8(d, 0) == kMeiDeviceId) {
        if (d.size() != 3) return Malformed("read device identification", d.size());
        return "read device identification code " + std::to_string(U8(d, 1)) + " object " +
               std::to_string(U8(d, 2));
      }
      break;
    default:
      break;
  }
  return DescribeFunction(fc, fc == 43 && !d.empty() ? U8(d, 0) : -1) + ", " +
         std::to_string(d.size()) + " bytes";
}

std::string DecodeResponse(uint8_t fc, std::string_view d) {
  if (fc & 0x80) {
    uint8_t orig = fc & 0x7f;
    if (d.size() != 1) return Malformed("exception for " + DescribeFunction(orig, -1), d.size());
    char code[4];
    std::snprintf(code, sizeof code, "%02x", U8(d, 0));
    std::string_view name = FunctionName(orig);
    return "exception " + std::string(code) + " (" + std::string(ExceptionName(U8(d, 0))) +
           ") for " + (name.empty() ? "function " + std::to_string(orig) : std::string(name));
  }
  std::string name = "response " + std::string(FunctionName(fc));
  switch (fc) {
    case 1:
    case 2:
      if (d.empty() || d.size() != 1u + U8(d, 0)) return Malformed(name, d.size());
      return name + " values " + BitList(d.substr(1), 8 * (d.size() - 1));
    case 3:
    case 4:
    case 23:
      if (d.empty() || d.size() != 1u + U8(d, 0) || U8(d, 0) % 2) return Malformed(name, d.size());
      return name + " values " + RegisterList(d.substr(1));
    case 5:
    case 6:
    case 15:
    case 16:
      if (d.size() != 4) return Malformed(name, d.size());
      if (fc == 5 || fc == 6) return DecodeRequest(fc, d).insert(0, "response ");
      return name + " addr " + std::to_string(U16(d, 0)) + " count " + std::to_string(U16(d, 2));
    case 22:
      if (d.size() != 6) return Malformed(name, d.size());
      return "response " + DecodeRequest(fc, d);
    case 43:
      if (!d.empty() && U8(d, 0) == kMeiDeviceId) return DeviceIdObjects(d);
      break;
    default:
      break;
  }
  return "response " + DescribeFunction(fc, fc == 43 && !d.empty() ? U8(d, 0) : -1) + ", " +
         std::to_string(d.size()) + " bytes";
}

}  // namespace

ModbusPolicy ModbusPolicyFromScopes(const std::vector<std::string>& scopes) {
  ModbusPolicy p;
  if (scopes.empty()) p.all = true;
  for (const std::string& s : scopes) {
    if (s == "modbus:read") p.read = true;
    if (s == "modbus:write") p.read = p.write = true;
    if (s == "modbus:*") p.all = true;  // the policy language's "whole protocol" scope
  }
  return p;
}

bool ModbusAllowed(const ModbusPolicy& p, uint8_t function, uint8_t mei_type) {
  if (p.all) return true;
  if ((p.read || p.write) && IsReadFunction(function, mei_type)) return true;
  return p.write && IsWriteFunction(function);
}

std::unique_ptr<StreamFilter> MakeModbusGuard(ModbusPolicy p) {
  return std::make_unique<ModbusGuard>(p);
}

ModbusDecoded DecodeModbus(std::string_view buf, bool from_target) {
  ModbusDecoded out;
  while (buf.size() - out.consumed >= kMbapSize) {
    std::string_view rest = buf.substr(out.consumed);
    if (!MbapProblem(rest).empty()) {
      out.malformed = true;
      break;
    }
    size_t adu = 6 + U16(rest, 4);
    static_assert(kMaxAdu == 260);
    if (rest.size() < adu) break;
    uint8_t fc = U8(rest, 7);
    std::string_view data = rest.substr(8, adu - 8);
    std::string line =
        "tx " + std::to_string(U16(rest, 0)) + " unit " + std::to_string(U8(rest, 6)) + " ";
    line += from_target ? DecodeResponse(fc, data) : DecodeRequest(fc, data);
    out.lines.push_back(std::move(line));
    out.consumed += adu;
  }
  return out;
}

}  // namespace torwart::tunnel
