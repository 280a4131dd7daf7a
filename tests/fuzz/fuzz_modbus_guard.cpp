// Fuzzes the Modbus/TCP guard and decoder on technician-controlled bytes. Input: byte 0 picks
// the policy (none, read, write, all), byte 1 the chunk size the stream is fed in, the rest is the
// stream. Besides "never crash", it checks the guard's promise: everything forwarded is a
// well-formed ADU of an allowed function, everything answered is an exception 01, and a closed
// guard forwards nothing more.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "torwart/tunnel/modbus_guard.hpp"

using namespace torwart::tunnel;

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

uint16_t U16(std::string_view s, size_t at) {
  return static_cast<uint16_t>((static_cast<uint8_t>(s[at]) << 8) |
                               static_cast<uint8_t>(s[at + 1]));
}

// Calls f(adu) for each ADU; traps on bad framing.
template <class F>
void EachAdu(std::string_view s, F f) {
  while (!s.empty()) {
    Check(s.size() >= 8 && U16(s, 2) == 0);
    size_t len = U16(s, 4);
    Check(len >= 2 && len <= 254 && s.size() >= 6 + len);
    f(s.substr(0, 6 + len));
    s.remove_prefix(6 + len);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const ModbusPolicy policies[] = {
      {}, {.read = true}, {.read = true, .write = true}, {.all = true}};
  const ModbusPolicy policy = policies[data[0] % 4];
  const size_t step = 1 + data[1] % 64;
  std::string_view stream(reinterpret_cast<const char*>(data + 2), size - 2);

  auto guard = MakeModbusGuard(policy);
  bool closed = false;
  for (size_t at = 0; at < stream.size(); at += step) {
    StreamFilter::Result r = guard->OnClientData(stream.substr(at, step));
    if (closed) Check(r.close && r.forward.empty() && r.reply.empty());
    closed = closed || r.close;
    Check(!r.close || !r.close_reason.empty());
    EachAdu(r.forward, [&](std::string_view adu) {
      uint8_t fc = static_cast<uint8_t>(adu[7]);
      uint8_t mei = adu.size() > 8 ? static_cast<uint8_t>(adu[8]) : 0;
      Check(ModbusAllowed(policy, fc, mei));
    });
    size_t replies = 0;
    EachAdu(r.reply, [&](std::string_view adu) {
      Check(adu.size() == 9 && (static_cast<uint8_t>(adu[7]) & 0x80) && adu[8] == 1);
      ++replies;
    });
    Check(replies == r.refused.size());
    for (const Refusal& f : r.refused) Check(!f.reason.empty());
  }

  for (bool from_target : {false, true}) {
    ModbusDecoded d = DecodeModbus(stream, from_target);
    Check(d.consumed <= stream.size());
  }
  return 0;
}
