#include "torwart/tunnel/modbus_guard.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>

namespace torwart::tunnel {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Adu(uint16_t tx, uint8_t unit, std::string_view pdu, uint16_t protocol = 0) {
  std::string s;
  s.push_back(static_cast<char>(tx >> 8));
  s.push_back(static_cast<char>(tx));
  s.push_back(static_cast<char>(protocol >> 8));
  s.push_back(static_cast<char>(protocol));
  uint16_t len = static_cast<uint16_t>(pdu.size() + 1);
  s.push_back(static_cast<char>(len >> 8));
  s.push_back(static_cast<char>(len));
  s.push_back(static_cast<char>(unit));
  s.append(pdu);
  return s;
}
std::string Bytes(std::initializer_list<int> b) {
  std::string s;
  for (int v : b) s.push_back(static_cast<char>(v));
  return s;
}
std::string Exception(uint16_t tx, uint8_t unit, uint8_t fc) {
  return Adu(tx, unit, Bytes({fc | 0x80, 0x01}));
}

const ModbusPolicy kNone{};
const ModbusPolicy kRead{.read = true};
const ModbusPolicy kWrite{.read = true, .write = true};
const ModbusPolicy kAll{.all = true};

// The specification, written out independently of the implementation.
bool Expected(const ModbusPolicy& p, int fc, int mei) {
  if (p.all) return true;
  bool read = fc == 1 || fc == 2 || fc == 3 || fc == 4 || (fc == 43 && mei == 14);
  bool write = fc == 5 || fc == 6 || fc == 15 || fc == 16 || fc == 22 || fc == 23;
  return (read && (p.read || p.write)) || (write && p.write);
}

TEST(ModbusPolicy, FromScopes) {
  ModbusPolicy p = ModbusPolicyFromScopes({});
  EXPECT_TRUE(p.all);
  p = ModbusPolicyFromScopes({"modbus:read"});
  EXPECT_TRUE(p.read);
  EXPECT_FALSE(p.write);
  EXPECT_FALSE(p.all);
  p = ModbusPolicyFromScopes({"modbus:write"});
  EXPECT_TRUE(p.read && p.write && !p.all);
  p = ModbusPolicyFromScopes({"modbus:*"});
  EXPECT_TRUE(p.all);
  p = ModbusPolicyFromScopes({"ssh:*", "modbus:delete"});
  EXPECT_FALSE(p.read || p.write || p.all);
}

TEST(ModbusGuard, EveryFunctionCodeUnderEveryPolicy) {
  struct Case {
    const char* name;
    ModbusPolicy p;
  } cases[] = {{"none", kNone}, {"read", kRead}, {"write", kWrite}, {"all", kAll}};
  for (const Case& c : cases) {
    for (int fc = 0; fc <= 255; ++fc) {
      for (int mei : {-1, 13, 14}) {
        if (mei >= 0 && fc != 43) continue;
        SCOPED_TRACE(std::string(c.name) + " fc " + std::to_string(fc) + " mei " +
                     std::to_string(mei));
        std::string pdu = Bytes({fc});
        if (mei >= 0)
          pdu += Bytes({mei, 1, 0});
        else
          pdu += Bytes({0, 10, 0, 2});
        std::string req = Adu(0x1234, 7, pdu);
        auto guard = MakeModbusGuard(c.p);
        // A read afterwards must pass whenever reads are allowed: the connection stays open.
        std::string read = Adu(0x1235, 7, Bytes({3, 0, 0, 0, 4}));
        StreamFilter::Result r = guard->OnClientData(req + read);
        EXPECT_FALSE(r.close);
        bool allowed = Expected(c.p, fc, mei);
        EXPECT_EQ(ModbusAllowed(c.p, static_cast<uint8_t>(fc), mei < 0 ? 0 : mei), allowed);
        std::string want_forward = (allowed ? req : "") + (Expected(c.p, 3, -1) ? read : "");
        std::string want_reply = allowed ? "" : Exception(0x1234, 7, static_cast<uint8_t>(fc));
        if (!Expected(c.p, 3, -1)) want_reply += Exception(0x1235, 7, 3);
        EXPECT_EQ(r.forward, want_forward);
        EXPECT_EQ(r.reply, want_reply);
        if (allowed) {
          EXPECT_EQ(r.refused.size(), Expected(c.p, 3, -1) ? 0u : 1u);
        } else {
          ASSERT_FALSE(r.refused.empty());
          EXPECT_EQ(r.refused[0].transaction, 0x1234);
          EXPECT_EQ(r.refused[0].unit, 7);
          EXPECT_EQ(r.refused[0].function, fc);
          EXPECT_THAT(r.refused[0].reason, HasSubstr("function " + std::to_string(fc)));
        }
      }
    }
  }
}

TEST(ModbusGuard, WriteUnderReadScopeIsRefusedWithClearReason) {
  auto guard = MakeModbusGuard(kRead);
  StreamFilter::Result r = guard->OnClientData(Adu(9, 1, Bytes({6, 0, 1, 0, 42})));
  EXPECT_EQ(r.forward, "");
  EXPECT_EQ(r.reply, Bytes({0, 9, 0, 0, 0, 3, 1, 0x86, 0x01}));
  ASSERT_EQ(r.refused.size(), 1u);
  EXPECT_EQ(r.refused[0].reason, "function 6 (write single register) needs scope modbus:write");
  r = guard->OnClientData(Adu(10, 1, Bytes({8, 0, 0, 0, 0})));
  EXPECT_THAT(r.refused.at(0).reason, HasSubstr("function 8 (diagnostics) is not allowed"));
  r = guard->OnClientData(Adu(11, 1, Bytes({43, 13, 0, 0})));
  EXPECT_THAT(r.refused.at(0).reason, HasSubstr("function 43/13"));
  auto none = MakeModbusGuard(kNone);
  r = none->OnClientData(Adu(12, 1, Bytes({3, 0, 0, 0, 1})));
  EXPECT_EQ(r.refused.at(0).reason, "function 3 (read holding registers) needs scope modbus:read");
  // 43 without an MEI type byte is not "read device identification".
  r = guard->OnClientData(Adu(13, 1, Bytes({43})));
  EXPECT_EQ(r.forward, "");
  EXPECT_EQ(r.refused.size(), 1u);
}

TEST(ModbusGuard, SeveralAdusInOneCallKeepOrder) {
  auto guard = MakeModbusGuard(kRead);
  std::string a = Adu(1, 1, Bytes({3, 0, 0, 0, 4}));
  std::string b = Adu(2, 1, Bytes({16, 0, 0, 0, 1, 2, 0, 5}));
  std::string c = Adu(3, 2, Bytes({4, 0, 10, 0, 1}));
  std::string d = Adu(4, 2, Bytes({5, 0, 0, 0xff, 0}));
  StreamFilter::Result r = guard->OnClientData(a + b + c + d);
  EXPECT_EQ(r.forward, a + c);
  EXPECT_EQ(r.reply, Exception(2, 1, 16) + Exception(4, 2, 5));
  ASSERT_EQ(r.refused.size(), 2u);
  EXPECT_EQ(r.refused[0].transaction, 2);
  EXPECT_EQ(r.refused[1].transaction, 4);
  EXPECT_EQ(r.refused[1].unit, 2);
}

TEST(ModbusGuard, PartialFramesAtEverySplitPoint) {
  std::string a = Adu(1, 1, Bytes({3, 0, 0, 0, 4}));
  std::string b = Adu(2, 1, Bytes({6, 0, 1, 0, 7}));
  std::string c = Adu(3, 1, std::string(1, '\x10') + std::string(250, '\x01'));  // length 252
  std::string all = a + b + c;
  for (size_t i = 0; i <= all.size(); ++i) {
    for (size_t j = i; j <= all.size(); j += 7) {
      auto guard = MakeModbusGuard(kRead);
      std::string fwd, reply;
      size_t refused = 0;
      for (auto part : {std::string_view(all).substr(0, i), std::string_view(all).substr(i, j - i),
                        std::string_view(all).substr(j)}) {
        StreamFilter::Result r = guard->OnClientData(part);
        ASSERT_FALSE(r.close);
        fwd += r.forward;
        reply += r.reply;
        refused += r.refused.size();
      }
      ASSERT_EQ(fwd, a) << i << " " << j;
      ASSERT_EQ(reply, Exception(2, 1, 6) + Exception(3, 1, 16));
      ASSERT_EQ(refused, 2u);
    }
  }
  // Byte by byte: nothing is forwarded before the frame is whole.
  auto guard = MakeModbusGuard(kAll);
  for (size_t i = 0; i < a.size(); ++i) {
    StreamFilter::Result r = guard->OnClientData(a.substr(i, 1));
    EXPECT_EQ(r.forward, i + 1 == a.size() ? a : "");
  }
}

TEST(ModbusGuard, MalformedHeaderCloses) {
  struct Case {
    std::string bytes;
    const char* reason;
  } cases[] = {
      {Adu(1, 1, Bytes({3, 0, 0, 0, 1}), 1), "protocol id 1"},
      {Bytes({0, 1, 0, 0, 0, 0, 1}), "length 0"},
      {Bytes({0, 1, 0, 0, 0, 1, 1}), "length 1"},
      {Bytes({0, 1, 0, 0, 0, 255, 1}), "length 255"},
      {Bytes({0, 1, 0, 0, 0xff, 0xff, 1}), "length 65535"},
  };
  for (const Case& c : cases) {
    for (ModbusPolicy p : {kNone, kRead, kAll}) {
      auto guard = MakeModbusGuard(p);
      std::string good = Adu(7, 1, Bytes({3, 0, 0, 0, 1}));
      StreamFilter::Result r = guard->OnClientData(good + c.bytes);
      EXPECT_TRUE(r.close);
      EXPECT_THAT(r.close_reason, HasSubstr(c.reason));
      EXPECT_THAT(r.close_reason, HasSubstr("malformed Modbus/TCP header"));
      EXPECT_EQ(r.forward, p.read || p.all ? good : "");  // whole frames before it still go
      r = guard->OnClientData(good);                      // after a close nothing passes
      EXPECT_TRUE(r.close);
      EXPECT_EQ(r.forward, "");
    }
  }
  // The boundaries are valid: length 2 (function code only) and 254.
  auto guard = MakeModbusGuard(kAll);
  std::string two = Adu(1, 1, Bytes({3}));
  std::string max = Adu(2, 1, std::string(253, '\x03'));
  StreamFilter::Result r = guard->OnClientData(two + max);
  EXPECT_FALSE(r.close);
  EXPECT_EQ(r.forward, two + max);
}

// Splits `frames` into ADUs the way a target would see them; fails the test on a bad one.
std::vector<std::string> SplitAdus(std::string_view s) {
  std::vector<std::string> out;
  while (!s.empty()) {
    EXPECT_GE(s.size(), 8u);
    if (s.size() < 8) break;
    size_t len = (static_cast<uint8_t>(s[4]) << 8) | static_cast<uint8_t>(s[5]);
    EXPECT_TRUE(s[2] == 0 && s[3] == 0 && len >= 2 && len <= 254);
    EXPECT_GE(s.size(), 6 + len);
    out.emplace_back(s.substr(0, 6 + len));
    s.remove_prefix(std::min(s.size(), 6 + len));
  }
  return out;
}

TEST(ModbusGuard, RandomInputChunkingInvariantAndNeverForwardsDisallowed) {
  std::mt19937 rng(42);
  for (int round = 0; round < 3000; ++round) {
    // Mostly well-formed streams with random function codes, sometimes raw garbage.
    std::string stream;
    int n = rng() % 8;
    for (int i = 0; i < n; ++i) {
      if (rng() % 20 == 0) {
        for (int k = rng() % 12; k > 0; --k) stream.push_back(static_cast<char>(rng()));
      } else {
        std::string pdu(1 + rng() % 12, '\0');
        for (char& ch : pdu) ch = static_cast<char>(rng());
        if (rng() % 2) pdu[0] = static_cast<char>(rng() % 25);
        if (rng() % 4 == 0) pdu = Bytes({43, rng() % 2 ? 14 : 13, 1, 0});
        stream += Adu(static_cast<uint16_t>(rng()), static_cast<uint8_t>(rng()), pdu);
      }
    }
    ModbusPolicy policies[] = {kNone, kRead, kWrite, kAll};
    ModbusPolicy p = policies[rng() % 4];
    auto whole = MakeModbusGuard(p);
    StreamFilter::Result want = whole->OnClientData(stream);
    auto pieces = MakeModbusGuard(p);
    StreamFilter::Result got;
    for (size_t at = 0; at < stream.size() && !got.close;) {
      size_t len = std::min<size_t>(stream.size() - at, rng() % 20);
      StreamFilter::Result r = pieces->OnClientData(std::string_view(stream).substr(at, len));
      got.forward += r.forward;
      got.reply += r.reply;
      got.refused.insert(got.refused.end(), r.refused.begin(), r.refused.end());
      got.close = r.close;
      got.close_reason = r.close_reason;
      at += len;
    }
    ASSERT_EQ(got.forward, want.forward);
    ASSERT_EQ(got.reply, want.reply);
    ASSERT_EQ(got.refused.size(), want.refused.size());
    ASSERT_EQ(got.close, want.close);
    ASSERT_EQ(got.close_reason, want.close_reason);
    for (const std::string& adu : SplitAdus(want.forward)) {
      uint8_t fc = static_cast<uint8_t>(adu[7]);
      uint8_t mei = adu.size() > 8 ? static_cast<uint8_t>(adu[8]) : 0;
      ASSERT_TRUE(Expected(p, fc, adu.size() > 8 ? mei : -1)) << int(fc);
    }
    for (const std::string& adu : SplitAdus(want.reply)) {
      ASSERT_EQ(adu.size(), 9u);
      ASSERT_EQ(static_cast<uint8_t>(adu[7]) & 0x80, 0x80);
      ASSERT_EQ(adu[8], 1);
    }
  }
}

// --- decoding ---

std::vector<std::string> Lines(const std::string& s, bool from_target) {
  ModbusDecoded d = DecodeModbus(s, from_target);
  EXPECT_FALSE(d.malformed);
  EXPECT_EQ(d.consumed, s.size());
  return d.lines;
}

TEST(DecodeModbus, Requests) {
  EXPECT_THAT(Lines(Adu(7, 1, Bytes({3, 0, 0, 0, 4})), false),
              ElementsAre("tx 7 unit 1 read holding registers addr 0 count 4"));
  EXPECT_THAT(Lines(Adu(1, 2, Bytes({1, 0, 19, 0, 37})) + Adu(2, 2, Bytes({2, 0, 196, 0, 22})) +
                        Adu(3, 2, Bytes({4, 0, 8, 0, 1})),
                    false),
              ElementsAre("tx 1 unit 2 read coils addr 19 count 37",
                          "tx 2 unit 2 read discrete inputs addr 196 count 22",
                          "tx 3 unit 2 read input registers addr 8 count 1"));
  EXPECT_THAT(Lines(Adu(4, 1, Bytes({5, 0, 172, 0xff, 0})) + Adu(5, 1, Bytes({5, 0, 1, 0, 0})) +
                        Adu(6, 1, Bytes({5, 0, 1, 0x12, 0x34})),
                    false),
              ElementsAre("tx 4 unit 1 write single coil addr 172 value 1",
                          "tx 5 unit 1 write single coil addr 1 value 0",
                          "tx 6 unit 1 write single coil addr 1 value 0x1234 (invalid)"));
  EXPECT_THAT(Lines(Adu(9, 1, Bytes({6, 0, 1, 0xff, 0xff})), false),
              ElementsAre("tx 9 unit 1 write single register addr 1 value 65535"));
  EXPECT_THAT(Lines(Adu(10, 1, Bytes({15, 0, 19, 0, 10, 2, 0xcd, 0x01})), false),
              ElementsAre("tx 10 unit 1 write multiple coils addr 19 count 10 values "
                          "[1, 0, 1, 1, 0, 0, 1, 1, 1, 0]"));
  EXPECT_THAT(Lines(Adu(11, 1, Bytes({16, 0, 1, 0, 2, 4, 0, 10, 0x80, 0x00})), false),
              ElementsAre("tx 11 unit 1 write multiple registers addr 1 count 2 values "
                          "[10, 32768]"));
  EXPECT_THAT(Lines(Adu(12, 1, Bytes({22, 0, 4, 0, 0xf2, 0, 0x25})), false),
              ElementsAre("tx 12 unit 1 mask write register addr 4 and 0x00f2 or 0x0025"));
  EXPECT_THAT(Lines(Adu(13, 1, Bytes({23, 0, 3, 0, 6, 0, 14, 0, 3, 6, 0, 1, 0, 2, 0, 3})), false),
              ElementsAre("tx 13 unit 1 read/write multiple registers read addr 3 count 6 "
                          "write addr 14 count 3 values [1, 2, 3]"));
  EXPECT_THAT(Lines(Adu(14, 1, Bytes({43, 14, 1, 0})), false),
              ElementsAre("tx 14 unit 1 read device identification code 1 object 0"));
  EXPECT_THAT(Lines(Adu(15, 1, Bytes({8, 0, 0, 0xa5, 0x37})) + Adu(16, 1, Bytes({99, 1, 2})) +
                        Adu(17, 1, Bytes({43, 13, 1})),
                    false),
              ElementsAre("tx 15 unit 1 function 8 (diagnostics), 4 bytes",
                          "tx 16 unit 1 function 99, 2 bytes",
                          "tx 17 unit 1 function 43/13 (CANopen general reference), 2 bytes"));
  EXPECT_THAT(Lines(Adu(18, 1, Bytes({3, 0, 0})), false),
              ElementsAre("tx 18 unit 1 read holding registers (malformed, 2 data bytes)"));
}

TEST(DecodeModbus, Responses) {
  EXPECT_THAT(Lines(Adu(7, 1, Bytes({3, 8, 0, 1, 0, 2, 0, 3, 0xff, 0xfe})), true),
              ElementsAre("tx 7 unit 1 response read holding registers values [1, 2, 3, 65534]"));
  EXPECT_THAT(Lines(Adu(8, 1, Bytes({1, 1, 0x05})), true),
              ElementsAre("tx 8 unit 1 response read coils values [1, 0, 1, 0, 0, 0, 0, 0]"));
  EXPECT_THAT(Lines(Adu(9, 1, Bytes({0x86, 0x01})), true),
              ElementsAre("tx 9 unit 1 exception 01 (illegal function) for write single register"));
  EXPECT_THAT(Lines(Adu(10, 1, Bytes({0x83, 0x02})) + Adu(11, 1, Bytes({0xc1, 0x0b})), true),
              ElementsAre("tx 10 unit 1 exception 02 (illegal data address) for read holding "
                          "registers",
                          "tx 11 unit 1 exception 0b (gateway target device failed to respond) "
                          "for function 65"));
  EXPECT_THAT(Lines(Adu(12, 1, Bytes({6, 0, 1, 0, 3})) + Adu(13, 1, Bytes({16, 0, 1, 0, 2})), true),
              ElementsAre("tx 12 unit 1 response write single register addr 1 value 3",
                          "tx 13 unit 1 response write multiple registers addr 1 count 2"));
  std::string devid = Bytes({43, 14, 1, 1, 0, 0, 2, 0, 3}) + "ACM" + Bytes({1, 2}) + "X\"";
  EXPECT_THAT(Lines(Adu(14, 1, devid), true),
              ElementsAre("tx 14 unit 1 response read device identification code 1 conformity 1 "
                          "objects [0: \"ACM\", 1: \"X\\\"\"]"));
  EXPECT_THAT(Lines(Adu(15, 1, Bytes({17, 2, 1, 0xff})), true),
              ElementsAre("tx 15 unit 1 response function 17 (report server id), 3 bytes"));
}

TEST(DecodeModbus, PartialAndMalformed) {
  std::string a = Adu(1, 1, Bytes({3, 0, 0, 0, 4}));
  ModbusDecoded d = DecodeModbus(a + a.substr(0, 9), false);
  EXPECT_EQ(d.lines.size(), 1u);
  EXPECT_EQ(d.consumed, a.size());
  EXPECT_FALSE(d.malformed);
  d = DecodeModbus(a + Adu(2, 1, Bytes({3}), 5), false);
  EXPECT_EQ(d.lines.size(), 1u);
  EXPECT_EQ(d.consumed, a.size());
  EXPECT_TRUE(d.malformed);
}

TEST(DecodeModbus, RandomBytesNeverOverrun) {
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    std::string s(rng() % 300, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    if (s.size() > 6 && rng() % 2) {
      s[2] = s[3] = 0;
      s[4] = 0;
      s[5] = static_cast<char>(s.size() - 6 > 250 ? 250 : s.size() - 6);
    }
    for (bool from : {false, true}) {
      ModbusDecoded d = DecodeModbus(s, from);
      ASSERT_LE(d.consumed, s.size());
    }
  }
}

}  // namespace
}  // namespace torwart::tunnel
