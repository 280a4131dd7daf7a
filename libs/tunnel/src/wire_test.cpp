#include "torwart/tunnel/wire.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace torwart::tunnel {
namespace {

std::string Chomp(std::string s) {
  EXPECT_FALSE(s.empty());
  EXPECT_EQ(s.back(), '\n');
  s.pop_back();
  return s;
}

TEST(WireTest, StreamIds) {
  EXPECT_TRUE(IsStreamId("st-0123456789abcdef"));
  EXPECT_FALSE(IsStreamId("st-0123456789ABCDEF"));  // lowercase only
  EXPECT_FALSE(IsStreamId("st-0123456789abcde"));   // 15 hex
  EXPECT_FALSE(IsStreamId("st-0123456789abcdef0"));
  EXPECT_FALSE(IsStreamId("ar-0123456789abcdef"));
  EXPECT_FALSE(IsStreamId("st-0123456789abcdeg"));
  EXPECT_FALSE(IsStreamId(""));
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    std::string id = NewStreamId();
    EXPECT_TRUE(IsStreamId(id)) << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 100u);
}

TEST(WireTest, HelloRoundTrip) {
  auto c = ParseHello(Chomp(FormatConnect()));
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->kind, Hello::Kind::kConnect);
  EXPECT_TRUE(c->stream_id.empty());
  EXPECT_EQ(FormatConnect(), "TORWART/1 CONNECT\n");

  auto a = ParseHello(Chomp(FormatAccept("st-00000000000000ff")));
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_EQ(a->kind, Hello::Kind::kAccept);
  EXPECT_EQ(a->stream_id, "st-00000000000000ff");
  EXPECT_EQ(FormatAccept("st-00000000000000ff"), "TORWART/1 ACCEPT st-00000000000000ff\n");
}

TEST(WireTest, HelloRejectsAnythingElse) {
  for (const char* bad :
       {"", "TORWART/1", "TORWART/1 ", "TORWART/1 connect", "TORWART/2 CONNECT",
        "TORWART/1 CONNECT ", " TORWART/1 CONNECT", "TORWART/1 CONNECT\r", "TORWART/1 ACCEPT",
        "TORWART/1 ACCEPT ", "TORWART/1 ACCEPT st-123", "TORWART/1 ACCEPT st-0123456789abcdef ",
        "TORWART/1 ACCEPT  st-0123456789abcdef", "TORWART/1 ACCEPT ST-0123456789ABCDEF",
        "GET / HTTP/1.1", "TORWART/1 LISTEN"}) {
    auto h = ParseHello(bad);
    EXPECT_FALSE(h) << "accepted '" << bad << "'";
    if (!h) {
      EXPECT_TRUE(h.error().Is(Errc::kParse));
    }
  }
  std::string with_nul("TORWART/1 CONNECT\0", 18);
  EXPECT_FALSE(ParseHello(with_nul));
  EXPECT_FALSE(ParseHello(std::string(kMaxLine, 'A')));
}

TEST(WireTest, ReplyOk) {
  std::string line = FormatOk("st-0123456789abcdef", "0b7c7a52-2c1e-4a83-9b5e-6f3f0e7f1d20");
  EXPECT_EQ(line, "OK st-0123456789abcdef 0b7c7a52-2c1e-4a83-9b5e-6f3f0e7f1d20\n");
  auto r = ParseReply(Chomp(line));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(r->ok);
  EXPECT_EQ(r->stream_id, "st-0123456789abcdef");
  EXPECT_EQ(r->device_id, "0b7c7a52-2c1e-4a83-9b5e-6f3f0e7f1d20");
}

TEST(WireTest, ReplyErr) {
  auto r = ParseReply(Chomp(FormatErr("forbidden", "grant ar-000000000001 is not active")));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_FALSE(r->ok);
  EXPECT_EQ(r->code, "forbidden");
  EXPECT_EQ(r->message, "grant ar-000000000001 is not active");

  auto bare = ParseReply("ERR busy");
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->code, "busy");
  EXPECT_EQ(bare->message, "");
}

TEST(WireTest, FormatErrSanitizesAndTruncates) {
  std::string line = FormatErr("bad code", std::string("line\nbreak\r\x01\x7f\xc3\xa9", 15));
  EXPECT_EQ(line, "ERR bad_code line?break?????\n");
  auto r = ParseReply(Chomp(line));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, "bad_code");

  std::string long_line = FormatErr("error", std::string(5000, 'x'));
  EXPECT_EQ(long_line.size(), kMaxLine);
  EXPECT_TRUE(ParseReply(Chomp(long_line)));

  EXPECT_EQ(FormatErr("", ""), "ERR error\n");
}

TEST(WireTest, ReplyRejectsAnythingElse) {
  for (const char* bad :
       {"", "OK", "OK ", "OK st-0123456789abcdef", "OK st-0123456789abcdef ", "OK st-01 dev",
        "OK st-0123456789abcdef dev ice", "ERR", "ERR ", "ERR  text", "ok st-0123456789abcdef dev",
        "HELLO", "OKst-x dev", "OK st-0123456789abcdef dev\t"}) {
    EXPECT_FALSE(ParseReply(bad)) << "accepted '" << bad << "'";
  }
  EXPECT_FALSE(ParseReply(std::string("ERR x \xff", 7)));
  EXPECT_FALSE(ParseReply("ERR x " + std::string(kMaxLine, 'y')));
}

}  // namespace
}  // namespace torwart::tunnel
